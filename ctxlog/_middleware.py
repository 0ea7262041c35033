"""The engine the request-context middlewares share: options, the request id
and trace id of one request, and its unit of work.

[`ctxlog.asgi`][ctxlog.asgi] and [`ctxlog.wsgi`][ctxlog.wsgi] read the headers the way their
protocol gives them and hand them to one `Policy`; it validates the
options once, picks the request id, and opens and closes the request's unit
of work ([`ctxlog.scope`][ctxlog.scope]) through the store.
"""

from __future__ import annotations

import logging
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from contextvars import Context
from typing import Any, Final, Generic, TypeAlias, TypeVar

from ctxlog._errors import ContextError, check_collection, check_flag
from ctxlog._store import UnitEntry, store
from ctxlog.headers import (
    ALLOWED_BYTES,
    ALLOWED_CHARS,
    MAX_REQUEST_ID_LENGTH,
    REQUEST_FIELDS,
    check_baggage_keys,
    check_header_name,
    escape_rejected,
    generate_request_id,
    is_valid_request_id,
    match_request_id,
    parse_baggage,
    parse_traceparent,
    safe_field,
    transform_request_id,
)

__all__ = ["BODY_ERROR", "ContextAsyncBody", "ContextBody", "InContext", "Incoming", "Policy"]

#: What a middleware binds for one request: (values to bind, the request id,
#: the incoming trace flags or ``None`` when no traceparent came, why a header
#: value was rejected or ``None``).  A plain tuple: it is built on every request.
Incoming: TypeAlias = tuple[dict[str, Any], str, str | None, str | None]

_T = TypeVar("_T")

#: What a middleware logs, in the request's context, when producing a response
#: body raises; the error then goes on to the server.
BODY_ERROR: Final = "Exception while producing the response body"


