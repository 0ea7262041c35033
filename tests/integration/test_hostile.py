"""Hostile X-Request-ID values sent over a raw socket to real servers (Hypothesis corpus).

None of them may reach a log line or a response header: each is replaced by a
generated id, and at most one warning line mentions it, escaped.
"""

from __future__ import annotations

import logging
import re
import string
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import ctxlog
from ctxlog.asgi import RequestContextMiddleware as AsgiMiddleware
from ctxlog.headers import is_valid_request_id
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

log = logging.getLogger("tests.hostile")
ALLOWED = (string.ascii_letters + string.digits + "._:-").encode()
# Characters whose presence makes a value hostile.
DANGEROUS = bytes(range(0x20)) + b" \x7f\"'\\=%,;/<>{}" + bytes(range(0x80, 0x100))
MARKER = b"zq"  # never produced by anything else in the captured lines (hex ids, fixed text)


async def hostile_endpoint(request: Request) -> Response:
    log.info("handled")
    return PlainTextResponse(str(ctxlog.get("request_id")))


def hostile_wsgi(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    log.info("handled")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(ctxlog.get("request_id")).encode()]


@pytest.fixture(scope="module")
def uvicorn_server() -> Iterator[UvicornServer]:
    app = AsgiMiddleware(Starlette(routes=[Route("/hostile", hostile_endpoint)]))
    with UvicornServer(app) as running:
        yield running


#: Answers every path (a router would refuse some of the hostile ones).
any_path: Final = answer_every_path(log)


@pytest.fixture(scope="module")
def fields_server() -> Iterator[UvicornServer]:
    """Binds the request fields too; uvicorn takes the client from X-Forwarded-For
    (it trusts proxy headers from 127.0.0.1 by default)."""
    app = AsgiMiddleware(any_path, request_fields=["method", "path", "client"])
    with UvicornServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def werkzeug_server() -> Iterator[WerkzeugServer]:
    with WerkzeugServer(WsgiMiddleware(hostile_wsgi)) as running:
        yield running


@dataclass(frozen=True)
class Hostile:
    """One hostile request: the X-Request-ID header values it carries."""

    values: tuple[bytes, ...]

    def request(self) -> bytes:
        lines = [b"GET /hostile HTTP/1.1", b"Host: 127.0.0.1"]
        lines += [b"X-Request-ID: " + value for value in self.values]
        lines += [b"Connection: close", b"", b""]
        return b"\r\n".join(lines)


