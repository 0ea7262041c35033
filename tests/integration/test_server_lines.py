"""A real uvicorn, started as a user starts it with the shipped JSON config
(``python -m ctxlog config logging-json.json > log.json``, ``--log-config``):
its own access lines and its "Exception in ASGI application" traceback carry
the request id."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ctxlog.asgi import RequestContextMiddleware


async def ok(request):
    return PlainTextResponse("ok")


async def boom(request):
    raise RuntimeError("boom")


app = RequestContextMiddleware(Starlette(routes=[Route("/", ok), Route("/boom", boom)]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("the server did not start")


def test_uvicorn_lines_with_the_shipped_config(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    config = subprocess.run(
        [sys.executable, "-m", "ctxlog", "config", "logging-json.json"],
        capture_output=True,
        check=True,
        cwd=tmp_path,
    )
    (tmp_path / "log.json").write_bytes(config.stdout)
    port = free_port()
    stderr = tmp_path / "stderr.jsonl"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-config",
                "log.json",
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_until_up(port, proc)
            base = f"http://127.0.0.1:{port}"
            assert httpx.get(base, headers={"X-Request-ID": "r-ok"}).status_code == 200
            failed = httpx.get(f"{base}/boom", headers={"X-Request-ID": "r-boom"})
            assert failed.status_code == 500
            assert failed.headers["x-request-id"] == "r-boom"
            generated = httpx.get(base).headers["x-request-id"]
        finally:
            proc.terminate()
            proc.wait(10)
    lines: list[dict[str, Any]] = [json.loads(line) for line in stderr.read_text().splitlines()]
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert [line["request_id"] for line in access] == ["r-ok", "r-boom", generated]
    assert '"GET /boom HTTP/1.1" 500' in access[1]["message"]
    (traceback,) = [line for line in lines if "Exception in ASGI application" in line["message"]]
    assert traceback["request_id"] == "r-boom"
    assert "RuntimeError: boom" in traceback["exception"]
    # Start-up and shutdown lines belong to no request: the filter's default.
    assert all(
        line["request_id"] == "-"
        for line in lines
        if line["logger"] == "uvicorn.error" and "ASGI" not in line["message"]
    )
