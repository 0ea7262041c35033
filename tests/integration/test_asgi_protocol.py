"""ctxlog.asgi.RequestContextMiddleware driven with raw ASGI messages (no server)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import ctxlog
from ctxlog.asgi import Message, Receive, RequestContextMiddleware, Scope, Send
from ctxlog.headers import is_valid_request_id
from tests.conftest import Captured

TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


def http_scope(*headers: tuple[bytes, bytes], **extra: Any) -> Scope:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": "/items/1",
        "headers": list(headers),
        "client": ("127.0.0.1", 5000),
    }
    scope.update(extra)
    return scope


class Seen:
    """What the inner application saw, and what reached the server."""

    def __init__(self) -> None:
        self.context: dict[str, Any] = {}
        self.outgoing: dict[str, str] = {}
        self.sent: list[Message] = []

    def header(self, name: bytes) -> list[bytes]:
        start = self.sent[0]
        return [value for key, value in start.get("headers", []) if key == name]


def make_app(seen: Seen, *, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.context = dict(ctxlog.current())
        seen.outgoing = ctxlog.outgoing_headers()
        start: Message = {"type": "http.response.start", "status": 200}
        if headers is not None:
            start["headers"] = headers
        await send(start)
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def run(app: Any, scope: Scope, seen: Seen) -> None:
    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        seen.sent.append(message)

    asyncio.run(app(scope, receive, send))


@pytest.fixture
def warnings(captured: Captured) -> Iterator[Captured]:
    """The ctxlog.asgi logger's lines, plain, with the request id."""
    logger = logging.getLogger("ctxlog.asgi")
    captured.handler.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
    captured.handler.addFilter(ctxlog.ContextFilter(defaults={"request_id": "-"}))
    logger.addHandler(captured.handler)
    yield captured
    logger.removeHandler(captured.handler)


def test_valid_header_is_bound_and_echoed() -> None:
    seen = Seen()
    run(RequestContextMiddleware(make_app(seen)), http_scope((b"x-request-id", b"abc-1")), seen)
    assert seen.context == {"request_id": "abc-1"}
    assert seen.header(b"x-request-id") == [b"abc-1"]
    assert seen.outgoing == {"X-Request-ID": "abc-1"}
    assert ctxlog.current() == {}


def test_missing_header_generates_silently(warnings: Captured) -> None:
    seen = Seen()
    run(RequestContextMiddleware(make_app(seen)), http_scope(), seen)
    request_id = seen.context["request_id"]
    assert is_valid_request_id(request_id)
    assert seen.header(b"x-request-id") == [request_id.encode()]
    assert warnings.lines() == []


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([b"a b"], "invalid value a:20b"),
        ([b"a\r\nb"], "invalid value a:0d:0ab"),
        ([b"caf\xe9"], "invalid value caf:e9"),
        ([b""], "empty value"),
        ([b"x" * 129], "129 characters, over the 128 limit, starting " + "x" * 32 + "...len:129"),
        ([b"one", b"two"], "sent 2 times"),
    ],
)
def test_rejected_values_are_replaced_and_logged_once(
    values: list[bytes], reason: str, warnings: Captured
) -> None:
    seen = Seen()
    scope = http_scope(*((b"x-request-id", value) for value in values))
    run(RequestContextMiddleware(make_app(seen)), scope, seen)
    request_id = seen.context["request_id"]
    assert is_valid_request_id(request_id)
    assert seen.header(b"x-request-id") == [request_id.encode()]
    assert warnings.lines() == [
        (
            f"{request_id} Rejected the X-Request-ID request header ({reason}); "
            f"using the generated request id {request_id}"
        )
    ]


def test_megabyte_header_is_refused_by_length(warnings: Captured) -> None:
    seen = Seen()
    huge = b"a" * 1_000_000
    run(RequestContextMiddleware(make_app(seen)), http_scope((b"x-request-id", huge)), seen)
    (line,) = warnings.lines()
    assert "1000000 characters" in line
    assert len(line) < 300


