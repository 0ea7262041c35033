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
import os
import statistics
import timeit
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
import structlog.contextvars as sl

import ctxlog
from ctxlog import structlog as cs

__all__ = ["main"]

UNRELATED = (0, 100, 1_000)
CONTEXT = {
    "request_id": "6f1c2a9e-3d41-4b8f-9a57-0c2e8d7b1f34",
    "user_id": 4217,
    "tenant": "acme",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "route": "/orders/{id}",
}
EVENT = "{'event': 'request handled'}"

TARGETS = {0: 0.10, 100: 0.02}


def _quick() -> bool:
    return os.environ.get("CTXLOG_BENCH_QUICK", "") not in ("", "0")


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


@dataclass
class _Op:
    """One statement to time; ``run()`` returns ns per operation for one run."""

    label: str
    run: Callable[[], float]
    samples: list[float] = field(default_factory=list)


def _timed(stmt: str, namespace: dict[str, Any], seconds: float) -> Callable[[], float]:
    """A run of *stmt*: enough loops to last about *seconds*."""
    timer = timeit.Timer(stmt, globals=namespace)
    once = min(timer.repeat(repeat=3, number=1))
    number = max(1, int(seconds / max(once, 1e-7)))
    return lambda: timer.timeit(number) / number * 1e9


@dataclass
class _Result:
    """Net ns per operation of each op, one figure per run (op minus baseline)."""

    nets: dict[str, list[float]]

    @classmethod
    def race(cls, statements: dict[str, str], namespace: dict[str, Any], runs: int) -> _Result:
        """Time every statement *runs* times, round-robin; the first is the baseline."""
        seconds = 0.002 if _quick() else 0.004
        ops = [_Op(label, _timed(stmt, namespace, seconds)) for label, stmt in statements.items()]
        for _ in range(runs):
            for op in ops:
                op.samples.append(op.run())
        baseline, *measured = ops
        return cls(
            {
                op.label: [a - b for a, b in zip(op.samples, baseline.samples, strict=True)]
                for op in measured
            }
        )

    def ns(self, label: str) -> float:
        """Median net ns of *label*."""
        return statistics.median(self.nets[label])

    def ratio(self, label: str, reference: str) -> float:
        """Median over runs of *label* / *reference*, each pair measured side by side."""
        pairs = zip(self.nets[label], self.nets[reference], strict=True)
        return statistics.median(a / b for a, b in pairs)


def _with_unrelated(n: int, fn: Callable[[], _Result]) -> _Result:
    """Run *fn* in a fresh context holding *n* unrelated, set ContextVars."""

    def inner() -> _Result:
        for i in range(n):
            contextvars.ContextVar[int](f"unrelated_{n}_{i}").set(i)
        return fn()

    return contextvars.Context().run(inner)


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


def _processors(runs: int) -> _Result:
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
    return _Result.race(statements, namespace, runs)


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


def _json_calls(runs: int) -> _Result:
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
    result = _Result.race(statements, namespace, runs)
    last = {name: json.loads(s.getvalue().splitlines()[-1]) for name, s in streams.items()}
    for line in last.values():
        del line["timestamp"]
    # The two chains wrote the same line: the comparison is fair.
    assert last["ctxlog"] == last["structlog"], last
    return result


def _binds(runs: int) -> _Result:
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
    return _Result.race(statements, namespace, runs)


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------


def _rows(
    title: str, rows: list[tuple[str, str, str]], results: dict[int, _Result]
) -> Iterator[str]:
    yield title
    for key, ref, label in rows:
        cells = "".join(
            f"{results[n].ns(key):>10,.0f} {results[n].ratio(key, ref):>6.3f}x" for n in UNRELATED
        )
        yield f"  {label:<52}{cells}"


def main() -> None:
    """Measure, then print the table and whether each target is met."""
    runs = 9 if _quick() else 31
    processors: dict[int, _Result] = {}
    calls: dict[int, _Result] = {}
    binds: dict[int, _Result] = {}
    for n in UNRELATED:
        processors[n] = _with_unrelated(n, lambda: _processors(runs))
        calls[n] = _with_unrelated(n, lambda: _json_calls(runs))
        binds[n] = _with_unrelated(n, lambda: _binds(runs))

    head = "".join(f"{f'N = {n:,}':>18}" for n in UNRELATED)
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
