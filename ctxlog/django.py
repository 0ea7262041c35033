"""Django: ``ctxlog.django.RequestContextMiddleware``, named in ``settings.MIDDLEWARE``.

Every line of a request carries its id: the view's, the ORM's
(``django.db.backends``), Django's own ``django.request`` lines — the 500
traceback and also the 4xx warning Django logs *after* the middleware chain
has returned — and code run through ``sync_to_async`` / ``async_to_sync``.

The middleware is sync- and async-capable.  It opens the request's unit of
work ([`ctxlog.scope`][ctxlog.scope]) with the same validation and options as the ASGI
and WSGI middlewares (one engine, `ctxlog._middleware.Policy`), read
from the ``CTXLOG`` settings dict, and closes it when the chain returns,
unless the response outlives the chain: a streamed body (produced by the
server afterwards) and every response under
[`get_asgi_application`][ctxlog.django.get_asgi_application]
(sent afterwards, with the server's access line) keep the unit open, in a
copy of the request's context, until Django closes the response.  A filter on
the ``django.request`` logger gives the lines Django writes after the chain
(the 4xx warning names its request) the context the request ended with.

Django is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import Context, copy_context
from typing import Any, Final

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings
    from django.utils.module_loading import import_string
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.django needs Django (>= 4.2), which is not installed: "
        "pip install 'ctxlog-correlation[django]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog._configs import load_config
from ctxlog._errors import ContextError
from ctxlog._middleware import ContextAsyncBody, ContextBody, InContext, Policy
from ctxlog._store import UNIT, Unit, UnitEntry, store
from ctxlog.asgi import ASGIApp, Message, Receive, Scope, Send
from ctxlog.headers import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    is_valid_request_id,
    new_request_id,
)

__all__ = ["OPTIONS", "RequestContextMiddleware", "get_asgi_application", "logging_settings"]

_logger: Final = logging.getLogger("ctxlog.django")

OPTIONS: Final[Mapping[str, Any]] = {
    "header": REQUEST_ID_HEADER,
    "key": "request_id",
    "validator": is_valid_request_id,
    "generator": new_request_id,
    "transformer": None,
    "echo": True,
    "request_fields": (),
    "traceparent": True,
    "trace_key": "trace_id",
    "max_length": MAX_REQUEST_ID_LENGTH,
    "update_request_header": True,
    "baggage": (),
    "ignore_urls": (),
}
"""The keys of the ``CTXLOG`` settings dict, and their defaults: the options of
[`ctxlog.asgi.RequestContextMiddleware`][ctxlog.asgi.RequestContextMiddleware], plus
``ignore_urls``.
``validator``, ``generator`` and ``transformer`` may be dotted paths.
"""

#: The attribute of a Django request that keeps the context it ended with.
_STASH: Final = "_ctxlog_context"

#: The ASGI scope key under which [`get_asgi_application`][ctxlog.django.get_asgi_application] hands
#: the
#: middleware a request's `_Held`.
_HOLD: Final = "ctxlog.django"


class _AfterTheChain(logging.Filter):
    """On the ``django.request`` logger: a record that names its request (Django
    passes ``extra={"request": request}``) gets the context that request ended
    with, for what Django logs after the middleware chain has returned (the 4xx
    warning).  Values the record or the current context already hold win."""

    def filter(self, record: logging.LogRecord) -> bool:
        stash = getattr(record.__dict__.get("request"), _STASH, None)
        if stash:
            attrs = record.__dict__
            for key, value in stash.items():
                if key not in attrs:
                    attrs[key] = value
        return True


_install_lock: Final = threading.Lock()


def _install_filter() -> None:
    logger = logging.getLogger("django.request")
    with _install_lock:
        if not any(isinstance(f, _AfterTheChain) for f in logger.filters):
            logger.addFilter(_AfterTheChain())


def _options() -> dict[str, Any]:
    given = getattr(settings, "CTXLOG", None) or {}
    if not isinstance(given, Mapping):
        msg = f"settings.CTXLOG must be a dict of options, not {type(given).__name__}."
        raise ContextError(msg)
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        msg = (
            f"settings.CTXLOG: unknown option(s) {', '.join(map(repr, unknown))}; "
            f"the options are {', '.join(OPTIONS)}."
        )
        raise ContextError(msg)
    options = {**OPTIONS, **given}
    for name in ("validator", "generator", "transformer"):
        if isinstance(options[name], str):
            try:
                options[name] = import_string(options[name])
            except ImportError as exc:
                msg = f"settings.CTXLOG[{name!r}] = {options[name]!r} cannot be imported: {exc}"
                raise ContextError(msg) from None
    ignore = options["ignore_urls"]
    if isinstance(ignore, str) or not isinstance(ignore, Iterable):
        msg = f"settings.CTXLOG['ignore_urls'] = {ignore!r}: give a list of URL paths."
        raise ContextError(msg)
    options["ignore_urls"] = frozenset(str(path).strip("/") for path in ignore)
    return options


class RequestContextMiddleware:
    """Bind a request id (and trace id) for every line of a Django request.

    Name it first in ``settings.MIDDLEWARE``:

    ```python
    MIDDLEWARE = ["ctxlog.django.RequestContextMiddleware", ...]
    ```

    and configure it, if the defaults do not fit, with a ``CTXLOG`` dict in
    the settings (keys: [`OPTIONS`][ctxlog.django.OPTIONS]).  The request id is taken from the
    header when exactly one valid value is sent, else generated (with one
    escaped warning on the ``ctxlog.django`` logger for a rejected value).
    The header is read as ``request.headers`` reads it: also from a ``META``
    key spelled ``HTTP_X-Request-ID``, as Django's test ``Client`` passes
    ``**{"HTTP_X-Request-ID": value}``.  The id is echoed in the response, and
    ``request.META`` holds it under the header's key, its other spellings
    removed, so ``request.headers`` finds it too (``update_request_header``).
    Paths in ``ignore_urls`` (with
    or without slashes) bind no id and echo none (a unit of work is still open
    for them: ``annotate()`` and ``@memoize`` work there).

    Sync and async capable (Django calls it the way the rest of the chain
    runs, never switching for it).  The unit of work ends when the chain
    returns; what Django logs after that on ``django.request`` (the 4xx
    warning) gets the context the request ended with from the request itself.
    A streamed body (``StreamingHttpResponse``, sync or async iterator) is
    produced after the chain: its every step runs in a copy of the request's
    context, where the unit stays open until Django closes the response
    (its closers and ``request_finished`` run there too), so the body's lines
    carry the id, also when the server iterates it in another thread or task;
    the server's own context is restored when the chain returns.  An error
    the body raises is logged on ``ctxlog.django`` in that context
    (``"Exception while producing the response body"``, with the traceback),
    then raised on to the server.

    *New in version 0.1.0.*

    :raises ContextError: an option in ``settings.CTXLOG`` is invalid.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        options = _options()
        self.get_response = get_response
        self.ignore_urls: frozenset[str] = options.pop("ignore_urls")
        self._policy = Policy(**options, where="settings.CTXLOG: RequestContextMiddleware")
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
        _install_filter()

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        if request.path_info.strip("/") in self.ignore_urls:
            with _unbound(self._policy):
                return self.get_response(request)
        incoming = self._begin(request)
        entry = self._policy.open(incoming, _logger)
        try:
            response = self.get_response(request)
        except BaseException as exc:
            if isinstance(exc, Exception):
                store.fail(entry[UNIT])
            _end(request, entry)
            raise
        _finish(request, entry, response)
        return self._echo(response, incoming[1])

    async def __acall__(self, request: Any) -> Any:
        if request.path_info.strip("/") in self.ignore_urls:
            with _unbound(self._policy):
                return await self.get_response(request)
        incoming = self._begin(request)
        entry = self._policy.open(incoming, _logger)
        try:
            response = await self.get_response(request)
        except BaseException as exc:
            if isinstance(exc, Exception):
                store.fail(entry[UNIT])
            _end(request, entry)
            raise
        _finish(request, entry, response)
        return self._echo(response, incoming[1])

    def _begin(self, request: Any) -> Any:
        policy = self._policy
        meta = request.META
        keys = _header_keys(meta, policy)
        incoming = policy.from_environ(meta, keys[-1] if keys else None)
        if policy.update_request_header:
            for key in keys:
                del meta[key]
            meta[policy.environ_key] = incoming[1]
        return incoming

    def _echo(self, response: Any, request_id: str) -> Any:
        if self._policy.echo and not response.has_header(self._policy.header):
            response[self._policy.header] = request_id
        return response

    def __repr__(self) -> str:
        return f"ctxlog.django.RequestContextMiddleware({self._policy.describe()!r})"