def marked(body: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.builds(lambda tail, mid: MARKER + tail + mid, st.binary(max_size=4), body)


hostile_values = st.one_of(
    # a dangerous character somewhere after the marker
    marked(
        st.builds(
            lambda a, c, b: a + c + b,
            st.binary(max_size=8).map(lambda b: bytes(x for x in b if x in ALLOWED)),
            st.binary(min_size=1, max_size=6).map(
                lambda b: bytes(DANGEROUS[x % len(DANGEROUS)] for x in b)
            ),
            st.binary(max_size=8),
        )
    ),
    # over the length cap, up to well past it
    st.integers(129, 20_000).map(lambda n: MARKER + b"a" * (n - 2)),
    # non-ASCII text, UTF-8 encoded
    marked(st.text(min_size=1, max_size=8).filter(lambda t: not t.isascii()).map(str.encode)),
)

hostile_requests = st.one_of(
    hostile_values.map(lambda value: Hostile((value,))),
    st.just(Hostile((b"",))),
    # repeated headers, each value valid on its own
    st.lists(
        st.binary(min_size=1, max_size=10).map(
            lambda b: MARKER + bytes(ALLOWED[x % len(ALLOWED)] for x in b)
        ),
        min_size=2,
        max_size=4,
        unique=True,
    ).map(lambda values: Hostile(tuple(values))),
)


def effective(hostile: Hostile, *, joined: bool) -> list[bytes]:
    """The values the server hands the application, after HTTP's own trimming."""
    values = [value.strip(b" \t") for value in hostile.values]
    return [b",".join(values)] if joined and len(values) > 1 else values


def check(hostile: Hostile, port: int, *, joined: bool) -> None:
    with capture_lines() as captured:
        raw = raw_request(port, hostile.request())
    status, headers = response_headers(raw)
    values = effective(hostile, joined=joined)
    accepted = len(values) == 1 and is_valid_request_id(values[0].decode("latin-1"))
    if status == 200:
        ids = [value for name, value in headers if name == "x-request-id"]
        assert len(ids) == 1
        assert is_valid_request_id(ids[0])
        if accepted:
            assert ids[0].encode() == values[0]
        else:
            assert ids[0].encode() not in hostile.values
    else:
        # The HTTP layer refused the request before the application saw it.
        assert status in (0, 400, 431), raw[:200]
    if accepted:
        return
    lines = captured.snapshot()
    rejected = [line for line in lines if line.logger.startswith("ctxlog.")]
    assert len(rejected) <= 1
    for line in lines:
        assert line.text.isascii(), line
        assert line.text.isprintable(), line
        if line.logger.startswith(("ctxlog.", "tests.")):
            assert is_valid_request_id(line.request_id), line
    texts = [line.text.encode("latin-1") for line in lines]
    texts += [f"{name}: {value}".encode("latin-1", "replace") for name, value in headers]
    for value in filter(None, values):  # an empty value is "in" every string
        for text in texts:
            assert value not in text, (value, text)


@given(hostile_requests)
@example(Hostile((b"zq\r\nX-Injected: yes",)))
@example(Hostile((b"zq\x1b[31mred",)))
@example(Hostile((b"zqa\tb",)))
@example(Hostile((b"zq  b",)))
@example(Hostile((b"zq\xc3\xa9",)))
@example(Hostile((b"",)))
@example(Hostile((b"zq-1", b"zq-2")))
@example(Hostile((MARKER + b"x" * 1_000_000,)))
def test_uvicorn(uvicorn_server: UvicornServer, hostile: Hostile) -> None:
    check(hostile, uvicorn_server.port, joined=False)


@given(hostile_requests)
@example(Hostile((b"zq\r\nX-Injected: yes",)))
@example(Hostile((b"zq\x1b[31mred",)))
@example(Hostile((b"zqa\tb",)))
@example(Hostile((b"zq\xc3\xa9",)))
@example(Hostile((b"",)))
@example(Hostile((b"zq-1", b"zq-2")))
@example(Hostile((MARKER + b"x" * 60_000,)))
def test_werkzeug(werkzeug_server: WerkzeugServer, hostile: Hostile) -> None:
    check(hostile, werkzeug_server.port, joined=True)


def test_surrounding_whitespace_is_not_part_of_the_value(
    werkzeug_server: WerkzeugServer, uvicorn_server: UvicornServer
) -> None:
    """HTTP strips optional whitespace around a value; werkzeug leaves trailing tabs in."""
    for value in (b"zq\t", b"zq ", b" zq", b"zq\t \t", b"\tzq-1.a:b_c \t"):
        check(Hostile((value,)), werkzeug_server.port, joined=True)
        check(Hostile((value,)), uvicorn_server.port, joined=False)


FIELD_TEXT = re.compile(r"[A-Za-z0-9._:/-]*")


@given(hostile_values, hostile_values)
@example(b"zq\x1b[31mred", b"zq\x1b[31mred")
@example(b"zq caf\xc3\xa9\tTAB", b"zq\r\nX-Injected: yes")
def test_request_fields_from_hostile_input(
    fields_server: UvicornServer, forwarded: bytes, path: bytes
) -> None:
    """A hostile X-Forwarded-For (the client field) or path is bound escaped, never raw."""
    request = (
        b"GET /" + urllib.parse.quote_from_bytes(path).encode() + b" HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nX-Forwarded-For: " + forwarded + b"\r\nConnection: close\r\n\r\n"
    )
    with capture_lines() as captured:
        raw = raw_request(fields_server.port, request)
    status, _ = response_headers(raw)
    assert status in (0, 200, 400, 431), raw[:200]
    handled = [line for line in captured.snapshot() if line.logger == log.name]
    assert len(handled) == (status == 200)
    for line in handled:
        assert set(line.context) == {"request_id", "method", "path", "client"}
        raw_values = [raw for raw in (forwarded.strip(b" \t"), path) if not plain(raw)]
        for value in line.context.values():
            assert FIELD_TEXT.fullmatch(value), line.context
            assert len(value) <= 1024 * 3, line.context
            for raw in raw_values:
                assert raw not in value.encode(), line.context


def plain(value: bytes) -> bool:
    """Whether *value* could be bound as it is (nothing in it to escape)."""
    return FIELD_TEXT.fullmatch(value.decode("latin-1")) is not None
