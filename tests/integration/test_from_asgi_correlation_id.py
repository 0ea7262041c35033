"""Coming from asgi-correlation-id: its README's patterns, under uvicorn on 127.0.0.1.

``app.add_middleware(...)`` plus ``@app.exception_handler(Exception)``: the
handler's response reaches the client (the middleware leaves the answer to it),
and its lines carry the id.  The option equivalents: a custom header and key
(``%(correlation_id)s``), ``transformer``, ``validator=None``, CORS
``expose_headers``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import ctxlog
from ctxlog.asgi import RequestContextMiddleware
from tests.integration.conftest import LineCapture, UvicornServer

log = logging.getLogger("tests.from_acid")


def handled_app() -> FastAPI:
    """asgi-correlation-id's README pattern, with ctxlog's names."""
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.error("handler saw %s", type(exc).__name__)
        return JSONResponse(
            {"detail": "Internal server error", "request_id": ctxlog.get("request_id")},
            status_code=500,
            headers={"X-Request-ID": ctxlog.get("request_id") or ""},
        )

    @app.get("/boom")
    async def boom() -> dict[str, Any]:
        log.info("about to fail")
        msg = "out of stock (handled)"
        raise RuntimeError(msg)

    return app


def plain_app() -> FastAPI:
    """No handler of its own: the middleware's plain 500, with the header."""
    app = FastAPI()
    app.add_middleware(RequestContextMiddleware)

    @app.get("/boom")
    async def boom() -> dict[str, Any]:
        msg = "out of stock (plain)"
        raise RuntimeError(msg)

    return app


def debug_app() -> Starlette:
    async def boom(request: Any) -> PlainTextResponse:
        msg = "out of stock (debug)"
        raise RuntimeError(msg)

    app = Starlette(debug=True, routes=[Route("/boom", boom)])
    app.add_middleware(RequestContextMiddleware)
    return app


def options_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(
        RequestContextMiddleware,
        header="X-Correlation-ID",
        key="correlation_id",
        validator=None,
        transformer=lambda value: value.lower(),
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["https://shop.example"],
        allow_methods=["*"],
        allow_headers=["X-Correlation-ID"],
        expose_headers=["X-Correlation-ID"],
    )

    @app.get("/id")
    async def the_id() -> dict[str, Any]:
        log.info("endpoint")
        return {"correlation_id": ctxlog.get("correlation_id")}

    return app


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, UvicornServer]]:
    apps = {"handled": handled_app(), "plain": plain_app(), "debug": debug_app()}
    apps["options"] = options_app()
    running = {name: UvicornServer(app) for name, app in apps.items()}
    for server in running.values():
        server.__enter__()
    try:
        yield running
    finally:
        for server in running.values():
            server.__exit__(None, None, None)


def test_the_apps_exception_handler_answers(
    servers: dict[str, UvicornServer], lines: LineCapture
) -> None:
    url = servers["handled"].url
    response = httpx.get(f"{url}/boom", headers={"X-Request-ID": "acid-1"}, timeout=30)
    assert response.status_code == 500
    # The handler's own response, not the middleware's plain one.
    assert response.json() == {"detail": "Internal server error", "request_id": "acid-1"}
    assert response.headers["x-request-id"] == "acid-1"
    mine = [(line.message, line.request_id) for line in lines.of(log.name)]
    assert mine == [("about to fail", "acid-1"), ("handler saw RuntimeError", "acid-1")]
    assert server_traceback(lines, "handled") == ["acid-1"]


def server_traceback(lines: LineCapture, which: str) -> list[str]:
    """The request ids on uvicorn's "Exception in ASGI application" lines for *which* app
    (uvicorn writes them after the response: waited for, so none reaches the next test)."""
    found = lines.wait_for(
        lambda line: (
            line.logger == "uvicorn.error"
            and "Exception in ASGI" in line.message
            and f"out of stock ({which})" in line.text
        )
    )
    return [line.request_id for line in found]


def test_without_a_handler_the_plain_500_carries_the_header(
    servers: dict[str, UvicornServer], lines: LineCapture
) -> None:
    response = httpx.get(
        f"{servers['plain'].url}/boom", headers={"X-Request-ID": "acid-2"}, timeout=30
    )
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers["x-request-id"] == "acid-2"
    assert server_traceback(lines, "plain") == ["acid-2"]


def test_starlettes_debug_page_is_left_alone(
    servers: dict[str, UvicornServer], lines: LineCapture
) -> None:
    response = httpx.get(
        f"{servers['debug'].url}/boom", headers={"X-Request-ID": "acid-3"}, timeout=30
    )
    assert response.status_code == 500
    assert "RuntimeError" in response.text  # Starlette's traceback page
    assert "out of stock (debug)" in response.text
    assert server_traceback(lines, "debug") == ["acid-3"]


def test_header_key_transformer_validator_none_and_cors(
    servers: dict[str, UvicornServer], lines: LineCapture
) -> None:
    url = servers["options"].url
    sent = {"X-Correlation-ID": "ABC!def~1", "Origin": "https://shop.example"}
    # asgi-correlation-id's log format, %(correlation_id)s, through ctxlog's filter.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ctxlog.ContextFilter(defaults={"correlation_id": "-"}))
    handler.setFormatter(logging.Formatter("[%(correlation_id)s] %(message)s"))
    log.addHandler(handler)
    try:
        response = httpx.get(f"{url}/id", headers=sent, timeout=30)
    finally:
        log.removeHandler(handler)
    assert stream.getvalue() == "[abc!def~1] endpoint\n"
    # validator=None: any value without spaces or controls; the transformer lowers it.
    assert response.json() == {"correlation_id": "abc!def~1"}
    assert response.headers["x-correlation-id"] == "abc!def~1"
    assert response.headers["access-control-expose-headers"] == "X-Correlation-ID"
    endpoint = next(line for line in lines.of(log.name) if line.message == "endpoint")
    assert endpoint.context == {"correlation_id": "abc!def~1"}
    # Still refused whatever the validator: a space; a generated id goes through
    # the transformer too.
    refused = httpx.get(f"{url}/id", headers={"X-Correlation-ID": "A B"}, timeout=30)
    generated = refused.json()["correlation_id"]
    assert generated != "A B"
    assert generated == generated.lower()
    assert refused.headers["x-correlation-id"] == generated
    preflight = httpx.options(
        f"{url}/id",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-Correlation-ID",
        },
        timeout=30,
    )
    assert preflight.status_code == 200
    assert "x-correlation-id" in preflight.headers["access-control-allow-headers"].lower()
