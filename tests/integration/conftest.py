"""Real servers on 127.0.0.1 and a capture of every log line they produce."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from werkzeug.serving import BaseWSGIServer, make_server

import ctxlog
from ctxlog.asgi import ASGIApp, Receive, Scope, Send
from ctxlog.wsgi import WSGIApp
from tests.integration._queues import on_root
from tests.integration._redis import redis_server

LINE_FORMAT = "%(name)s|%(levelname)s|%(request_id)s|%(message)s"


@dataclass(frozen=True)
class Line:
    """One captured log line: the record's fields and the formatted text."""

    logger: str
    level: str
    request_id: str
    message: str
    text: str
    context: dict[str, Any]


class LineCapture(logging.Handler):
    """A root handler that keeps every line, formatted as a plain text file would show it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(LINE_FORMAT))
        self.addFilter(ctxlog.ContextFilter(defaults={"request_id": "-"}))
        self.lines: list[Line] = []
        self._lines_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.exc_text:
            # Tracebacks are checked as part of the text, but kept to one entry.
            text = text.replace("\n", "\\n")
        line = Line(
            logger=record.name,
            level=record.levelname,
            request_id=str(record.__dict__.get("request_id")),
            message=record.getMessage(),
            text=text,
            context=dict(ctxlog.current()),
        )
        with self._lines_lock:
            self.lines.append(line)

    def snapshot(self) -> list[Line]:
        with self._lines_lock:
            return list(self.lines)

    def of(self, logger: str) -> list[Line]:
        return [line for line in self.snapshot() if line.logger == logger]

    def wait_for(self, predicate: Callable[[Line], bool], count: int = 1) -> list[Line]:
        """Wait (bounded) until *count* lines match; return them."""
        deadline = time.monotonic() + 10
        while True:
            found = [line for line in self.snapshot() if predicate(line)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.01)


@contextlib.contextmanager
def capture_lines(*levels: tuple[str, int]) -> Iterator[LineCapture]:
    """Capture every line reaching the root logger (INFO and up unless *levels* say)."""
    handler = LineCapture()
    with on_root(handler, *levels):
        yield handler


@pytest.fixture
def lines() -> Iterator[LineCapture]:
    with capture_lines() as handler:
        yield handler


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real ``redis-server`` for the module's tests (fails, never skips, without one)."""
    with redis_server() as url:
        yield url


def loopback_socket() -> socket.socket:
    """A listening-ready socket on 127.0.0.1 with a free port (bound to port 0)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class UvicornServer:
    """uvicorn serving *app* on 127.0.0.1 in a thread of its own."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.sock = loopback_socket()
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        settings: dict[str, Any] = {
            "log_config": None,
            "http": "h11",
            "ws": "websockets-sansio",
            "lifespan": "on",
            "timeout_graceful_shutdown": 2,
        }
        config = uvicorn.Config(app, **{**settings, **options})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> UvicornServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                msg = "uvicorn did not start"
                raise RuntimeError(msg)
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class ServingThread:
    """A ``socketserver``-style server on 127.0.0.1, serving in a thread of its own."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.port: int = server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class WerkzeugServer(ServingThread):
    """werkzeug's WSGI server on 127.0.0.1 in a thread of its own."""

    def __init__(self, app: WSGIApp, *, threaded: bool = True) -> None:
        server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=threaded)
        super().__init__(server)


def raw_request(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send *request* as-is over a new connection; return everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def response_headers(raw: bytes) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers of a raw HTTP/1.1 response (status 0 when there is none)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    if not head.startswith("HTTP/"):
        return 0, []
    status_line, *header_lines = head.split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    pairs = []
    for line in header_lines:
        name, _, value = line.partition(":")
        pairs.append((name.strip().lower(), value.strip()))
    return status, pairs


def answer_every_path(log: logging.Logger) -> ASGIApp:
    """An ASGI application that logs ``handled`` on *log* and answers ``ok`` on
    every path (a router would refuse some hostile ones), with a lifespan."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        log.info("handled")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app
