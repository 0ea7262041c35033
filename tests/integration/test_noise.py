"""Tail sampling and redaction through the real middlewares, on real servers."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

import ctxlog
from ctxlog.asgi import Receive, Scope, Send
from ctxlog.asgi import RequestContextMiddleware as AsgiMiddleware
from ctxlog.wsgi import RequestContextMiddleware as WsgiMiddleware

from .conftest import UvicornServer, WerkzeugServer

log = logging.getLogger("ctxlog.test.noise.app")


class JsonSink:
    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.lock = threading.Lock()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(
            ctxlog.stdlib.json_formatter(redact=ctxlog.Redactor(patterns=[ctxlog.BEARER_TOKEN]))
        )
        self.handler.addFilter(ctxlog.ContextFilter())

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def sink() -> Iterator[JsonSink]:
    sink = JsonSink()
    handler = ctxlog.TailSamplingHandler(sink.handler)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield sink
    log.removeHandler(handler)


def outcome_of(path: str) -> tuple[int, bool]:
    """(status, raises) for a path: /ok, /fail (a 500), /raise, /warn (200)."""
    return {
        "/ok": (200, False),
        "/warn": (200, False),
        "/fail": (503, False),
        "/raise": (500, True),
    }[path]


def work(path: str, authorization: str) -> None:
    with ctxlog.bind(authorization=authorization):
        log.info("start %s with %s", path, authorization)
    log.info("step two of %s", path)
    if path == "/warn":
        log.warning("a warning on %s", path)


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    headers = dict(scope["headers"])
    path = scope["path"]
    work(path, headers.get(b"authorization", b"").decode())
    status, raises = outcome_of(path)
    if raises:
        msg = f"handler for {path} failed"
        raise RuntimeError(msg)
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"done"})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    work(path, environ.get("HTTP_AUTHORIZATION", ""))
    status, raises = outcome_of(path)
    if raises:
        msg = f"handler for {path} failed"
        raise RuntimeError(msg)
    start_response(f"{status} Status", [("Content-Type", "text/plain")])
    return [b"done"]


PATHS = ["/ok", "/warn", "/fail", "/raise"]


def fire(url: str) -> dict[str, str]:
    """60 concurrent requests, 15 of each path, distinct ids; return id -> path."""
    sent = {f"req-{i:03d}": PATHS[i % 4] for i in range(60)}

    def one(item: tuple[str, str]) -> None:
        rid, path = item
        response = httpx.get(
            url + path,
            headers={"X-Request-ID": rid, "Authorization": f"Bearer tok-{rid}"},
            timeout=20,
        )
        assert response.status_code == outcome_of(path)[0]
        assert response.headers["x-request-id"] == rid

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(one, sent.items()))
    return sent


def check_lines(sink: JsonSink, sent: dict[str, str]) -> None:
    lines = sink.lines()
    text = sink.stream.getvalue()
    assert "tok-" not in text  # no bearer token reached a line
    by_id: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_id.setdefault(line["request_id"], []).append(line)
    for rid, path in sent.items():
        got = [line["message"] for line in by_id.get(rid, [])]
        if path in ("/fail", "/raise"):
            # A failed request: every line, in order, with its id.
            assert got == [f"start {path} with [REDACTED]", f"step two of {path}"], rid
            assert by_id[rid][0]["authorization"] == "[REDACTED]"
        elif path == "/warn":
            assert got == [f"a warning on {path}"], rid  # the warning passes; the rest dropped
        else:
            assert got == [], rid
    report = ctxlog.testing.check(lines)
    assert report.ok, report.problems


def test_asgi_under_uvicorn(sink: JsonSink) -> None:
    app = AsgiMiddleware(asgi_app)
    with UvicornServer(app) as server:
        sent = fire(server.url)
    check_lines(sink, sent)


def test_wsgi_under_werkzeug(sink: JsonSink) -> None:
    app = WsgiMiddleware(wsgi_app)
    with WerkzeugServer(app) as server:
        sent = fire(server.url)
    check_lines(sink, sent)