def _header_keys(meta: Mapping[str, Any], policy: Policy) -> list[str]:
    """The keys of *meta* that ``request.headers`` reads the id header from, in
    order: it finds the value of the last one.

    Servers spell it ``HTTP_X_REQUEST_ID``, but ``request.headers`` takes any
    ``HTTP_`` key whose rest, ``_`` read as ``-``, names the header in any case:
    Django's test ``Client`` passes ``**{"HTTP_X-Request-ID": value}`` into
    ``META`` verbatim, and tests (django-guid's among them) send ids that way.
    """
    size = len(policy.environ_key)
    wanted = policy.header_lower.replace("_", "-")
    return [
        key
        for key in meta
        if len(key) == size
        and key.startswith("HTTP_")
        and key[5:].replace("_", "-").lower() == wanted
    ]


@contextlib.contextmanager
def _unbound(policy: Policy) -> Iterator[None]:
    """An ignored URL: a unit of work (``annotate()`` and ``@memoize`` keep
    working), but no id bound, none echoed."""
    entry = store.open_unit({}, drop=policy.managed)
    try:
        yield
    finally:
        store.close_unit(entry)


def _end(request: Any, entry: UnitEntry) -> None:
    """Keep the context the request ends with on it, then close its unit."""
    setattr(request, _STASH, dict(store.merged()))
    try:
        store.close_unit(entry)
    except (ValueError, RuntimeError):  # pragma: no cover -- a chain ends where it began
        store.end(entry[UNIT])