class Policy:
    """The options shared by the ASGI and WSGI middlewares, and the per-request work."""

    __slots__ = (
        "_default_limit",
        "baggage",
        "echo",
        "environ_key",
        "generator",
        "header",
        "header_bytes",
        "header_lower",
        "key",
        "managed",
        "max_length",
        "request_fields",
        "trace_key",
        "traceparent",
        "transformer",
        "update_request_header",
        "validator",
    )

    def __init__(
        self,
        *,
        header: str,
        key: str,
        validator: Callable[[str], bool] | None,
        generator: Callable[[], str],
        transformer: Callable[[str], str] | None,
        echo: bool,
        request_fields: Iterable[str],
        traceparent: bool,
        trace_key: str,
        max_length: int,
        update_request_header: bool,
        baggage: Iterable[str] = (),
        where: str,
    ) -> None:
        check_header_name(header, where)
        for name, option in (("key", key), ("trace_key", trace_key)):
            if not isinstance(option, str) or not option:
                msg = f"{where}({name}={option!r}): give a non-empty context key."
                raise ContextError(msg)
        check_collection(request_fields, "request_fields", where)
        fields = tuple(request_fields)
        unknown = set(fields) - REQUEST_FIELDS
        if unknown:
            msg = (
                f"{where}(request_fields=...): unknown field(s) {sorted(unknown)}; "
                f"choose among {sorted(REQUEST_FIELDS)}."
            )
            raise ContextError(msg)
        check_flag(echo, "echo", where)
        check_flag(traceparent, "traceparent", where)
        check_flag(update_request_header, "update_request_header", where)
        if not isinstance(max_length, int) or max_length < 1:
            msg = f"{where}(max_length={max_length!r}): give a positive int."
            raise ContextError(msg)
        functions: tuple[tuple[str, object], ...] = (
            ("validator", validator),
            ("generator", generator),
            ("transformer", transformer),
        )
        for name, function in functions:
            # Found out here, not as a rejected header (or a 500) on every request.
            # validator=None: any value the safety floor lets through;
            # transformer=None: the id as it is.
            if function is None and name != "generator":
                continue
            if not callable(function):
                msg = (
                    f"{where}({name}={function!r}): give a function, not {type(function).__name__}."
                )
                raise ContextError(msg)
        self.header = header
        self.header_lower = header.lower()
        self.header_bytes = self.header_lower.encode("ascii")
        #: The header's key in a WSGI environ (and Django's ``request.META``).
        self.environ_key = "HTTP_" + header.upper().replace("-", "_")
        self.key = key
        self.validator = validator
        self.generator = generator
        self.transformer = transformer
        self.echo = echo
        self.request_fields = fields
        self.traceparent = traceparent
        self.trace_key = trace_key
        self.max_length = max_length
        self.update_request_header = update_request_header
        # With the default validator, a header value of bytes of its alphabet and
        # of a length both limits allow is accepted without decoding it first:
        # the same verdict, a third of the cost.
        self._default_limit = (
            min(max_length, MAX_REQUEST_ID_LENGTH) if validator is is_valid_request_id else 0
        )
        managed = {key, *fields}
        if traceparent:
            managed.add(trace_key)
        #: The W3C Baggage keys bound from the ``baggage`` header.
        self.baggage: frozenset[str] = frozenset(check_baggage_keys(baggage, where))
        taken = self.baggage & managed
        if taken:
            msg = (
                f"{where}(baggage=...): {sorted(taken)} already hold the request id, the "
                "trace id or a request field; a baggage entry must not replace them."
            )
            raise ContextError(msg)
        self.managed = frozenset(managed | self.baggage)

    def accept(self, raw: str | bytes | None, count: int) -> tuple[str, str | None]:
        """Pick the request id from the header value *raw*, sent *count* times.

        Returns the id and, when a value was rejected, why.
        """
        value, rejection = self._check(raw, count)
        if value is None:
            value = generate_request_id(self.generator)
        if self.transformer is not None:
            value = transform_request_id(self.transformer, value)
        return value, rejection

    def _check(self, raw: str | bytes | None, count: int) -> tuple[str | None, str | None]:
        if raw is None or count == 0:
            return None, None
        if count > 1:
            return None, f"sent {count} times"
        size = len(raw)
        if (
            0 < size <= self._default_limit
            and isinstance(raw, bytes)
            and not raw.translate(None, ALLOWED_BYTES)
        ):
            return raw.decode("ascii"), None
        if size == 0 or size > self.max_length:
            return None, "empty value" if size == 0 else (
                f"{size} characters, over the {self.max_length} limit, "
                f"starting {escape_rejected(raw)}"
            )
        return self._validate(raw.decode("latin-1") if isinstance(raw, bytes) else raw)

    def _validate(self, value: str) -> tuple[str | None, str | None]:
        """The safety floor, then the validator, on a value of an allowed length."""
        try:
            ok = value.isascii() and value.isprintable() and " " not in value
            if self.validator is not None:
                ok = ok and bool(self.validator(value))
        except Exception as exc:  # noqa: BLE001 -- a broken validator must not break the request
            return None, f"the validator raised {type(exc).__name__}"
        return (value, None) if ok else (None, f"invalid value {escape_rejected(value)}")

    def incoming(
        self,
        raw_id: str | bytes | None,
        id_count: int,
        raw_traceparent: str | bytes | None,
        traceparent_count: int,
        *,
        method: str | None = None,
        path: str | None = None,
        client: str | None = None,
    ) -> Incoming:
        """Everything to bind for one request (request id, trace id, request fields)."""
        request_id, rejection = self.accept(raw_id, id_count)
        values: dict[str, Any] = {self.key: request_id}
        # None, not "01": the unit then holds no sampling decision of the caller
        # (what goes on to the next service is still "01": Store.trace_flags).
        flags = None
        if self.traceparent and traceparent_count == 1:
            parsed = parse_traceparent(raw_traceparent)
            if parsed is not None:
                values[self.trace_key] = parsed.trace_id
                flags = parsed.flags
        for name in self.request_fields:
            if name == "method" and method is not None:
                values["method"] = method if match_request_id(method) else escape_rejected(method)
            elif name == "path" and path is not None:
                values["path"] = safe_field(path)
            elif name == "client" and client is not None:
                # Not only the server's word: proxy-header middlewares (uvicorn's,
                # werkzeug's ProxyFix) take it from X-Forwarded-For.
                values["client"] = safe_field(client, ALLOWED_CHARS)
        return values, request_id, flags, rejection

    def add_baggage(self, incoming: Incoming, raw: str | bytes | list[bytes] | None) -> None:
        """Add the *baggage* keys found in the ``baggage`` header value(s) *raw*
        to what `incoming` found (a hostile header adds nothing raw)."""
        if raw:
            incoming[0].update(parse_baggage(raw, self.baggage))

    def from_environ(self, environ: Mapping[str, Any], id_key: str | None = None) -> Incoming:
        """`incoming` for a WSGI environ (or Django's ``request.META``);
        *id_key*: where the id header is, when not under `environ_key`."""
        raw = environ.get(self.environ_key if id_key is None else id_key)
        count = 0
        if raw is not None:
            # Whitespace around a field value is not part of it (RFC 9110, 5.5);
            # not every WSGI server strips it.
            raw = raw.strip(" \t")
            # Servers join a repeated header with commas, which is what a comma
            # in a field value means (RFC 9110, 5.3): refused as repeated, as
            # the ASGI middleware refuses repeats, whatever the validator says.
            count = raw.count(",") + 1
        traceparent = environ.get("HTTP_TRACEPARENT")
        traceparent_count = 0
        if traceparent is not None:
            traceparent = traceparent.strip(" \t")
            # Servers join a repeated header with commas; a traceparent never
            # holds one: sent twice, it is refused (as the ASGI middleware does).
            traceparent_count = 2 if "," in traceparent else 1
        path = client = None
        if self.request_fields:
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            if "REMOTE_ADDR" in environ:
                client = f"{environ['REMOTE_ADDR']}:{environ.get('REMOTE_PORT', '')}".rstrip(":")
        incoming = self.incoming(
            raw,
            count,
            traceparent,
            traceparent_count,
            method=environ.get("REQUEST_METHOD"),
            path=path,
            client=client,
        )
        if self.baggage:
            # Servers join repeated header lines with commas, as baggage allows.
            self.add_baggage(incoming, environ.get("HTTP_BAGGAGE"))
        return incoming

    def open(self, incoming: Incoming, logger: logging.Logger) -> UnitEntry:
        """Open the request's unit of work, binding what `incoming` found,
        and log the one warning about a rejected header.

        Every managed key is replaced or removed, never assumed absent: a
        context leaked from an earlier request (CPython gh-140947) cannot show
        through.
        """
        values, request_id, flags, rejection = incoming
        entry = store.open_unit(values, drop=self.managed, trace_flags=flags)
        if rejection is not None:
            logger.warning(
                "Rejected the %s request header (%s); using the generated request id %s",
                self.header,
                rejection,
                request_id,
            )
        return entry

    def describe(self) -> Mapping[str, Any]:
        return {
            "header": self.header,
            "key": self.key,
            "echo": self.echo,
            "request_fields": self.request_fields,
            "traceparent": self.traceparent,
            "update_request_header": self.update_request_header,
            "transformer": self.transformer,
            "baggage": tuple(sorted(self.baggage)),
        }


