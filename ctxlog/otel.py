"""OpenTelemetry: the active span's ``trace_id`` and ``span_id`` on every log line.

``ctxlog.otel.install()`` puts two providers in ctxlog's registry (the one
[`ctxlog.register`][ctxlog.register] fills), so every reader of the context (the stdlib
[`ContextFilter`][ctxlog.ContextFilter], the record factory, the structlog processor,
[`ctxlog.current`][ctxlog.current], [`ctxlog.get`][ctxlog.get],
[`ctxlog.snapshot`][ctxlog.snapshot]) sees the
ids of the span that is current when it reads, in W3C form (lowercase hex, 32
and 16 digits).  Nothing depends on when logging was configured: the ids are
read from OpenTelemetry's context at each read, not attached to handlers.

OpenTelemetry is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Final

try:
    from opentelemetry import context as _otel_context
    from opentelemetry import trace as _otel_trace
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.otel needs the OpenTelemetry API (opentelemetry-api >= 1.20), which is not "
        "installed: pip install 'ctxlog-correlation[otel]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog._errors import ContextError, check_key
from ctxlog._store import MISSING, store

__all__ = ["install", "installed", "uninstall"]

_get_current_context: Final = _otel_context.get_current
_get_current_span: Final = _otel_trace.get_current_span

#: What the cache holds for an OpenTelemetry context without a valid span.
_NO_IDS: Final[tuple[str, str, str] | None] = None


class _ActiveSpan:
    """Reads the ids of the current span, once per OpenTelemetry context.

    OpenTelemetry's ``Context`` objects are never changed once made (attaching
    a span makes a new one), so the last one seen and its ids are kept in one
    tuple, swapped as a whole (safe across threads without a lock).
    """

    __slots__ = ("cache",)

    def __init__(self) -> None:
        self.cache: tuple[object, tuple[str, str, str] | None] = (object(), _NO_IDS)

    def ids(self) -> tuple[str, str, str] | None:
        """``(trace_id, span_id, flags)`` of the active span in hex, or ``None``."""
        try:
            otel_ctx = _get_current_context()
            cache = self.cache
            if cache[0] is otel_ctx:
                return cache[1]
            span_ctx = _get_current_span(otel_ctx).get_span_context()
            ids = (
                (
                    format(span_ctx.trace_id, "032x"),
                    format(span_ctx.span_id, "016x"),
                    format(span_ctx.trace_flags, "02x"),
                )
                if span_ctx.is_valid
                else _NO_IDS
            )
        except Exception:  # noqa: BLE001 -- a broken tracer setup must not break reading the context
            return _NO_IDS
        self.cache = (otel_ctx, ids)
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


_lock = threading.Lock()
_installed: tuple[_SpanField, ...] = ()


def install(*, trace_key: str = "trace_id", span_key: str | None = "span_id") -> None:
    """Merge the active OpenTelemetry span's ids into the context every reader sees.

    While a span with a valid span context is current, ``trace_key`` holds
    its trace id (32 lowercase hex digits) and ``span_key`` its span id (16
    digits); pass ``span_key=None`` for the trace id only.  With no span, or
    an invalid one (OpenTelemetry's ``INVALID_SPAN``, a non-recording span
    around an invalid context), neither key is there, so a ``defaults=`` of
    the filter shows instead.  A span that was not sampled still has valid
    ids and they are merged (its trace can still be followed in the logs).

    A value bound with [`ctxlog.bind`][ctxlog.bind] under the same key wins, as it
    does over any registered variable.  [`ctxlog.outgoing_headers`][ctxlog.outgoing_headers] then
    carries the span in ``traceparent``, with the span's own sampling flag.

    Works whenever it is called, before or after logging is configured.
    Calling it again replaces the keys; [`uninstall`][ctxlog.otel.uninstall] removes them.

    *New in version 0.1.0.*

    :raises ContextError: a key is empty, both keys are the same, or a key is
        already used by a registered variable ([`ctxlog.register`][ctxlog.register]).
    """
    global _installed  # noqa: PLW0603 -- one installation per process, like the registry
    check_key(trace_key, "ctxlog.otel.install")
    if span_key is not None:
        check_key(span_key, "ctxlog.otel.install")
        if span_key == trace_key:
            msg = (
                f"ctxlog.otel.install(): trace_key and span_key are both {trace_key!r}; "
                "give them different names."
            )
            raise ContextError(msg)
    span = _ActiveSpan()
    fields = [_SpanField(span, 0, trace_key)]
    if span_key is not None:
        fields.append(_SpanField(span, 1, span_key))
    with _lock:
        previous = _installed
        for field in previous:
            _discard(field)
        added: list[_SpanField] = []
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
        _installed = tuple(fields)
        store.set_trace_source(span.flags_for)


def _discard(field: _SpanField) -> None:
    # Tolerant: a test harness may have restored the registry under our feet.
    with contextlib.suppress(ContextError):
        store.remove_provider(field, "ctxlog.otel.uninstall")


def uninstall() -> None:
    """Stop merging the active span's ids (undo [`install`][ctxlog.otel.install]).

    Does nothing when it is not installed.

    *New in version 0.1.0.*
    """
    global _installed  # noqa: PLW0603 -- see install()
    with _lock:
        for field in _installed:
            _discard(field)
        _installed = ()
        store.set_trace_source(None)


def installed() -> bool:
    """Return whether [`install`][ctxlog.otel.install] is in effect.

    *New in version 0.1.0.*
    """
    return bool(_installed)