class _Held:
    """What [`get_asgi_application`][ctxlog.django.get_asgi_application] puts in a request's ASGI
    scope: the
    request's context, once the chain has returned, to send the response in."""

    __slots__ = ("ctx", "unit")

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.unit: Unit | None = None


def _finish(request: Any, entry: UnitEntry, response: Any) -> None:
    """The chain has returned *response*: end the request's unit, or, when the
    response outlives the chain, hand the unit on to it.

    A streamed body is produced after the chain, by the server (in its worker
    thread, or in an executor's thread, or in the handler's task under ASGI);
    under [`get_asgi_application`][ctxlog.django.get_asgi_application] the server writes its access
    line as the
    response is sent.  The unit then stays open in a copy of the request's
    context, in which the body is produced, ``response.close()`` runs (its
    closers and ``request_finished``) and, under
    [`get_asgi_application`][ctxlog.django.get_asgi_application],
    the response is sent; ``close()`` ends it.  The caller's context is
    restored here, so nothing reaches the next request its thread serves.
    """
    if getattr(response, "status_code", 200) >= 500:
        store.fail(entry[UNIT])  # a failed request, for what waits on its outcome
    scope = getattr(request, "scope", None)
    held = scope.get(_HOLD) if isinstance(scope, dict) else None
    if held is None and not response.streaming:
        _end(request, entry)
        return
    setattr(request, _STASH, dict(store.merged()))
    ctx = copy_context()
    unit = entry[UNIT]
    try:
        store.leave_unit(entry)
    except (ValueError, RuntimeError):  # pragma: no cover -- a chain ends where it began
        store.end(unit)
        return
    # A file (FileResponse) is sent by the server as it is (sendfile); it logs nothing.
    if response.streaming and getattr(response, "file_to_stream", None) is None:
        content = response.streaming_content
        response.streaming_content = (
            ContextAsyncBody(content, ctx, _logger)
            if response.is_async
            else ContextBody(content, ctx, _logger)
        )
    close = response.close

    def close_in_request() -> None:
        try:
            ctx.run(close)
        finally:
            store.end(unit)

    response.close = close_in_request
    if held is not None:
        held.ctx, held.unit = ctx, unit