def test_the_header_option_is_matched_case_insensitively() -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), header="X-Correlation-ID")
    run(app, http_scope((b"x-correlation-id", b"c-1")), seen)
    assert seen.context == {"request_id": "c-1"}
    assert seen.header(b"x-correlation-id") == [b"c-1"]


def test_leaked_context_is_overwritten_not_assumed_absent() -> None:
    """A context leaked from an earlier request (CPython gh-140947) cannot show through."""
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), request_fields=["method"])
    with ctxlog.bind(request_id="leaked", trace_id="f" * 32, method="PUT", user="kept"):
        run(app, http_scope((b"x-request-id", b"fresh")), seen)
        assert ctxlog.get("request_id") == "leaked"
    assert seen.context == {"request_id": "fresh", "method": "GET", "user": "kept"}


def test_traceparent_binds_the_trace_id_and_keeps_the_flags() -> None:
    seen = Seen()
    scope = http_scope((b"x-request-id", b"r"), (b"traceparent", TRACEPARENT))
    run(RequestContextMiddleware(make_app(seen)), scope, seen)
    assert seen.context == {"request_id": "r", "trace_id": "0af7651916cd43dd8448eb211c80319c"}
    parent = seen.outgoing["traceparent"]
    assert parent.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert parent.endswith("-00")


@pytest.mark.parametrize(
    "headers",
    [
        [(b"traceparent", b"00-nope")],
        [(b"traceparent", TRACEPARENT), (b"traceparent", TRACEPARENT)],
    ],
)
def test_invalid_or_repeated_traceparent_is_ignored(headers: list[tuple[bytes, bytes]]) -> None:
    seen = Seen()
    run(RequestContextMiddleware(make_app(seen)), http_scope(*headers), seen)
    assert "trace_id" not in seen.context


def test_traceparent_off() -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), traceparent=False, trace_key="t")
    with ctxlog.bind(trace_id="outer"):
        run(app, http_scope((b"traceparent", TRACEPARENT)), seen)
    assert seen.context["trace_id"] == "outer"


def test_request_fields() -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), request_fields=["method", "path", "client"])
    run(app, http_scope(path="/a/b\n\u00e9:c"), seen)
    assert seen.context["method"] == "GET"
    assert seen.context["path"] == "/a/b:0a:e9:3ac"
    assert seen.context["client"] == "127.0.0.1:5000"
    run(app, http_scope(path="/plain/path-1.json", method="GE T", client=None), seen)
    assert seen.context["path"] == "/plain/path-1.json"
    assert seen.context["method"] == "GE:20T"
    assert "client" not in seen.context
    # A proxy-header middleware may have put X-Forwarded-For text there: escaped.
    run(app, http_scope(client=("zq\x1b[31m evil\u00e9", 80)), seen)
    assert seen.context["client"] == "zq:1b:5b31m:20evil:e9:3a80"


def test_echo_off() -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), echo=False)
    run(app, http_scope((b"x-request-id", b"abc")), seen)
    assert seen.header(b"x-request-id") == []
    assert seen.context["request_id"] == "abc"


def test_a_header_the_application_set_wins() -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen, headers=[(b"X-Request-ID", b"mine")]))
    run(app, http_scope((b"x-request-id", b"abc")), seen)
    assert seen.sent[0]["headers"] == [(b"X-Request-ID", b"mine")]


def test_response_headers_given_as_a_tuple_are_kept() -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen, headers=[(b"content-type", b"text/plain")]))
    run(app, http_scope((b"x-request-id", b"abc")), seen)
    assert seen.sent[0]["headers"] == [(b"content-type", b"text/plain"), (b"x-request-id", b"abc")]


def test_a_response_message_the_app_reuses_is_left_alone() -> None:
    """An app may send the same module-level message for every request: each response
    still carries its own request's id, and the app's message is not changed."""
    start: Message = {"type": "http.response.start", "status": 204, "headers": []}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b""})

    middleware = RequestContextMiddleware(app)
    for request_id in (b"one", b"two"):
        seen = Seen()
        run(middleware, http_scope((b"x-request-id", request_id)), seen)
        assert seen.header(b"x-request-id") == [request_id]
    assert start == {"type": "http.response.start", "status": 204, "headers": []}


