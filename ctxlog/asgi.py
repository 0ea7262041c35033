"""Pure ASGI request-context middleware: Starlette, FastAPI, any ASGI app.

No framework is imported: the middleware speaks the ASGI protocol directly,
so it costs one dict copy and one header scan per request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final, TypeAlias

from ctxlog._errors import check_flag
from ctxlog._middleware import Policy
from ctxlog._store import UNIT, store
from ctxlog.headers import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    is_valid_request_id,
    new_request_id,
)

__all__ = ["ASGIApp", "Message", "Receive", "RequestContextMiddleware", "Scope", "Send"]

Scope: TypeAlias = MutableMapping[str, Any]
"""An ASGI connection scope."""
Message: TypeAlias = MutableMapping[str, Any]
"""An ASGI event message."""
Receive: TypeAlias = Callable[[], Awaitable[Message]]
"""The ASGI ``receive`` callable."""
Send: TypeAlias = Callable[[Message], Awaitable[None]]
"""The ASGI ``send`` callable."""
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An ASGI 3 application."""

_logger: Final = logging.getLogger("ctxlog.asgi")

# Messages that open a response, and so carry its headers.
_START_TYPES: Final = frozenset(
    {"http.response.start", "websocket.accept", "websocket.http.response.start"}
)
_ERROR_BODY: Final = b"Internal Server Error"


