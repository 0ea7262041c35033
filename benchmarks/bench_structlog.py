"""structlog benchmark: ``ctxlog.structlog`` beside ``structlog.contextvars``.

Everything runs in one process, with 0, 100 and 1,000 unrelated ContextVars
set in the current context (structlog's ``merge_contextvars`` walks all of
them on every log call; ctxlog's processor reads one):

* the processor alone, 5 keys bound: ``ctxlog.structlog.merge_context``
  against ``structlog.contextvars.merge_contextvars``, and the floor, a
  processor that only does ``event_dict.update(var.get())`` on one ContextVar
  holding a dict (no precedence for the event's own keys), net of creating the
  event dict;
* a whole structlog call rendering one JSON line (level, ISO timestamp,
  ``JSONRenderer``, written to memory) with each processor first in the chain;
* the drop-in ``bind_contextvars`` + ``reset_contextvars`` (2 keys) and
  ``with bound_contextvars(2 keys)``, against structlog's own.

Figures are net nanoseconds per operation: the median over many short runs,
each measured round-robin with its baseline so that a burst of load elsewhere
hits both; ratios are the median of the per-run ratios.  Run it with
``python benchmarks/run.py structlog`` (``--quick`` for a rough pass) or alone.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import structlog
import structlog.contextvars as sl
from _harness import (
    CONTEXT,
    UNRELATED,
    Op,
    Result,
    quick,
    rows,
    timed_for,
    unrelated_head,
    with_unrelated,
)

import ctxlog
from ctxlog import structlog as cs

__all__ = ["main"]

EVENT = "{'event': 'request handled'}"

TARGETS = {0: 0.10, 100: 0.02}


def _race(statements: dict[str, str], namespace: dict[str, Any], runs: int) -> Result:
    """Time every statement *runs* times, round-robin; the first is the baseline."""
    seconds = 0.002 if quick() else 0.004
    ops = [Op(label, timed_for(stmt, namespace, seconds)) for label, stmt in statements.items()]
    return Result.race(ops, runs)


# --------------------------------------------------------------------------
# the scenarios
# --------------------------------------------------------------------------

_FLOOR_VAR: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("bench_floor")


def _floor(_logger: Any, _method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """The least a processor over one ContextVar can do (the event's keys do not win)."""
    event_dict.update(_FLOOR_VAR.get())
    return event_dict


def _bind_everywhere() -> None:
    ctxlog.set(**CONTEXT)
    sl.bind_contextvars(**CONTEXT)
    _FLOOR_VAR.set(dict(CONTEXT))


def _processors(runs: int) -> Result:
    """Net ns per processor call (5 keys bound), of creating the event dict."""
    _bind_everywhere()
    namespace = {"ctxlog": cs.merge_context, "structlog": sl.merge_contextvars, "floor": _floor}
    # Both processors add the same keys: the comparison is fair.
    assert cs.merge_context(None, "info", {}) == sl.merge_contextvars(None, "info", {})
    statements = {
        "baseline": EVENT,
        "structlog": f"structlog(None, 'info', {EVENT})",
        "ctxlog": f"ctxlog(None, 'info', {EVENT})",
        "floor": f"floor(None, 'info', {EVENT})",
    }
    return _race(statements, namespace, runs)


def _json_logger(processor: Any, stream: io.StringIO) -> Any:
    return structlog.wrap_logger(
        structlog.WriteLogger(stream),
        processors=[
            processor,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )


def _json_calls(runs: int) -> Result:
    """ns per ``log.info(...)`` rendering one JSON line into memory."""
    _bind_everywhere()
    streams = {"ctxlog": io.StringIO(), "structlog": io.StringIO()}
    namespace = {
        "ctxlog_log": _json_logger(cs.merge_context, streams["ctxlog"]),
        "structlog_log": _json_logger(sl.merge_contextvars, streams["structlog"]),
    }
    statements = {
        "baseline": "pass",
        "structlog": "structlog_log.info('request handled', status=200)",
        "ctxlog": "ctxlog_log.info('request handled', status=200)",
    }
    result = _race(statements, namespace, runs)
    last = {name: json.loads(s.getvalue().splitlines()[-1]) for name, s in streams.items()}
    for line in last.values():
        del line["timestamp"]
    # The two chains wrote the same line: the comparison is fair.
    assert last["ctxlog"] == last["structlog"], last
    return result


def _binds(runs: int) -> Result:
    """Net ns per bind + reset, and per ``with bound_contextvars(...)``, of 2 keys."""
    namespace = {
        "sl_bind": sl.bind_contextvars,
        "sl_reset": sl.reset_contextvars,
        "sl_bound": sl.bound_contextvars,
        "cs_bind": cs.bind_contextvars,
        "cs_reset": cs.reset_contextvars,
        "cs_bound": cs.bound_contextvars,
    }
    bind_reset = "t = {0}_bind(request_id='r-1', user_id=42); {0}_reset(**t)"
    bound = "with {}_bound(request_id='r-1', user_id=42):\n    pass"
    statements = {
        "baseline": "pass",
        "structlog_reset": bind_reset.format("sl"),
        "ctxlog_reset": bind_reset.format("cs"),
        "structlog_bound": bound.format("sl"),
        "ctxlog_bound": bound.format("cs"),
    }
    return _race(statements, namespace, runs)


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------


def _rows(
    title: str, lines: list[tuple[str, str, str]], results: dict[int, Result]
) -> Iterator[str]:
    return rows(title, lines, results, width=52, digits=3)


def main() -> None:
    """Measure, then print the table and whether each target is met."""
    runs = 9 if quick() else 31
    processors: dict[int, Result] = {}
    calls: dict[int, Result] = {}
    binds: dict[int, Result] = {}
    for n in UNRELATED:
        processors[n] = with_unrelated(n, lambda: _processors(runs))
        calls[n] = with_unrelated(n, lambda: _json_calls(runs))
        binds[n] = with_unrelated(n, lambda: _binds(runs))

    head = unrelated_head()
    print(
        f"net ns per operation, median of {runs} runs; ratio: median of the per-run ratios\n"
        f"against the row's reference (measured side by side, round-robin)\n"
        f"{'unrelated ContextVars set in the context:':<54}{head}"
    )
    lines = [
        *_rows(
            "processor, 5 keys bound (net of creating the event dict); vs structlog",
            [
                ("structlog", "structlog", "structlog.contextvars.merge_contextvars"),
                ("ctxlog", "structlog", "ctxlog.structlog.merge_context"),
                ("floor", "structlog", "floor: event_dict.update(var.get()), no precedence"),
            ],
            processors,
        ),
        *_rows(
            "whole call: log.info(...) -> one JSON line in memory; vs structlog",
            [
                ("structlog", "structlog", "chain starting with merge_contextvars"),
                ("ctxlog", "structlog", "chain starting with merge_context"),
            ],
            calls,
        ),
        *_rows(
            "drop-in API, 2 keys; vs structlog",
            [
                ("structlog_reset", "structlog_reset", "structlog bind_contextvars + reset"),
                ("ctxlog_reset", "structlog_reset", "ctxlog.structlog bind_contextvars + reset"),
                ("structlog_bound", "structlog_bound", "structlog with bound_contextvars"),
                ("ctxlog_bound", "structlog_bound", "ctxlog.structlog with bound_contextvars"),
            ],
            binds,
        ),
    ]
    print("\n".join(lines))
    print("\ntargets (processor against merge_contextvars)")
    for n, limit in TARGETS.items():
        value = processors[n].ratio("ctxlog", "structlog")
        floor = processors[n].ratio("floor", "structlog")
        verdict = "met" if value <= limit else "MISSED"
        print(
            f"  N = {n:<6,} {value:>7.3f}x  (target <= {limit:.2f}x)  {verdict:<7}"
            f"  the floor alone: {floor:.3f}x"
        )


if __name__ == "__main__":
    main()
