"""OpenTelemetry: the active span's ``trace_id`` and ``span_id`` on every log line.

``ctxlog.otel.install()`` puts two providers in ctxlog's registry (the one
`ctxlog.register` fills), so every reader of the context (the stdlib
`ctxlog.ContextFilter`, the record factory, the structlog processor,
`ctxlog.current`, `ctxlog.get`, `ctxlog.snapshot`) sees the
ids of the span that is current when it reads, in W3C form (lowercase hex, 32
and 16 digits).  Nothing depends on when logging was configured: the ids are
read from OpenTelemetry's context at each read, not attached to handlers.

OpenTelemetry is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, TypeAlias

try:
    from opentelemetry import baggage as _otel_baggage
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _otel_trace
    from opentelemetry.trace import SpanContext
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.otel needs the OpenTelemetry API (opentelemetry-api >= 1.20), which is not "
        "installed: pip install 'ctxlog-correlation[otel]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog._errors import ContextError, check_collection, check_key
from ctxlog._store import MISSING, store
from ctxlog.headers import MAX_BAGGAGE_VALUE_LENGTH
from ctxlog.stdlib import ContextFilter

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider

__all__ = ["install", "installed", "logging_handler", "uninstall"]

_get_current_context: Final = _otel_context.get_current
_get_current_span: Final = _otel_trace.get_current_span

#: What the cache holds for an OpenTelemetry context without a valid span.
_NO_IDS: Final[tuple[str, str, str] | None] = None

#: How many spans' formatted ids are kept at most.
_SPANS_KEPT: Final = 256


class _ActiveSpan:
    """Reads the ids of the current span, formatted once per span.

    OpenTelemetry's ``Context`` objects are never changed once made (attaching
    a span makes a new one), and neither are ``SpanContext`` objects, so the
    last context seen and its ids are kept in one tuple, swapped as a whole
    (safe across threads without a lock), and each span's ids are formatted
    once and kept under its ``SpanContext``'s identity, for whichever context
    (a thread, a task) shows that span next.
    """

    __slots__ = ("by_span", "cache")

    def __init__(self) -> None:
        self.cache: tuple[object, tuple[str, str, str] | None] = (object(), _NO_IDS)
        #: id(SpanContext) -> (that SpanContext, its ids); bounded, see ids().
        self.by_span: dict[int, tuple[object, tuple[str, str, str]]] = {}

    def ids(self) -> tuple[str, str, str] | None:
        """``(trace_id, span_id, flags)`` of the active span in hex, or ``None``."""
        try:
            otel_ctx = _get_current_context()
            cache = self.cache
            if cache[0] is otel_ctx:
                return cache[1]
            span_ctx = _get_current_span(otel_ctx).get_span_context()
            if span_ctx.is_valid:
                known = self.by_span.get(id(span_ctx))
                if known is not None and known[0] is span_ctx:
                    ids: tuple[str, str, str] | None = known[1]
                else:
                    ids = self._format(span_ctx)
            else:
                ids = _NO_IDS
        except Exception:  # noqa: BLE001 -- a broken tracer setup must not break reading the context
            return _NO_IDS
        self.cache = (otel_ctx, ids)
        return ids

    def _format(self, span_ctx: SpanContext) -> tuple[str, str, str]:
        ids = (
            format(span_ctx.trace_id, "032x"),
            format(span_ctx.span_id, "016x"),
            format(span_ctx.trace_flags, "02x"),
        )
        by_span = self.by_span
        if len(by_span) >= _SPANS_KEPT:
            # Spans end and are seldom seen again: starting over costs one
            # format per live span, and holds no ended span for long.
            by_span.clear()
        by_span[id(span_ctx)] = (span_ctx, ids)
        return ids

    def flags_for(self, trace_id: str) -> str | None:
        """The active span's trace flags if *trace_id* is its trace, else ``None``."""
        ids = self.ids()
        if ids is None or ids[0] != trace_id:
            return None
        return ids[2]


class _SpanField:
    """A registry provider: one id of the active span, or ``MISSING`` (no span)."""

    __slots__ = ("_index", "_key", "_span")

    #: The store caches on it (``Provider``): the value changes only with
    #: OpenTelemetry's current context, one ``ContextVar.get()`` away.
    stamp: Final = staticmethod(_get_current_context)

    def __init__(self, span: _ActiveSpan, index: int, key: str) -> None:
        self._span = span
        self._index = index
        self._key = key

    def get(self) -> object:
        ids = self._span.ids()
        return MISSING if ids is None else ids[self._index]

    def __repr__(self) -> str:
        what = "trace id" if self._index == 0 else "span id"
        return f"<ctxlog.otel provider of the active span's {what} as {self._key!r}>"


