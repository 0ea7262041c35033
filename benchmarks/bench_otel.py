"""OpenTelemetry benchmark: what ``ctxlog.otel`` adds to each log record.

Measured in one process, with the real OpenTelemetry SDK tracer and 3 keys
bound (request_id, user_id, tenant):

* ``ctxlog.ContextFilter().filter(record)`` without ``ctxlog.otel`` (the
  reference), with it installed and no span current, and with it installed
  inside a span (trace_id and span_id merged);
* the anchor: the same filter plus the per-record work of OpenTelemetry's
  logging instrumentation (``opentelemetry-instrumentation-logging``'s record
  factory: read the current span, format both ids, set ``otelTraceID``,
  ``otelSpanID``, ``otelTraceSampled``, ``otelServiceName``), re-implemented
  here as a filter because that package is not a dependency;
* ``ctxlog.current()`` with and without a span.

Targets: installed with no span current, the filter costs at most 1.5x the
plain filter; inside a span, at most 2x.  The filter caches what it adds on
the context's identity and, for the span ids, on OpenTelemetry's current
context (one ``ContextVar.get()`` away), so a span's ids are formatted once
per span, not once per record.

Figures are net nanoseconds per operation (net of creating the LogRecord):
the median over many short runs, taken round-robin so that a burst of load
elsewhere hits every row alike; a ratio is the median of the per-run ratios
against the first row.  Run it with ``python benchmarks/run.py otel``
(``--quick`` for a rough pass) or alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from _harness import Op, Result, make_record, quick, timed, timed_records, verdict
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import ctxlog
import ctxlog.otel

__all__ = ["main"]

CONTEXT: dict[str, Any] = {"request_id": "6f1c2a9e3d414b8f9a570c2e8d7b1f34", "user_id": 4217}
CONTEXT["tenant"] = "acme"

#: With ctxlog.otel installed and no span current, the filter's cost against
#: the plain filter's (the same filter, ctxlog.otel not installed).
TARGET_NO_SPAN = 1.5
#: The same, inside a span (two more keys on every record).
TARGET_SPAN = 2.0


class _OtelInstrumentationFilter(logging.Filter):
    """The per-record work of opentelemetry-instrumentation-logging's record factory."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.otelSpanID = "0"
        record.otelTraceID = "0"
        record.otelTraceSampled = False
        record.otelServiceName = ""
        span = trace.get_current_span()
        if span != trace.INVALID_SPAN:
            ctx = span.get_span_context()
            if ctx != trace.INVALID_SPAN_CONTEXT:
                record.otelSpanID = format(ctx.span_id, "016x")
                record.otelTraceID = format(ctx.trace_id, "032x")
                record.otelTraceSampled = ctx.trace_flags.sampled
        return True


def _per_record(runs: int, batches: int) -> Result:
    """Net ns per record of each filter set-up; the span is current for the 'span' rows."""
    filt = ctxlog.ContextFilter()
    anchor = _OtelInstrumentationFilter()
    ns: dict[str, Any] = {"make_record": make_record, "filt": filt, "anchor": anchor}
    tracer = TracerProvider().get_tracer("bench")

    def in_span(stmt: str) -> Callable[[], float]:
        outside = timed_records(stmt, ns, batches)

        def run() -> float:
            with tracer.start_as_current_span("bench"):
                return outside()

        return run

    def installed(run: Callable[[], float]) -> Callable[[], float]:
        def wrapped() -> float:
            ctxlog.otel.install()
            try:
                return run()
            finally:
                ctxlog.otel.uninstall()

        return wrapped

    ops = [
        Op("baseline", timed_records("pass", ns, batches)),
        Op("plain", timed_records("filt.filter(record)", ns, batches)),
        Op("no_span", installed(timed_records("filt.filter(record)", ns, batches))),
        Op("span", installed(in_span("filt.filter(record)"))),
        Op("anchor_span", in_span("filt.filter(record)\nanchor.filter(record)")),
    ]
    return Result.race(ops, runs)


def _current(runs: int, number: int) -> Result:
    """Net ns of ctxlog.current() with ctxlog.otel installed, without and with a span."""
    tracer = TracerProvider().get_tracer("bench")
    ns: dict[str, Any] = {"current": ctxlog.current}

    def in_span(run: Callable[[], float]) -> Callable[[], float]:
        def wrapped() -> float:
            with tracer.start_as_current_span("bench"):
                return run()

        return wrapped

    ctxlog.otel.install()
    try:
        ops = [
            Op("baseline", timed("pass", ns, number)),
            Op("no_span", timed("current()", ns, number)),
            Op("span", in_span(timed("current()", ns, number))),
        ]
        return Result.race(ops, runs)
    finally:
        ctxlog.otel.uninstall()


def main() -> None:
    """Measure, then print the table."""
    rough = quick()
    runs = 9 if rough else 31
    batches = 30 if rough else 60
    number = 2_000 if rough else 10_000
    token = ctxlog.set(**CONTEXT)
    try:
        records = _per_record(runs, batches)
        current = _current(runs, number)
    finally:
        ctxlog.reset(token)

    print(
        f"net ns per operation, median of {runs} runs; ratio: median of the per-run ratios\n"
        "against the block's first row (measured side by side, round-robin)"
    )
    print("filter cost per record, 3 keys bound (net of creating the LogRecord)")
    for key, label in [
        ("plain", "ctxlog.ContextFilter, ctxlog.otel not installed"),
        ("no_span", "same, ctxlog.otel installed, no span current"),
        ("span", "same, inside a span (+ trace_id, span_id)"),
        ("anchor_span", "ctxlog filter + OTel logging instrumentation's work"),
    ]:
        value = records.ns(key)
        print(f"  {label:<58}{value:>8,.0f} ns {records.ratio(key, 'plain'):>6.2f}x")
    print("targets")
    for key, label, limit in [
        ("no_span", "installed, no span current, against not installed", TARGET_NO_SPAN),
        ("span", "installed, inside a span, against not installed", TARGET_SPAN),
    ]:
        print(f"  {label:<58}{verdict(records.ratio(key, 'plain'), limit)}")
    print("ctxlog.current(), 3 keys bound, ctxlog.otel installed")
    for key, label in [("no_span", "no span current"), ("span", "inside a span")]:
        value = current.ns(key)
        print(f"  {label:<58}{value:>8,.0f} ns {current.ratio(key, 'no_span'):>6.2f}x")


if __name__ == "__main__":
    main()
