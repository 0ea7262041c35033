"""The OpenTelemetry logs handler behind `ctxlog.otel.logging_handler`.

Imported only when that function is called: it needs the OpenTelemetry logs
API and the handler of ``opentelemetry-instrumentation-logging`` (the SDK's
own ``LoggingHandler`` is deprecated), which ``import ctxlog.otel`` does not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, LogRecord
from opentelemetry.context import Context
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.util.types import AnyValue

from ctxlog._redact import Redactor
from ctxlog._store import store
from ctxlog._values import outbound

__all__ = ["ContextLoggingHandler"]

#: What OpenTelemetry's logging instrumentation adds to every record (its
#: record factory): the ids again, which the record's own fields hold.
_INSTRUMENTATION_IDS: Final = ("otelTraceID", "otelSpanID", "otelTraceSampled")

_HEX: Final = re.compile(r"[0-9a-fA-F]+").fullmatch


def _drop_empty_keys(value: Any) -> Any:
    """OpenTelemetry drops an empty map key with a warning: dropped here, quietly."""
    if isinstance(value, dict):
        return {k: _drop_empty_keys(v) for k, v in value.items() if k}
    if isinstance(value, list):
        return [_drop_empty_keys(v) for v in value]
    return value


class ContextLoggingHandler(LoggingHandler):
    """OpenTelemetry's logging handler, with each record's context as
    attributes and its trace and span ids in the record's own fields only."""

    def __init__(
        self,
        logger_provider: LoggerProvider | None,
        id_keys: Callable[[], tuple[str, str]],
        redactor: Redactor | None = None,
    ) -> None:
        super().__init__(logger_provider=logger_provider)
        self._id_keys = id_keys
        self._redactor = redactor

    def _get_attributes(self, record: logging.LogRecord) -> tuple[dict[str, AnyValue], str | None]:
        attributes, event_name = super()._get_attributes(record)
        trace_key, span_key = self._id_keys()
        for key in (trace_key, span_key, *_INSTRUMENTATION_IDS):
            attributes.pop(key, None)
        # bytes are an AnyValue of their own; the rest keeps its shape as JSON has it.
        shaped = outbound(
            {k: v for k, v in attributes.items() if type(v) is not bytes}, self._redactor
        )
        for key, value in shaped.items():
            attributes[key] = _drop_empty_keys(value)
        return attributes, event_name

    def _translate(self, record: logging.LogRecord) -> LogRecord:
        out = super()._translate(record)
        context = self._record_context(record, out)
        if context is None:
            return out
        return LogRecord(
            timestamp=out.timestamp,
            observed_timestamp=out.observed_timestamp,
            context=context,
            severity_text=out.severity_text,
            severity_number=out.severity_number,
            body=out.body,
            attributes=out.attributes,
            event_name=out.event_name,
        )

    def _record_context(self, record: logging.LogRecord, out: LogRecord) -> Context | None:
        """A context holding the span the record carries, when it is not the
        one current here (a queue handed the record to another thread, or the
        ids were bound from an incoming ``traceparent``); ``None`` otherwise."""
        trace_key, span_key = self._id_keys()
        attrs = record.__dict__
        trace_id = _hex_id(attrs.get(trace_key), 32)
        if not trace_id:
            return None
        # A trace id alone (bound from an incoming traceparent): the record
        # belongs to that trace, with no span of its own.
        span_id = _hex_id(attrs.get(span_key), 16)
        if out.trace_id == trace_id and out.span_id == span_id:
            return None  # the current span: its own context and flags
        flags = int(store.trace_flags(format(trace_id, "032x")), 16)
        span_context = trace.SpanContext(
            trace_id=trace_id,
            span_id=span_id,
            is_remote=False,
            trace_flags=trace.TraceFlags(flags),
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context), Context())


def _hex_id(value: object, digits: int) -> int:
    """*value* as an id of *digits* hex digits, ``0`` when it is not one."""
    if isinstance(value, str) and len(value) == digits and _HEX(value) is not None:
        return int(value, 16)
    return 0
