"""Less noise, nothing secret: what tail sampling and redaction cost a line.

Measured side by side in one process, each writing JSON lines into memory
through ``ctxlog.stdlib.json_formatter()`` and ``ctxlog.ContextFilter`` with
the 5 usual keys bound:

* a unit of work (``ctxlog.scope()``) logging 10 INFO lines through
  ``ctxlog.TailSamplingHandler`` (held, then dropped as the unit ends
  cleanly) against the same unit written as 10 JSON lines, and beside them
  the same unit logged to a ``logging.NullHandler``: what ``logging`` itself
  spends before any handler runs (``findCaller``, the ``LogRecord``), which
  no handler can save;
* one JSON line with ``redact=True`` (the default keys) on the formatter and
  the filter, against one without;
* one line outside any unit through ``TailSamplingHandler`` against the same
  line straight to the handler it wraps.

Run it with ``python benchmarks/run.py noise`` (``--quick`` for a rough pass) or alone.
"""

from __future__ import annotations

import io
import logging
import uuid
from typing import Any

from _harness import CONTEXT, Op, Result, quick, timed_for, verdict

import ctxlog
from ctxlog.stdlib import json_formatter

__all__ = ["main"]

TARGET_HELD = 0.30
TARGET_REDACT = 1.25
TARGET_OUTSIDE = 1.10


def _handler(*, redact: bool = False) -> logging.Handler:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(json_formatter(redact=redact))
    handler.addFilter(ctxlog.ContextFilter(redact=redact))
    return handler


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"ctxlog.bench.noise.{uuid.uuid4().hex}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return log


def _unit(log: logging.Logger) -> None:
    with ctxlog.scope():
        for _ in range(10):
            log.info("request handled")


def _race(runs: int, seconds: float) -> Result:
    namespace: dict[str, Any] = {
        "unit": _unit,
        "plain": _logger(_handler()),
        "redacted": _logger(_handler(redact=True)),
        "sampled": _logger(ctxlog.TailSamplingHandler(_handler())),
        "null": _logger(logging.NullHandler()),
    }
    statements = {
        "baseline": "pass",
        "unit_written": "unit(plain)",
        "unit_held": "unit(sampled)",
        "unit_null": "unit(null)",
        "line": "plain.info('request handled')",
        "line_redacted": "redacted.info('request handled')",
        "line_sampled": "sampled.info('request handled')",
    }
    token = ctxlog.set(**CONTEXT)
    try:
        ops = [Op(k, timed_for(s, namespace, seconds)) for k, s in statements.items()]
        return Result.race(ops, runs)
    finally:
        ctxlog.reset(token)


def main() -> None:
    """Measure, then print the table and whether each target is met."""
    rough = quick()
    runs = 9 if rough else 31
    seconds = 0.005 if rough else 0.01
    result = _race(runs, seconds)
    print(
        f"ns per operation, JSON lines with 5 context keys into memory; median of {runs} runs;\n"
        "ratio: median of the per-run ratios, measured side by side (round-robin)"
    )
    rows = [
        ("unit_written", "a unit of 10 INFO lines, written"),
        ("unit_held", "the same unit through TailSamplingHandler (held, dropped)"),
        ("unit_null", "the same unit to a NullHandler (logging's own cost)"),
        ("line", "one line"),
        ("line_redacted", "one line, redact=True"),
        ("line_sampled", "one line outside any unit, through TailSamplingHandler"),
    ]
    for key, label in rows:
        print(f"  {label:<64}{result.ns(key):>9,.0f}")
    print("\ntargets")
    print(
        f"  {'a unit held and dropped / the unit written':<50}"
        f"{verdict(result.ratio('unit_held', 'unit_written'), TARGET_HELD)}"
    )
    floor = result.ratio("unit_null", "unit_written")
    added = (result.ns("unit_held") - result.ns("unit_null")) / 10
    print(
        f"    (logging's own cost is {floor:.2f}x of the written unit: no handler can go under"
        f" it;\n     held and dropped adds {added:,.0f} ns per record to it)"
    )
    print(
        f"  {'a line with redact=True / without':<50}"
        f"{verdict(result.ratio('line_redacted', 'line'), TARGET_REDACT)}"
    )
    print(
        f"  {'outside a unit, TailSamplingHandler / its target':<50}"
        f"{verdict(result.ratio('line_sampled', 'line'), TARGET_OUTSIDE)}"
    )


if __name__ == "__main__":
    main()