class RequestContextMiddleware:
    """Bind a request id (and trace id) for the whole of every HTTP and websocket request.

    For each ``http`` and ``websocket`` scope (``lifespan`` and other scopes
    pass through untouched) the middleware:

    * takes the request id from the *header* when exactly one such header is
      sent and its value passes *validator*; otherwise it uses a new id from
      *generator* and, when a value was rejected (invalid, empty, too long,
      repeated), logs **one** warning on the ``ctxlog.asgi`` logger with the
      value escaped and truncated
      ([`ctxlog.headers.escape_rejected`][ctxlog.headers.escape_rejected]) —
      the raw value never reaches a log line or a response header;
    * binds it under *key*, plus the trace id of a valid W3C ``traceparent``
      under *trace_key* (when *traceparent* is on) and the *request_fields*
      asked for (``"method"``, ``"path"``, ``"client"``);
    * binds the entries of the W3C ``baggage`` header whose keys *baggage*
      names, each under its own key (`ctxlog.headers.parse_baggage`: other
      entries, malformed ones and unsafe values are left out);
    * opens a unit of work ([`ctxlog.scope`][ctxlog.scope]) for the request: its
      memoize cache, and what [`ctxlog.annotate`][ctxlog.annotate] adds;
    * echoes the id in the response (and websocket accept) headers, unless
      *echo* is off or the application set that header itself;
    * with *update_request_header* (the default), gives the scope's
      ``headers`` a new list in which *header* holds that same id, once: a
      view that reads the header sees the id the lines carry, never a
      rejected or missing value.  The scope stays the one the server sent
      (only its ``headers`` entry is replaced, the server's list is left
      alone), so what the application writes into it (the router's
      ``route``, ``endpoint`` and ``path_params``, an authentication
      middleware's ``user``) reaches the middlewares around this one;
    * keeps all of it bound until the application returns: streamed bodies,
      background tasks and tasks the request starts carry the id.

    Every key it manages is set (or removed) at the start of each request,
    never assumed absent, so a context leaked by the server from an earlier
    request (CPython gh-140947) cannot show through.  When the application
    raises before it started a response, the middleware sends a plain ``500``
    carrying the header (if *error_response* is on) — unless it runs inside a
    Starlette (or FastAPI) application that answers errors itself: added with
    ``app.add_middleware(...)`` to an application with an
    ``exception_handler(Exception)`` (or ``500``) or ``debug=True``, it leaves
    the response to that handler, which Starlette runs outside the
    middlewares it adds (the handler can add the header from
    ``ctxlog.get("request_id")``: the binding is still on).  It then
    re-raises, with the request's binding left on: what logs the error next
    runs in the request's task after the middleware (the server's "Exception
    in ASGI application" traceback, that 500 handler), and its lines carry the
    id.  Servers run each request in a task of its own, whose context ends
    with it; a caller that awaits the application in its own task
    (``httpx.ASGITransport``) keeps the binding after such an error.

    Values passed to the validator are Latin-1 decoded header bytes; whatever
    the validator says, a value with a space, a control or a non-ASCII
    character is refused, and values longer than *max_length* are refused
    before the validator runs.  ``validator=None`` accepts every value that
    passes those checks.  *transformer*, when given, is applied to the id
    picked (accepted or generated) before it is bound and echoed; like
    *generator*'s, its result must be printable ASCII without spaces.

    *New in version 0.1.0.*

    :raises ctxlog.ContextError: an option is invalid (at construction), or
        the *generator* or *transformer* returns something that cannot be
        sent in a header.
    """

    __slots__ = ("_policy", "app", "error_response")

    def __init__(
        self,
        app: ASGIApp,
        *,
        header: str = REQUEST_ID_HEADER,
        key: str = "request_id",
        validator: Callable[[str], bool] | None = is_valid_request_id,
        generator: Callable[[], str] = new_request_id,
        transformer: Callable[[str], str] | None = None,
        echo: bool = True,
        request_fields: Iterable[str] = (),
        traceparent: bool = True,
        trace_key: str = "trace_id",
        max_length: int = MAX_REQUEST_ID_LENGTH,
        error_response: bool = True,
        update_request_header: bool = True,
        baggage: Iterable[str] = (),
    ) -> None:
        check_flag(error_response, "error_response", "RequestContextMiddleware")
        self.app = app
        self.error_response = error_response
        self._policy = Policy(
            header=header,
            key=key,
            validator=validator,
            generator=generator,
            transformer=transformer,
            echo=echo,
            request_fields=request_fields,
            traceparent=traceparent,
            trace_key=trace_key,
            max_length=max_length,
            update_request_header=update_request_header,
            baggage=baggage,
            where="RequestContextMiddleware",
        )

    async def __call__(  # noqa: PLR0915 -- the per-request path, kept in one frame on purpose
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":  # noqa: PLR1714 -- two compares beat a set lookup here
            await self.app(scope, receive, send)
            return
        policy = self._policy
        wanted = policy.header_bytes
        raw_id: bytes | None = None
        id_count = 0
        raw_traceparent: bytes | None = None
        traceparent_count = 0
        # ASGI servers give header names lowercased (the spec requires it).
        for name, value in scope.get("headers", ()):
            if name == wanted:
                raw_id = value
                id_count += 1
            elif name == b"traceparent":
                raw_traceparent = value
                traceparent_count += 1
        if policy.request_fields:
            client = scope.get("client")
            incoming = policy.incoming(
                raw_id,
                id_count,
                raw_traceparent,
                traceparent_count,
                method=scope.get("method"),
                path=scope.get("path"),
                client=f"{client[0]}:{client[1]}" if client else None,
            )
        else:
            incoming = policy.incoming(raw_id, id_count, raw_traceparent, traceparent_count)
        if policy.baggage:
            policy.add_baggage(
                incoming, [v for n, v in scope.get("headers", ()) if n == b"baggage"]
            )
        pair = (wanted, incoming[1].encode("ascii"))
        if policy.update_request_header and (id_count != 1 or raw_id != pair[1]):
            # The application reads the id the lines carry, never a rejected one.
            # The one scope, with a new headers list (the server's is left as it
            # sent it): what the application writes into the scope (the router's
            # "route", "endpoint" and "path_params", an auth "user") must reach
            # the middlewares around this one.
            kept = [h for h in scope.get("headers", ()) if h[0] != wanted]
            scope["headers"] = [*kept, pair]
        echo = policy.echo
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] in _START_TYPES:
                started = True
                if message.get("status", 200) >= 500:
                    store.fail(unit[UNIT])  # a failed request, for what waits on its outcome
                if echo:
                    headers = message.get("headers") or ()
                    if not isinstance(headers, list | tuple):
                        # Any iterable, says the spec (a generator reads once): read
                        # it here and send what was read.
                        headers = list(headers)
                        message = {**message, "headers": headers}
                    for name, _ in headers:
                        # The spec wants lowercase names here too; not every app obeys.
                        if name.lower() == wanted:
                            break
                    else:
                        # A new message, not the app's own with its headers changed:
                        # an app may send one dict for every request (a module-level
                        # response), and the next request would find this id in it.
                        message = {**message, "headers": [*headers, pair]}
            await send(message)

        # The Starlette application this middleware runs inside, if any: read
        # now, since one the application holds writes itself into the scope.
        outside = scope.get("app")
        unit = policy.open(incoming, _logger)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # The binding stays on while the exception propagates: what logs it
            # next runs in this task, after this frame (uvicorn's "Exception in
            # ASGI application" line, the 500 handler of Starlette's
            # ServerErrorMiddleware, which sits outside added middlewares), and
            # must carry the id.  Servers run each request in a task of its own,
            # whose context ends with it; the next request sets every key anew.
            store.fail(unit[UNIT])
            store.end(unit[UNIT])
            if (
                not started
                and self.error_response
                and kind == "http"
                and not _answered_outside(outside)
            ):
                await _send_error(send, pair if echo else None)
            raise
        except BaseException:
            store.close_unit(unit)
            raise
        store.close_unit(unit)

    def __repr__(self) -> str:
        return f"ctxlog.asgi.RequestContextMiddleware({self.app!r}, {self._policy.describe()!r})"


def _answered_outside(app: object) -> bool:
    """Whether the Starlette application this middleware runs inside answers
    an unhandled error with a response of its own making.

    ``app.add_middleware(...)`` puts this middleware inside Starlette's stack,
    under its ``ServerErrorMiddleware``, which answers an error that reaches it
    with the application's ``exception_handlers[500]`` or ``[Exception]``
    handler, or its debug page — but only if no response was started.  A
    ``500`` sent here first would silently replace that response.  Starlette
    puts itself in ``scope["app"]`` before its stack runs: *app* is what was
    there when this middleware was called (an application this middleware
    wraps writes itself there later, and has run its handler by the time
    its error gets here); read without importing Starlette.
    """
    if app is None:
        return False
    if getattr(app, "debug", False) is True:
        return True
    handlers = getattr(app, "exception_handlers", None)
    return isinstance(handlers, Mapping) and (500 in handlers or Exception in handlers)


async def _send_error(send: Send, pair: tuple[bytes, bytes] | None) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_ERROR_BODY)).encode("ascii")),
    ]
    if pair is not None:
        headers.append(pair)
    try:
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": _ERROR_BODY})
    except Exception:  # noqa: BLE001, S110 -- the client may be gone; the original error is what matters
        pass