class ContextBody(Iterator[_T]):
    """A response body each step of which (``iter``, ``next``) runs in *ctx*,
    the request's context, whichever thread and context the server iterates
    it from.  An error raised by a step is logged there, on *logger*
    (`BODY_ERROR`, with the traceback: the line carries the request's
    id), then raised on to the server."""

    __slots__ = ("_ctx", "_iter", "_logger", "_source")

    def __init__(self, source: Iterable[_T], ctx: Context, logger: logging.Logger) -> None:
        self._source = source
        self._ctx = ctx
        self._logger = logger
        self._iter: Iterator[_T] | None = None

    def __iter__(self) -> ContextBody[_T]:
        return self

    def __next__(self) -> _T:
        ctx = self._ctx
        try:
            it = self._iter
            if it is None:
                it = self._iter = ctx.run(iter, self._source)
            return ctx.run(next, it)
        except StopIteration:
            raise
        except Exception:
            ctx.run(store.fail)  # a failed request, for what waits on its outcome
            ctx.run(self._logger.error, BODY_ERROR, exc_info=True)
            raise


class ContextAsyncBody(AsyncIterator[_T]):
    """`ContextBody` for an async iterable: each step of each
    ``__anext__`` runs in *ctx* (see `InContext`)."""

    __slots__ = ("_ctx", "_iter", "_logger", "_source")

    def __init__(self, source: AsyncIterable[_T], ctx: Context, logger: logging.Logger) -> None:
        self._source = source
        self._ctx = ctx
        self._logger = logger
        self._iter: AsyncIterator[_T] | None = None

    def __aiter__(self) -> ContextAsyncBody[_T]:
        return self

    def __anext__(self) -> InContext[_T]:
        return InContext(self._ctx, self._next, self._logger)

    def _next(self) -> Awaitable[_T]:
        it = self._iter
        if it is None:
            it = self._iter = aiter(self._source)
        return it.__anext__()


class InContext(Generic[_T]):
    """An awaitable that runs *make*, and then every step of the awaitable it
    returns, in *ctx*, as an asyncio task runs its coroutine in its own
    context: the code behind it sees the request's context whichever task
    awaits it, and no token it sets is ever reset from another context.

    With a *logger*, an error it raises (other than ``StopAsyncIteration``) is
    logged there first, in *ctx* (`BODY_ERROR`).
    """

    __slots__ = ("_ctx", "_logger", "_make")

    def __init__(
        self,
        ctx: Context,
        make: Callable[[], Awaitable[_T]],
        logger: logging.Logger | None = None,
    ) -> None:
        self._ctx = ctx
        self._make = make
        self._logger = logger

    def __await__(self) -> Generator[Any, Any, _T]:
        ctx = self._ctx
        try:
            steps = ctx.run(_steps, self._make)
            sent: Any = None
            error: BaseException | None = None
            while True:
                try:
                    out = (
                        ctx.run(steps.send, sent) if error is None else ctx.run(steps.throw, error)
                    )
                except StopIteration as stop:
                    result: _T = stop.value
                    return result
                error = None
                try:
                    sent = yield out
                except GeneratorExit:
                    ctx.run(steps.close)
                    raise
                except BaseException as exc:  # noqa: BLE001 -- the awaiting task's: passed on, as a task does
                    sent, error = None, exc
        except StopAsyncIteration:
            raise
        except Exception:
            ctx.run(store.fail)
            if self._logger is not None:
                ctx.run(self._logger.error, BODY_ERROR, exc_info=True)
            raise


def _steps(make: Callable[[], Awaitable[_T]]) -> Generator[Any, Any, _T]:
    return make().__await__()