def get_asgi_application() -> ASGIApp:
    """Django's ASGI application, for ``asgi.py``, sending each response in its
    request's context: the server's own lines about the request (uvicorn's
    access line) carry its id.

    ```python
    # mysite/asgi.py
    import os

    import ctxlog.django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    application = ctxlog.django.get_asgi_application()
    ```

    Use it in place of ``django.core.asgi.get_asgi_application()`` (which it
    calls), with [`RequestContextMiddleware`][ctxlog.django.RequestContextMiddleware]
    in ``settings.MIDDLEWARE``, and start the server with ctxlog's logging
    configuration (``uvicorn mysite.asgi:application --log-config log.json``).
    The middleware hands the request's context on when the chain returns; the
    response's messages are sent in it, and it ends when Django closes the
    response.  When sending it fails (a streamed body raised), the request's
    context is left on while the error goes on to the server, so its
    traceback line ("Exception in ASGI application") carries the id too.
    Scopes other than ``http`` go to Django as they are.

    *New in version 0.1.0.*
    """
    from django.core.asgi import get_asgi_application as django_application  # noqa: PLC0415 -- sets Django up: at the call, as Django's own does

    return _HoldingApplication(django_application())


class _HoldingApplication:
    """Django's ASGI application, each response sent in its request's context."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        held = _Held()
        scope[_HOLD] = held

        async def send_in_request(message: Message) -> None:
            ctx = held.ctx
            if ctx is None:  # an answer made before the chain ran (a 400, a 413)
                await send(message)
            else:
                await InContext(ctx, functools.partial(send, message))

        try:
            await self.app(scope, receive, send_in_request)
        except Exception:
            if held.ctx is not None:
                # Left bound, as ctxlog.asgi leaves it: the server logs the error
                # next, in this request's task, whose context ends with it.
                store.write(held.ctx.run(store.read))
            raise
        finally:
            # Django closes the response, which ends the unit; not when sending
            # it failed (the client left, the body raised).
            if held.unit is not None:
                store.end(held.unit)

    def __repr__(self) -> str:
        return f"ctxlog.django.get_asgi_application() around {self.app!r}"


def logging_settings(level: str = "INFO", *, sql: bool = False) -> dict[str, Any]:
    """A ``LOGGING`` dict for ``settings.py``: JSON lines on stderr with the context.

    ``LOGGING = ctxlog.django.logging_settings()``.  Django's own loggers
    (``django``, ``django.request``) reach the JSON handler; *sql* turns on
    ``django.db.backends`` at ``DEBUG`` (Django logs queries only with
    ``DEBUG = True``).

    *New in version 0.1.0.*
    """
    config = load_config("logging-json.json")
    config["root"]["level"] = level
    config["loggers"] = {
        # Django's default configuration gives "django" handlers of its own
        # (console in DEBUG, mail_admins): the JSON handler is the one here.
        "django": {"handlers": ["stderr"], "level": level, "propagate": False},
        "django.db.backends": {
            "handlers": ["stderr"],
            "level": "DEBUG" if sql else level,
            "propagate": False,
        },
    }
    return config