class _BaggageField:
    """A registry provider: one entry of OpenTelemetry's active baggage, or ``MISSING``."""

    __slots__ = ("_key",)

    #: As the span fields': baggage lives in OpenTelemetry's context too.
    stamp: Final = staticmethod(_get_current_context)

    def __init__(self, key: str) -> None:
        self._key = key

    def get(self) -> object:
        try:
            value = _get_baggage(self._key)
        except Exception:  # noqa: BLE001 -- a broken context must not break reading ours
            return MISSING
        # The safety floor of the baggage the middlewares bind: whatever set
        # it, a value reaches a line only as bounded, printable text.
        if (
            isinstance(value, str)
            and len(value) <= MAX_BAGGAGE_VALUE_LENGTH
            and value.isprintable()
        ):
            return value
        return MISSING

    def __repr__(self) -> str:
        return f"<ctxlog.otel provider of the OpenTelemetry baggage entry {self._key!r}>"


_get_baggage: Final = _otel_baggage.get_baggage

_Field: TypeAlias = "_SpanField | _BaggageField"

_lock = threading.Lock()


def _installed_fields() -> tuple[_Field, ...]:
    """The providers `install` put in the store.

    The store is the one record of what is installed: a test harness that
    saves and loads the store's state (ctxlog's pytest plugin) brings the
    installation back with it, never one without the other.
    """
    return tuple(
        source for source, _ in store.providers if isinstance(source, (_SpanField, _BaggageField))
    )


def install(
    *,
    trace_key: str = "trace_id",
    span_key: str | None = "span_id",
    baggage: Iterable[str] = (),
) -> None:
    """Merge the active OpenTelemetry span's ids into the context every reader sees.

    While a span with a valid span context is current, ``trace_key`` holds
    its trace id (32 lowercase hex digits) and ``span_key`` its span id (16
    digits); pass ``span_key=None`` for the trace id only.  With no span, or
    an invalid one (OpenTelemetry's ``INVALID_SPAN``, a non-recording span
    around an invalid context), neither key is there, so a ``defaults=`` of
    the filter shows instead.  A span that was not sampled still has valid
    ids and they are merged (its trace can still be followed in the logs).

    A value bound with `ctxlog.bind` under the same key wins, as it
    does over any registered variable.  `ctxlog.outgoing_headers` then
    carries the span in ``traceparent``, with the span's own sampling flag.

    *baggage* names entries of OpenTelemetry's active baggage
    (``opentelemetry.baggage``, what its propagators read from an incoming
    ``baggage`` header) to merge the same way, each under its own key, while
    it is set: only text of at most 1,024 printable characters (the safety
    floor of the middlewares' ``baggage=``); other values are left out.

    Works whenever it is called, before or after logging is configured.
    Calling it again replaces the keys; `uninstall` removes them.

    *New in version 0.1.0.*

    :raises ContextError: a key is empty, both keys are the same, a baggage
        entry is one of them, or a key is already used by a registered
        variable ([`register`][ctxlog.register]).
    """
    check_key(trace_key, "ctxlog.otel.install")
    if span_key is not None:
        check_key(span_key, "ctxlog.otel.install")
        if span_key == trace_key:
            msg = (
                f"ctxlog.otel.install(): trace_key and span_key are both {trace_key!r}; "
                "give them different names."
            )
            raise ContextError(msg)
    check_collection(baggage, "baggage", "ctxlog.otel.install")
    entries = tuple(baggage)
    for entry in entries:
        check_key(entry, "ctxlog.otel.install")
        if entry in (trace_key, span_key):
            msg = (
                f"ctxlog.otel.install(baggage=...): {entry!r} is already the trace or span "
                "key; give the ids other keys."
            )
            raise ContextError(msg)
    span = _ActiveSpan()
    fields: list[_Field] = [_SpanField(span, 0, trace_key)]
    if span_key is not None:
        fields.append(_SpanField(span, 1, span_key))
    fields.extend(_BaggageField(entry) for entry in dict.fromkeys(entries))
    with _lock:
        previous = _installed_fields()
        for field in previous:
            store.remove_provider(field, "ctxlog.otel.install")
        added: list[_Field] = []
        try:
            for field in fields:
                store.add_provider(field, field._key, "ctxlog.otel.install")
                added.append(field)
        except ContextError:
            for field in added:
                store.remove_provider(field, "ctxlog.otel.install")
            for field in previous:
                store.add_provider(field, field._key, "ctxlog.otel.install")
            raise
        store.set_trace_source(span.flags_for)


