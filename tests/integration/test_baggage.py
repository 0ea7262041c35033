"""W3C Baggage on real servers: uvicorn (ASGI) and werkzeug (WSGI) on 127.0.0.1.

The keys the middleware is given are bound from the ``baggage`` header for
every line of the request; other entries, and hostile headers, bind nothing
raw.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Final

import pytest

import ctxlog
from ctxlog.asgi import RequestContextMiddleware as AsgiMiddleware
from ctxlog.wsgi import RequestContextMiddleware as WsgiMiddleware
from ctxlog.wsgi import StartResponse, WSGIEnvironment
from tests.integration.conftest import (
    UvicornServer,
    WerkzeugServer,
    answer_every_path,
    capture_lines,
    raw_request,
    response_headers,
)

log = logging.getLogger("tests.baggage")
KEYS = ("tenant", "user.tier")


asgi_app: Final = answer_every_path(log)


def wsgi_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    log.info("handled")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture(scope="module", params=["uvicorn", "werkzeug"])
def port(request: pytest.FixtureRequest) -> Iterator[int]:
    if request.param == "uvicorn":
        with UvicornServer(AsgiMiddleware(asgi_app, baggage=KEYS)) as uvicorn:
            yield uvicorn.port
    else:
        with WerkzeugServer(WsgiMiddleware(wsgi_app, baggage=KEYS)) as werkzeug:
            yield werkzeug.port


def send(port: int, *baggage: bytes) -> list[dict[str, object]]:
    """One request with these ``baggage`` header lines: the context of its app line."""
    lines = [b"GET /b HTTP/1.1", b"Host: 127.0.0.1", b"X-Request-ID: bag-1"]
    lines += [b"baggage: " + value for value in baggage]
    lines += [b"Connection: close", b"", b""]
    with capture_lines() as captured:
        status, _ = response_headers(raw_request(port, b"\r\n".join(lines)))
        found = captured.wait_for(lambda line: line.logger == "tests.baggage")
    assert status == 200
    for line in captured.snapshot():
        assert line.text.isprintable(), line
    return [line.context for line in found]


def test_the_keys_asked_for_are_on_the_request_lines(port: int) -> None:
    (context,) = send(port, b"tenant=acme;origin=edge, user.tier=gold%20plus, other=x")
    assert context == {"request_id": "bag-1", "tenant": "acme", "user.tier": "gold plus"}
    assert dict(ctxlog.current()) == {}


def test_several_header_lines(port: int) -> None:
    (context,) = send(port, b"tenant=acme", b"user.tier=silver")
    assert (context["tenant"], context["user.tier"]) == ("acme", "silver")


@pytest.mark.parametrize(
    "hostile",
    [
        b"tenant=a%0AINFO forged line,user.tier=ok",
        b"tenant=a%1B%5B31mred,user.tier=ok",
        b"tenant=%FF%FE,user.tier=ok",
        b"user.tier=ok," + b"k=v," * 10_000 + b"tenant=late",
        b"user.tier=ok,tenant=" + b"a" * 60_000,
    ],
    ids=["encoded-newline", "escape-sequence", "not-utf8", "10000-entries", "oversized"],
)
def test_a_hostile_header_binds_nothing_raw(port: int, hostile: bytes) -> None:
    (context,) = send(port, hostile)
    assert context["user.tier"] == "ok"
    assert "tenant" not in context
    assert context["request_id"] == "bag-1"
