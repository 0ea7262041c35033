"""Real servers started as the docs start them with the shipped JSON config —
uvicorn with ``--log-config`` on ``python -m ctxlog config logging-json.json``,
gunicorn with uvicorn workers and ``logconfig_dict`` — write their own access
lines and their "Exception in ASGI application" traceback with the request id."""

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


#: The gunicorn recipe of the docs: uvicorn workers, logconfig_dict.
GUNICORN_CONF = """
import ctxlog

worker_class = "uvicorn_worker.UvicornWorker"
accesslog = "-"
logconfig_dict = ctxlog.load_config("logging-json.json")
# gunicorn lays this over its own defaults, whose loggers name handlers of its
# own; the uvicorn worker hands these loggers' handlers to uvicorn's loggers.
logconfig_dict["loggers"] = {
    name: {"level": "INFO", "handlers": ["stderr"], "propagate": False}
    for name in ("gunicorn.error", "gunicorn.access")
}
"""


def print_config(folder: Path) -> None:
    """``python -m ctxlog config logging-json.json > log.json``, as the docs say."""
    config = subprocess.run(
        [sys.executable, "-m", "ctxlog", "config", "logging-json.json"],
        capture_output=True,
        check=True,
        cwd=folder,
    )
    (folder / "log.json").write_bytes(config.stdout)


def server_command(server: str, tmp_path: Path, port: int) -> list[str]:
    if server == "uvicorn":
        print_config(tmp_path)
        return [
            *(sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1"),
            *("--port", str(port), "--log-config", "log.json"),
        ]
    (tmp_path / "gunicorn.conf.py").write_text(GUNICORN_CONF, encoding="utf-8")
    return [
        *(sys.executable, "-m", "gunicorn", "app:app", "-c", "gunicorn.conf.py"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "1"),
    ]


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_server_lines_with_the_shipped_config(tmp_path: Path, server: str) -> None:
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    port = free_port()
    stderr = tmp_path / "stderr.jsonl"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            server_command(server, tmp_path, port),
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
        if line["logger"] in {"uvicorn.error", "gunicorn.error"} and "ASGI" not in line["message"]
    )


def test_hypercorn_error_line_with_the_shipped_config(tmp_path: Path) -> None:
    """hypercorn: its "Error in ASGI Framework" line goes through the JSON config
    (``--log-config json:log.json``) and carries the id."""
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    print_config(tmp_path)
    port = free_port()
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "hypercorn", "app:app"),
                *("--bind", f"127.0.0.1:{port}", "--log-config", "json:log.json"),
            ],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_until_up(port, proc)
            failed = httpx.get(f"http://127.0.0.1:{port}/boom", headers={"X-Request-ID": "h-err"})
            assert failed.status_code == 500
            assert failed.headers["x-request-id"] == "h-err"
        finally:
            proc.terminate()
            proc.wait(10)
    lines = [json.loads(line) for line in stderr.read_text().splitlines() if line.startswith("{")]
    (error,) = [line for line in lines if line["message"] == "Error in ASGI Framework"]
    assert error["request_id"] == "h-err"
    assert "RuntimeError: boom" in error["exception"]
