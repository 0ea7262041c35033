"""WSGI request-context middleware: Flask, Django's WSGI handler, any WSGI app.

WSGI servers may call the application, iterate its response and call
``close()`` from different contexts (and some from different threads), so the
middleware does not pair ``set``/``reset`` tokens across those calls.  It owns
one `contextvars.Context` per request and runs the application call
and every step of the response inside it: the binding holds while the body is
produced, and the server's own context (the worker thread's) is never touched,
so the next request on that thread starts clean.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from contextvars import Context, copy_context
from types import TracebackType
from typing import Any, Final, TypeAlias

from ctxlog._errors import check_flag
from ctxlog._middleware import BODY_ERROR, ContextBody, Incoming, Policy
from ctxlog._store import UNIT, UnitEntry, store
from ctxlog.headers import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    is_valid_request_id,
    new_request_id,
)

__all__ = ["RequestContextMiddleware", "StartResponse", "WSGIApp", "WSGIEnvironment"]

WSGIEnvironment: TypeAlias = dict[str, Any]
"""The WSGI ``environ``."""
StartResponse: TypeAlias = Callable[..., Callable[[bytes], object]]
"""The WSGI ``start_response`` callable: ``(status, headers, exc_info=None) -> write``."""
WSGIApp: TypeAlias = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]
"""A WSGI application."""

_ExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType]

_logger: Final = logging.getLogger("ctxlog.wsgi")


class RequestContextMiddleware:
    """Bind a request id (and trace id) for the whole of every WSGI request.

    The WSGI twin of [`ctxlog.asgi.RequestContextMiddleware`][ctxlog.asgi.RequestContextMiddleware],
    with the
    same options and the same rules for the header (exactly one value that
    passes *validator*, else a generated id and at most one escaped warning on
    the ``ctxlog.wsgi`` logger), the ``traceparent`` trace id, the
    *request_fields*, the *baggage* keys, the echoed response header,
    ``validator=None`` and *transformer*.  A unit of work
    ([`ctxlog.scope`][ctxlog.scope]) is open for each request.

    The application call and every step of the response iterable (``next`` and
    ``close``) run in one `contextvars.Context` the middleware owns for
    the request, so the binding holds while a streamed body is produced, and
    ends with ``close()``: nothing is set in the server's worker thread, and
    the next request it serves starts clean.  Threads a view starts with
    [`ctxlog.Thread`][ctxlog.Thread] inherit the binding.

    With Flask:

    ```python
    app.wsgi_app = RequestContextMiddleware(app.wsgi_app)
    ```

    Repeated headers reach a WSGI application joined by commas: a value
    holding a comma is refused as sent more than once (whatever the
    validator, ``validator=None`` too, as the ASGI middleware refuses
    repeats), and replaced like any invalid value.
    With *update_request_header* (the default) the application finds the
    chosen id in ``environ`` under the header's key, never a rejected or
    missing value.  When the application raises, the middleware logs the
    error on the ``ctxlog.wsgi`` logger (``"Exception in WSGI application"``,
    with the traceback, in the request's context: the line carries the id)
    and answers a plain ``500`` carrying the header, unless *error_response*
    is off (the exception then reaches the server, whose line carries no id).
    An exception raised while the response body is produced (by the
    iterable's ``next`` or ``close``: a generator, Flask's
    ``stream_with_context``) is logged there too, in the request's context
    (``"Exception while producing the response body"``), then raised on to
    the server, as without the middleware.

    *New in version 0.1.0.*

    :raises ctxlog.ContextError: an option is invalid (at construction), or
        the *generator* or *transformer* returns something that cannot be
        sent in a header.
    """

    __slots__ = ("_policy", "app", "error_response")

    def __init__(
        self,
        app: WSGIApp,
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

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        policy = self._policy
        ctx = copy_context()
        incoming = policy.from_environ(environ)
        scope = ctx.run(_enter, policy, incoming)
        if policy.update_request_header:
            # The application reads the id the lines carry, never a rejected one.
            environ[policy.environ_key] = incoming[1]
        pair = (policy.header, incoming[1])
        wanted = policy.header_lower if policy.echo else None

        def app_start(
            status: str, headers: list[tuple[str, str]], exc_info: _ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            if status[:1] == "5" and scope.entry is not None:
                store.fail(scope.entry[UNIT])  # a failed request, for what waits on its outcome
            if wanted is not None and not any(name.lower() == wanted for name, _ in headers):
                headers = [*headers, pair]
            return start_response(status, headers, exc_info)

        try:
            result = ctx.run(self.app, environ, app_start)
        except Exception:
            if scope.entry is not None:
                store.fail(scope.entry[UNIT])
            if not self.error_response:
                ctx.run(_leave, scope)
                raise
            # Logged here, in the request's context: the server would log it
            # after this call, where the id is gone.  Then a 500 carrying the id.
            ctx.run(_logger.error, "Exception in WSGI application", exc_info=True)
            ctx.run(_leave, scope)
            return _error_response(start_response, policy, incoming[1])
        except BaseException:
            ctx.run(_leave, scope)
            raise
        return _ContextIterable(result, ctx, scope)

    def __repr__(self) -> str:
        return f"ctxlog.wsgi.RequestContextMiddleware({self.app!r}, {self._policy.describe()!r})"


_ERROR_BODY: Final = b"Internal Server Error"


def _error_response(start_response: StartResponse, policy: Policy, request_id: str) -> list[bytes]:
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(_ERROR_BODY))),
    ]
    if policy.echo:
        headers.append((policy.header, request_id))
    # exc_info: allowed to replace a response the application started, as
    # long as nothing was sent (WSGI sends headers with the first body chunk).
    start_response("500 Internal Server Error", headers, sys.exc_info())
    return [_ERROR_BODY]


class _Scope:
    """The request's unit of work, opened by `_enter`, closed once by `_leave`."""

    __slots__ = ("entry",)

    def __init__(self, entry: UnitEntry) -> None:
        self.entry: UnitEntry | None = entry


def _enter(policy: Policy, incoming: Incoming) -> _Scope:
    """Runs inside the request's own Context: open its unit of work."""
    return _Scope(policy.open(incoming, _logger))


def _leave(scope: _Scope) -> None:
    """Runs inside the request's own Context: close the unit, once."""
    entry, scope.entry = scope.entry, None
    if entry is not None:
        store.close_unit(entry)


class _ContextIterable(ContextBody[bytes]):
    """The application's response, each step run in the request's Context;
    ``close()`` ends the request's unit of work."""

    __slots__ = ("_scope",)

    def __init__(self, result: Iterable[bytes], ctx: Context, scope: _Scope) -> None:
        super().__init__(result, ctx, _logger)
        self._scope = scope

    def close(self) -> None:
        """Close the application's response, then end the request's binding."""
        try:
            close = getattr(self._source, "close", None)
            if close is not None:
                try:
                    self._ctx.run(close)
                except Exception:
                    self._ctx.run(_logger.error, BODY_ERROR, exc_info=True)
                    raise
        finally:
            self._ctx.run(_leave, self._scope)