@pytest.mark.parametrize("own_id", [False, True])
def test_response_headers_from_a_generator_are_all_sent(own_id: bool) -> None:
    """ASGI headers may be any iterable: a generator is read once, and all of it is sent."""
    headers = [(b"content-type", b"text/plain")]
    if own_id:
        headers.append((b"x-request-id", b"mine"))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": iter(headers)})

    seen = Seen()
    run(RequestContextMiddleware(app), http_scope((b"x-request-id", b"abc")), seen)
    assert list(seen.sent[0]["headers"]) == (
        headers if own_id else [*headers, (b"x-request-id", b"abc")]
    )


def test_custom_validator_and_generator(warnings: Captured) -> None:
    counter = iter(range(100))

    def generator() -> str:
        return f"gen-{next(counter)}"

    def validator(value: str) -> bool:
        return value.startswith("ok")

    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), validator=validator, generator=generator)
    run(app, http_scope((b"x-request-id", b"ok/with/slashes")), seen)
    assert seen.context["request_id"] == "ok/with/slashes"
    # The validator may only narrow: spaces and controls are refused whatever it says.
    for value in (b"ok with space", b"ok\x01", b"nope"):
        run(app, http_scope((b"x-request-id", value)), seen)
        assert seen.context["request_id"].startswith("gen-")
    assert len(warnings.lines()) == 3


def test_a_raising_validator_is_a_rejection(warnings: Captured) -> None:
    def validator(value: str) -> bool:
        raise ValueError(value)

    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), validator=validator)
    run(app, http_scope((b"x-request-id", b"abc")), seen)
    (line,) = warnings.lines()
    assert "the validator raised ValueError" in line


def test_max_length() -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), max_length=4)
    run(app, http_scope((b"x-request-id", b"abcde")), seen)
    assert seen.context["request_id"] != "abcde"


def test_validator_none_keeps_the_safety_floor(warnings: Captured) -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), validator=None)
    run(app, http_scope((b"x-request-id", b"any/thing!{}")), seen)
    assert seen.context["request_id"] == "any/thing!{}"
    for value in (b"has space", b"ctl\x01", b"caf\xc3\xa9", b"x" * 129):
        run(app, http_scope((b"x-request-id", value)), seen)
        assert seen.context["request_id"] != value.decode("latin-1")
    assert len(warnings.lines()) == 4


def test_transformer_applies_to_accepted_and_generated_ids() -> None:
    def transformer(value: str) -> str:
        return f"svc-{value[:8]}"

    for sent, bound in (((b"x-request-id", b"ABC"),), "svc-ABC"), ((), "svc-abcdefgh"):
        seen = Seen()
        app = RequestContextMiddleware(
            make_app(seen), transformer=transformer, generator=lambda: "abcdefghij"
        )
        run(app, http_scope(*sent), seen)
        assert seen.context["request_id"] == bound
        assert seen.header(b"x-request-id") == [bound.encode()]


def test_a_bad_transformer_is_reported() -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), transformer=lambda value: value + "\n")
    with pytest.raises(ctxlog.ContextError, match="transformer"):
        run(app, http_scope((b"x-request-id", b"abc")), seen)


def test_a_bad_generator_is_reported() -> None:
    seen = Seen()
    app = RequestContextMiddleware(make_app(seen), generator=lambda: "has space")
    with pytest.raises(ctxlog.ContextError, match="generator"):
        run(app, http_scope(), seen)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"header": "bad header"}, "header"),
        ({"header": ""}, "header"),
        ({"key": ""}, "key"),
        ({"trace_key": ""}, "trace_key"),
        ({"request_fields": "method"}, "collection"),
        ({"request_fields": ["method", "user"]}, "unknown"),
        ({"max_length": 0}, "max_length"),
        ({"validator": r"[a-z]+"}, "validator=.*give a function"),
        ({"generator": "fixed-id"}, "generator=.*give a function"),
        ({"generator": None}, "generator=.*give a function"),
        ({"transformer": "lower"}, "transformer=.*give a function"),
    ],
)
def test_invalid_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ctxlog.ContextError, match=match):
        RequestContextMiddleware(make_app(Seen()), **options)


