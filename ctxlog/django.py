"""Django: ``ctxlog.django.RequestContextMiddleware``, named in ``settings.MIDDLEWARE``.

Every line of a request carries its id: the view's, the ORM's
(``django.db.backends``), Django's own ``django.request`` lines — the 500
traceback and also the 4xx warning Django logs *after* the middleware chain
has returned — and code run through ``sync_to_async`` / ``async_to_sync``.

The middleware is sync- and async-capable.  It opens the request's unit of
work ([`ctxlog.scope`][ctxlog.scope]) with the same validation and options as the ASGI
and WSGI middlewares (one engine, `ctxlog._middleware.Policy`), read
from the ``CTXLOG`` settings dict, and closes it when the chain returns.  A
filter on the ``django.request`` logger gives the lines Django writes after
that (the 4xx warning names its request) the context the request ended with.

Django is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
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
from ctxlog._middleware import Policy
from ctxlog._store import UNIT, UnitEntry, store
from ctxlog.headers import (
    MAX_REQUEST_ID_LENGTH,
    REQUEST_ID_HEADER,
    is_valid_request_id,
    new_request_id,
)

__all__ = ["OPTIONS", "RequestContextMiddleware", "logging_settings"]

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
    "ignore_urls": (),
}
"""The keys of the ``CTXLOG`` settings dict, and their defaults: the options of
[`ctxlog.asgi.RequestContextMiddleware`][ctxlog.asgi.RequestContextMiddleware], plus
``ignore_urls``.
``validator``, ``generator`` and ``transformer`` may be dotted paths.
"""

#: The attribute of a Django request that keeps the context it ended with.
_STASH: Final = "_ctxlog_context"


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
    escaped warning on the ``ctxlog.django`` logger for a rejected value); it
    is echoed in the response, and ``request.META`` holds it under the
    header's key (``update_request_header``).  Paths in ``ignore_urls`` (with
    or without slashes) bind no id and echo none (a unit of work is still open
    for them: ``annotate()`` and ``@memoize`` work there).

    Sync and async capable (Django calls it the way the rest of the chain
    runs, never switching for it).  The unit of work ends when the chain
    returns; what Django logs after that on ``django.request`` (the 4xx
    warning) gets the context the request ended with from the request itself.

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
        finally:
            _end(request, entry)
        return self._echo(response, incoming[1])

    async def __acall__(self, request: Any) -> Any:
        if request.path_info.strip("/") in self.ignore_urls:
            with _unbound(self._policy):
                return await self.get_response(request)
        incoming = self._begin(request)
        entry = self._policy.open(incoming, _logger)
        try:
            response = await self.get_response(request)
        finally:
            _end(request, entry)
        return self._echo(response, incoming[1])

    def _begin(self, request: Any) -> Any:
        incoming = self._policy.from_environ(request.META)
        if self._policy.update_request_header:
            request.META[self._policy.environ_key] = incoming[1]
        return incoming

    def _echo(self, response: Any, request_id: str) -> Any:
        if self._policy.echo and not response.has_header(self._policy.header):
            response[self._policy.header] = request_id
        return response

    def __repr__(self) -> str:
        return f"ctxlog.django.RequestContextMiddleware({self._policy.describe()!r})"


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
