"""ctxlog.wsgi.RequestContextMiddleware called as a WSGI server calls it, and under werkzeug's
server where the wire matters."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextvars import copy_context
from typing import Any

import pytest

import ctxlog
from ctxlog.headers import is_valid_request_id
from ctxlog.wsgi import RequestContextMiddleware, StartResponse, WSGIEnvironment
from tests.conftest import Captured
from tests.integration.conftest import (
    WerkzeugServer,
    capture_lines,
    raw_request,
    response_headers,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def environ(**extra: Any) -> WSGIEnvironment:
    env: WSGIEnvironment = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/items/1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "5000",
        "wsgi.url_scheme": "http",
    }
    env.update(extra)
    return env


class Started:
    """A start_response that records its call."""

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.exc_info: Any = None

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        self.status = status
        self.headers = headers
        self.exc_info = exc_info
        return lambda _data: None

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def context_app(seen: list[dict[str, Any]]) -> Any:
    def app(env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(dict(ctxlog.current()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


def call(app: Any, env: WSGIEnvironment) -> tuple[Started, list[bytes]]:
    started = Started()
    result = app(env, started)
    try:
        body = list(result)
    finally:
        result.close()
    return started, body


@pytest.fixture
def warnings(captured: Captured) -> Iterator[Captured]:
    logger = logging.getLogger("ctxlog.wsgi")
    captured.handler.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
    captured.handler.addFilter(ctxlog.ContextFilter(defaults={"request_id": "-"}))
    logger.addHandler(captured.handler)
    yield captured
    logger.removeHandler(captured.handler)


def test_valid_header_is_bound_and_echoed() -> None:
    seen: list[dict[str, Any]] = []
    started, body = call(
        RequestContextMiddleware(context_app(seen)), environ(HTTP_X_REQUEST_ID="abc-1")
    )
    assert body == [b"ok"]
    assert seen == [{"request_id": "abc-1"}]
    assert started.header("X-Request-ID") == ["abc-1"]
    assert started.status == "200 OK"
    assert ctxlog.current() == {}


def test_whitespace_around_values_is_not_part_of_them() -> None:
    seen: list[dict[str, Any]] = []
    app = RequestContextMiddleware(context_app(seen))
    call(app, environ(HTTP_X_REQUEST_ID="abc-1\t ", HTTP_TRACEPARENT=f" {TRACEPARENT}\t"))
    assert seen == [{"request_id": "abc-1", "trace_id": "0af7651916cd43dd8448eb211c80319c"}]


def test_repeated_headers_arrive_joined_and_are_rejected(warnings: Captured) -> None:
    seen: list[dict[str, Any]] = []
    started, _ = call(
        RequestContextMiddleware(context_app(seen)), environ(HTTP_X_REQUEST_ID="one,two")
    )
    request_id = seen[0]["request_id"]
    assert is_valid_request_id(request_id)
    assert started.header("X-Request-ID") == [request_id]
    assert warnings.lines() == [
        (
            f"{request_id} Rejected the X-Request-ID request header (sent 2 times); "
            f"using the generated request id {request_id}"
        )
    ]


def test_options_traceparent_and_request_fields() -> None:
    seen: list[dict[str, Any]] = []
    app = RequestContextMiddleware(
        context_app(seen),
        header="X-Correlation-ID",
        key="correlation_id",
        request_fields=["method", "path", "client"],
    )
    started, _ = call(
        app,
        environ(HTTP_X_CORRELATION_ID="c-1", HTTP_TRACEPARENT=TRACEPARENT, SCRIPT_NAME="/api"),
    )
    assert seen == [
        {
            "correlation_id": "c-1",
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "method": "GET",
            "path": "/api/items/1",
            "client": "127.0.0.1:5000",
        }
    ]
    assert started.header("X-Correlation-ID") == ["c-1"]
    del seen[:]
    env = environ()
    del env["REMOTE_PORT"]
    call(app, env)
    assert seen[0]["client"] == "127.0.0.1"
    del seen[:]
    env = environ()
    del env["REMOTE_ADDR"]
    call(app, env)
    assert "client" not in seen[0]
    # werkzeug's ProxyFix sets REMOTE_ADDR from X-Forwarded-For: escaped.
    del seen[:]
    call(app, environ(REMOTE_ADDR="1.2.3.4\r\nX: y"))
    assert seen[0]["client"] == "1.2.3.4:0d:0aX:3a:20y:3a5000"


def test_echo_off_and_application_header_wins() -> None:
    seen: list[dict[str, Any]] = []
    started, _ = call(
        RequestContextMiddleware(context_app(seen), echo=False), environ(HTTP_X_REQUEST_ID="a")
    )
    assert started.header("X-Request-ID") == []

    def own_header(env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("x-request-id", "mine")])
        return []

    started, _ = call(RequestContextMiddleware(own_header), environ(HTTP_X_REQUEST_ID="a"))
    assert started.headers == [("x-request-id", "mine")]


def test_leaked_context_is_overwritten_and_the_caller_is_untouched() -> None:
    seen: list[dict[str, Any]] = []
    app = RequestContextMiddleware(context_app(seen))
    with ctxlog.bind(request_id="leaked", trace_id="f" * 32, user="kept"):
        call(app, environ(HTTP_X_REQUEST_ID="fresh"))
        assert ctxlog.get("request_id") == "leaked"
    assert seen == [{"request_id": "fresh", "user": "kept"}]


def streaming_app(log: list[tuple[str, Any]]) -> Any:
    def app(env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        ctxlog.set(user="set-in-view")  # never reset: must not outlive the request

        def body() -> Iterator[bytes]:
            try:
                for i in range(3):
                    log.append((f"chunk {i}", ctxlog.get("request_id")))
                    yield str(i).encode()
            finally:
                log.append(("finally", ctxlog.get("request_id")))

        return body()

    return app


def test_body_iterated_and_closed_in_other_threads_keeps_the_binding() -> None:
    """Servers may iterate and close() from another thread or context."""
    log: list[tuple[str, Any]] = []
    result = RequestContextMiddleware(streaming_app(log))(
        environ(HTTP_X_REQUEST_ID="s-1"), Started()
    )
    assert ctxlog.current() == {}
    it = iter(result)
    chunks: list[bytes] = []
    worker = threading.Thread(target=lambda: chunks.append(next(it)))
    worker.start()
    worker.join(10)
    chunks.append(copy_context().run(next, it))
    closer = threading.Thread(target=getattr(result, "close"))  # noqa: B009 -- the WSGI close() of the wrapper
    closer.start()
    closer.join(10)
    assert chunks == [b"0", b"1"]
    assert log == [("chunk 0", "s-1"), ("chunk 1", "s-1"), ("finally", "s-1")]
    assert ctxlog.current() == {}


def test_close_is_idempotent_and_ends_the_cache_scope() -> None:
    calls: list[str] = []

    @ctxlog.memoize
    def load(name: str) -> str:
        calls.append(name)
        return name.upper()

    def app(env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return [load("x").encode(), load("x").encode()]

    middleware = RequestContextMiddleware(app)
    for _ in range(3):
        _, body = call(middleware, environ())
        assert body == [b"X", b"X"]
    # one call per request: cached within it, never shared between requests
    assert calls == ["x", "x", "x"]
    result = middleware(environ(), Started())
    getattr(result, "close")()  # noqa: B009 -- the WSGI close() of the wrapper
    getattr(result, "close")()  # noqa: B009 -- twice is allowed


def test_an_application_that_raises(captured: Captured) -> None:
    """The error is logged in the request's context and answered with a 500
    carrying the id (the server would log it where the id is gone)."""

    def app(env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        ctxlog.set(user="u")
        start_response("200 OK", [("Content-Type", "text/plain")])  # replaced: nothing sent
        msg = "boom"
        raise RuntimeError(msg)

    captured.handler.setFormatter(logging.Formatter("%(request_id)s|%(message)s"))
    captured.handler.addFilter(ctxlog.ContextFilter())
    logging.getLogger("ctxlog.wsgi").addHandler(captured.handler)
    try:
        started = Started()
        body = RequestContextMiddleware(app)(environ(HTTP_X_REQUEST_ID="r-500"), started)
    finally:
        logging.getLogger("ctxlog.wsgi").removeHandler(captured.handler)
    assert started.status == "500 Internal Server Error"
    assert ("X-Request-ID", "r-500") in started.headers
    assert list(body) == [b"Internal Server Error"]
    (line,) = captured.stream.getvalue().split("\nTraceback")[:1]
    assert line == "r-500|Exception in WSGI application"
    assert "RuntimeError: boom" in captured.stream.getvalue()
    assert ctxlog.current() == {}
    with pytest.raises(RuntimeError, match="boom"):
        RequestContextMiddleware(app, error_response=False)(environ(), Started())
    assert ctxlog.current() == {}


def test_the_application_sees_the_id_the_lines_carry() -> None:
    seen: list[object] = []

    def app(env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(env.get("HTTP_X_REQUEST_ID"))
        start_response("200 OK", [])
        return [b""]

    middleware = RequestContextMiddleware(app)
    call(middleware, environ(HTTP_X_REQUEST_ID="bad id\n"))
    call(middleware, environ())
    call(middleware, environ(HTTP_X_REQUEST_ID="good-1"))
    assert seen[2] == "good-1"
    assert all(is_valid_request_id(value) for value in seen)
    call(
        RequestContextMiddleware(app, update_request_header=False), environ(HTTP_X_REQUEST_ID="x y")
    )
    assert seen[3] == "x y"
    with pytest.raises(ctxlog.ContextError, match="update_request_header"):
        RequestContextMiddleware(app, update_request_header="yes")  # type: ignore[arg-type]
    with pytest.raises(ctxlog.ContextError, match="error_response"):
        RequestContextMiddleware(app, error_response=1)  # type: ignore[arg-type]


def test_exc_info_passes_through() -> None:
    def app(env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            msg = "late"
            raise ValueError(msg)
        except ValueError as exc:
            start_response("500 Internal Server Error", [], (type(exc), exc, exc.__traceback__))
        return [b"error"]

    started, body = call(RequestContextMiddleware(app), environ(HTTP_X_REQUEST_ID="e-1"))
    assert started.status.startswith("500")
    assert started.exc_info[0] is ValueError
    assert started.header("X-Request-ID") == ["e-1"]
    assert body == [b"error"]


def test_repr() -> None:
    assert "RequestContextMiddleware" in repr(RequestContextMiddleware(context_app([])))


def test_a_repeated_traceparent_is_refused() -> None:
    """Servers join repeated headers with a comma; the later-version pattern would
    otherwise accept the joined value."""
    seen: list[dict[str, Any]] = []
    app = RequestContextMiddleware(context_app(seen))
    joined = f"{TRACEPARENT[:-2]}01-x,{TRACEPARENT}".replace("00-", "01-", 1)
    call(app, environ(HTTP_X_REQUEST_ID="r-1", HTTP_TRACEPARENT=joined))
    call(app, environ(HTTP_X_REQUEST_ID="r-2", HTTP_TRACEPARENT=f"{TRACEPARENT},{TRACEPARENT}"))
    assert [s.get("trace_id") for s in seen] == [None, None]
    call(app, environ(HTTP_X_REQUEST_ID="r-3", HTTP_TRACEPARENT=TRACEPARENT))
    assert seen[-1]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_a_header_repeated_over_the_wire_is_refused_with_validator_none() -> None:
    """werkzeug joins the two X-Request-ID lines a client sent into "r-1,r-2";
    with validator=None the middleware refuses it as the ASGI middleware refuses
    repeats, and says so once."""
    seen: list[dict[str, Any]] = []
    app = RequestContextMiddleware(context_app(seen), validator=None)
    request = (
        b"GET /items/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-Request-ID: r-1\r\nX-Request-ID: r-2\r\nConnection: close\r\n\r\n"
    )
    with capture_lines() as lines, WerkzeugServer(app) as server:
        status, headers = response_headers(raw_request(server.port, request))
    assert status == 200
    (chosen,) = [value for name, value in headers if name == "x-request-id"]
    assert is_valid_request_id(chosen)
    assert seen == [{"request_id": chosen}]
    (warning,) = lines.of("ctxlog.wsgi")
    assert warning.request_id == chosen
    assert warning.message == (
        "Rejected the X-Request-ID request header (sent 2 times); "
        f"using the generated request id {chosen}"
    )


@pytest.mark.parametrize("where", ["next", "close"])
def test_an_error_in_the_body_is_logged_with_the_id(warnings: Captured, where: str) -> None:
    """Raised by the body's next() or close(), in whatever context the server
    runs them (here: fresh copies): logged in the request's, then raised on."""

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"one"
            if where == "next":
                msg = "in next"
                raise RuntimeError(msg)

        def close(self) -> None:
            if where == "close":
                msg = "in close"
                raise RuntimeError(msg)

    def app(env: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return Body()

    result = RequestContextMiddleware(app)(environ(HTTP_X_REQUEST_ID="b-1"), Started())
    it = iter(result)
    assert copy_context().run(next, it) == b"one"
    close = getattr(result, "close")  # noqa: B009 -- the WSGI close() of the wrapper
    with pytest.raises(RuntimeError, match=f"in {where}"):
        if where == "next":
            copy_context().run(next, it)
        else:
            close()
    if where == "next":
        close()
    assert warnings.lines()[0] == "b-1 Exception while producing the response body"
    assert f"RuntimeError: in {where}" in warnings.stream.getvalue()
    assert ctxlog.current() == {}