def uninstall() -> None:
    """Stop merging the active span's ids (undo `install`).

    Does nothing when it is not installed.

    *New in version 0.1.0.*
    """
    with _lock:
        for field in _installed_fields():
            store.remove_provider(field, "ctxlog.otel.uninstall")
        store.set_trace_source(None)


def installed() -> bool:
    """Return whether `install` is in effect.

    *New in version 0.1.0.*
    """
    return bool(_installed_fields())


def _id_keys() -> tuple[str, str]:
    """The keys the span's ids are merged under (the defaults when not installed)."""
    trace_key, span_key = "trace_id", "span_id"
    for field in _installed_fields():
        if isinstance(field, _SpanField):
            if field._index == 0:
                trace_key = field._key
            else:
                span_key = field._key
    return trace_key, span_key


def logging_handler(
    logger_provider: LoggerProvider | None = None, **filter_options: Any
) -> logging.Handler:
    """A `logging.Handler` that sends each record to the OpenTelemetry logs SDK,
    with the bound context as the record's attributes.

    Add it where you add handlers (it installs nothing itself: no
    `logging.basicConfig`, no handler put on the root logger for you):

    ```python
    handler = ctxlog.otel.logging_handler(logger_provider)
    logging.getLogger().addHandler(handler)
    ```

    Built on the handler of ``opentelemetry-instrumentation-logging`` (the
    SDK's own ``LoggingHandler`` is deprecated), with a
    [`ContextFilter`][ctxlog.ContextFilter] made from *filter_options*
    (``fields``, ``defaults``, ``nest_under``, ``on_conflict``, ``redact``:
    with a [`Redactor`][ctxlog.Redactor] or ``True``, every attribute, the
    exception's text among them, and with patterns the body, are redacted).
    Each record becomes an OpenTelemetry log record:

    * the bound context and ``extra=`` values are its attributes; nested
      mappings and sequences keep their shape (OpenTelemetry's ``AnyValue``:
      maps, lists, scalars), other objects become text as on ctxlog's JSON
      lines, never raising;
    * the trace and span ids are the record's own ``trace_id``, ``span_id``
      and ``flags`` (the sampled flag), never repeated as attributes: the
      keys `install` merges them under (``trace_id``/``span_id`` when it is
      not in effect) and the ``otelTraceID``/``otelSpanID``/
      ``otelTraceSampled`` of OpenTelemetry's logging instrumentation are
      left out.  The ids are those of the span current where the record was
      made (also when a `logging.handlers.QueueHandler` hands it to another
      thread), or the trace id bound from an incoming ``traceparent``.

    structlog events reach it through the stdlib (``structlog.stdlib.LoggerFactory()``
    with ``structlog.stdlib.render_to_log_kwargs`` last): their keys become
    attributes as well.

    *logger_provider*: the SDK's ``LoggerProvider`` to send to; default: the
    global one (``opentelemetry._logs.set_logger_provider``).

    *New in version 0.1.0.*

    :raises ImportError: OpenTelemetry's logs pieces are not installed (the
        ``otel`` extra installs them).
    :raises ContextError: a filter option is invalid.
    """
    try:
        from ctxlog._otel_logs import ContextLoggingHandler  # noqa: PLC0415 -- only when asked for
    except ImportError as exc:  # pragma: no cover -- dev extras install it; a subprocess tests it
        msg = (
            "ctxlog.otel.logging_handler() needs opentelemetry-sdk and "
            "opentelemetry-instrumentation-logging, which are not installed: "
            "pip install 'ctxlog-correlation[otel]'"
        )
        raise ImportError(msg, name=exc.name) from exc
    context_filter = ContextFilter(**filter_options)
    handler = ContextLoggingHandler(logger_provider, _id_keys, context_filter.redact)
    handler.addFilter(context_filter)
    return handler
