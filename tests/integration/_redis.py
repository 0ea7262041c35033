"""A real Redis server for the task-queue tests: ``redis-server`` from PATH on 127.0.0.1.

Each server gets a free port, a directory of its own and no persistence
(``--save "" --appendonly no``); it is stopped when the block ends.  Without
``redis-server`` the tests that need it fail, saying how to install it: a
queue test that silently did not run would be worse than a red one.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL_HINT = (
    "redis-server is not on PATH: the task-queue tests run against a real Redis. "
    "Install it (Debian/Ubuntu: `apt-get install redis-server`; macOS: "
    "`brew install redis`), or run `.ci/run`, or `make test` as root, which install it."
)


def redis_server_path() -> str:
    """The ``redis-server`` to run; fails the calling test when there is none."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Run a fresh ``redis-server`` for the block; yield its ``redis://`` URL."""
    executable = redis_server_path()
    with tempfile.TemporaryDirectory(prefix="ctxlog-redis-") as directory:
        for _attempt in range(3):  # another process may take the free port first
            port = _free_port()
            log = Path(directory) / f"redis-{port}.log"
            process = subprocess.Popen(
                [
                    executable,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    directory,
                    "--logfile",
                    str(log),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while process.poll() is None and not _answers(port):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            if process.poll() is None and _answers(port):
                break
            process.kill()
            process.wait(5)
        else:
            text = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"redis-server did not start on 127.0.0.1:\n{text}", pytrace=False)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