def test_lifespan_and_other_scopes_pass_through() -> None:
    calls: list[tuple[Scope, dict[str, Any]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, dict(ctxlog.current())))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        return None

    middleware = RequestContextMiddleware(app)
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    asyncio.run(middleware(scope, receive, send))
    assert calls == [(scope, {})]
    assert "RequestContextMiddleware" in repr(middleware)


def raising_app(*, before_start: bool) -> Callable[[Scope, Receive, Send], Any]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if not before_start:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        msg = "boom"
        raise RuntimeError(msg)

    return app


def test_exception_before_the_response_sends_a_500_with_the_header() -> None:
    seen = Seen()
    with pytest.raises(RuntimeError, match="boom"):
        run(
            RequestContextMiddleware(raising_app(before_start=True)),
            http_scope((b"x-request-id", b"e")),
            seen,
        )
    assert seen.sent[0]["status"] == 500
    assert seen.header(b"x-request-id") == [b"e"]
    assert seen.sent[1]["body"] == b"Internal Server Error"
    assert ctxlog.current() == {}


def test_an_error_propagates_with_the_request_binding(captured: Captured) -> None:
    """What logs an error next runs in the request's task after the middleware
    (uvicorn's "Exception in ASGI application", an outer 500 handler): its line
    carries the request's id.  A request that succeeds leaves nothing behind."""
    captured.handler.addFilter(ctxlog.ContextFilter(defaults={"request_id": "-"}))
    captured.handler.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
    calls: list[int] = []

    @ctxlog.memoize
    def lookup(n: int) -> int:
        calls.append(n)
        return n

    async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204})

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        return None

    async def server(app: Any, request_id: bytes) -> None:
        # What an ASGI server does with each request, in the request's own task.
        try:
            await app(http_scope((b"x-request-id", request_id)), receive, send)
        except RuntimeError:
            captured.logger.error("Exception in ASGI application")
            lookup(1)
            lookup(1)  # the request's cache scope is closed: called through
        captured.logger.info("after the request")

    async def main() -> None:
        with ctxlog.bind(request_id="outer", user="kept"):
            await server(RequestContextMiddleware(ok_app), b"fine-1")
            assert ctxlog.current() == {"request_id": "outer", "user": "kept"}
        await server(RequestContextMiddleware(raising_app(before_start=True)), b"err-1")

    asyncio.run(main())
    assert captured.lines() == [
        "outer after the request",
        "err-1 Exception in ASGI application",
        "err-1 after the request",
    ]
    assert calls == [1, 1]
    assert ctxlog.current() == {}  # the task's context ended with it


def test_exception_after_the_response_started_only_propagates() -> None:
    seen = Seen()
    with pytest.raises(RuntimeError, match="boom"):
        run(RequestContextMiddleware(raising_app(before_start=False)), http_scope(), seen)
    assert len(seen.sent) == 1
    assert seen.sent[0]["status"] == 200


def test_error_response_off() -> None:
    seen = Seen()
    app = RequestContextMiddleware(raising_app(before_start=True), error_response=False)
    with pytest.raises(RuntimeError, match="boom"):
        run(app, http_scope(), seen)
    assert seen.sent == []


def test_error_response_without_echo_and_with_a_gone_client() -> None:
    seen = Seen()
    app = RequestContextMiddleware(raising_app(before_start=True), echo=False)
    with pytest.raises(RuntimeError, match="boom"):
        run(app, http_scope(), seen)
    assert seen.header(b"x-request-id") == []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def gone(message: Message) -> None:
        raise OSError

    # The client went away: the original error is what propagates.
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(
            RequestContextMiddleware(raising_app(before_start=True))(http_scope(), receive, gone)
        )


