"""The real Redis the task-queue tests share: started, answering, and stopped."""

from __future__ import annotations

import socket

import pytest

from tests.integration._redis import INSTALL_HINT, redis_server, redis_server_path


def _ping(url: str) -> bytes:
    host, port = url.removeprefix("redis://").split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64)


def test_the_fixture_serves_a_real_redis_on_loopback(redis_url: str) -> None:
    assert redis_url.startswith("redis://127.0.0.1:")
    assert _ping(redis_url) == b"+PONG\r\n"


def test_the_server_is_stopped_after_the_block() -> None:
    with redis_server() as url:
        assert _ping(url) == b"+PONG\r\n"
    with pytest.raises(ConnectionRefusedError):
        _ping(url)


def test_without_redis_server_the_tests_fail_saying_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.fail.Exception) as failed:
        redis_server_path()
    assert str(failed.value) == INSTALL_HINT
    assert "apt-get install redis-server" in INSTALL_HINT