def test_websocket_accept_carries_the_header() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": ctxlog.get("request_id")})
        await send({"type": "websocket.close"})

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = http_scope((b"x-request-id", b"ws-1"), type="websocket", method=None)
    asyncio.run(RequestContextMiddleware(app)(scope, receive, send))
    assert sent[0] == {"type": "websocket.accept", "headers": [(b"x-request-id", b"ws-1")]}
    assert sent[1]["text"] == "ws-1"


def test_concurrent_tasks_in_one_loop_keep_their_ids() -> None:
    seen_ids: dict[int, list[str]] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        n = int(scope["path"].rsplit("/", 1)[1])
        for _ in range(5):
            seen_ids.setdefault(n, []).append(ctxlog.get("request_id"))
            await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 204})

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        await asyncio.sleep(0)

    middleware = RequestContextMiddleware(app)

    async def main() -> None:
        await asyncio.gather(
            *(
                middleware(
                    http_scope((b"x-request-id", f"id-{n}".encode()), path=f"/n/{n}"),
                    receive,
                    send,
                )
                for n in range(50)
            )
        )

    asyncio.run(main())
    assert seen_ids == {n: [f"id-{n}"] * 5 for n in range(50)}


def test_the_web_modules_import_no_framework() -> None:
    code = (
        "import sys, ctxlog.asgi, ctxlog.wsgi, ctxlog.headers\n"
        "names = ('starlette', 'fastapi', 'flask', 'werkzeug', 'uvicorn', 'httpx', 'anyio')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_a_cache_scope_per_request() -> None:
    calls: list[str] = []

    @ctxlog.memoize
    async def load(name: str) -> str:
        calls.append(name)
        await asyncio.sleep(0)
        return name.upper()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        results = await asyncio.gather(load("x"), load("x"), load("x"))
        assert list(results) == ["X", "X", "X"]
        await send({"type": "http.response.start", "status": 204})

    seen = Seen()
    middleware = RequestContextMiddleware(app)
    for _ in range(3):
        run(middleware, http_scope(), seen)
    assert calls == ["x", "x", "x"]  # once per request, never shared between requests
    assert asyncio.run(load("y")) == "Y"  # outside a request: called through
    assert asyncio.run(load("y")) == "Y"
    assert calls[-2:] == ["y", "y"]


def test_the_application_sees_the_id_the_lines_carry() -> None:
    """The request header in the scope is the id the lines carry (once), never a
    rejected or missing value; the scope is the server's own object, with a new
    headers list (the server's list is left as it was)."""
    found: list[list[bytes]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        found.append([v for k, v in scope["headers"] if k == b"x-request-id"])
        assert [v.decode() for v in found[-1]] == [ctxlog.get("request_id")]
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body", "body": b""})

    middleware = RequestContextMiddleware(app)
    bad = http_scope((b"x-request-id", b"a b"), (b"x-request-id", b"twice"))
    servers_list = bad["headers"]
    for scope in (bad, http_scope(), http_scope((b"x-request-id", b"good-1"))):
        run(middleware, scope, Seen())
    assert [len(v) for v in found] == [1, 1, 1]
    assert found[2] == [b"good-1"]
    assert servers_list == [(b"x-request-id", b"a b"), (b"x-request-id", b"twice")]
    assert bad["headers"] == [(b"x-request-id", found[0][0])]
    plain = RequestContextMiddleware(make_app(Seen()), update_request_header=False)
    untouched = http_scope((b"x-request-id", b"a b"))
    run(plain, untouched, Seen())
    with pytest.raises(ctxlog.ContextError, match="update_request_header"):
        RequestContextMiddleware(app, update_request_header=None)  # type: ignore[arg-type]
    with pytest.raises(ctxlog.ContextError, match="error_response"):
        RequestContextMiddleware(app, error_response="no")  # type: ignore[arg-type]
