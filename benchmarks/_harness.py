"""What every benchmark measures with: timed runs, round-robin races, medians of ratios.

An :class:`Op` is one thing to time; its ``run()`` returns ns per operation
for one short run.  :func:`race` runs every op of a block many times,
round-robin, so that a burst of load elsewhere hits an op and its reference
alike; a ratio is then the median of the per-run ratios
(:func:`median_ratio`), not the ratio of the medians.  :class:`Result` holds
figures net of a baseline op (the first of the block).

Imported by plain name (``import _harness``): ``benchmarks/`` is on
``sys.path`` both under ``benchmarks/run.py`` and when a benchmark runs alone.
"""

from __future__ import annotations

import contextvars
import logging
import os
import statistics
import timeit
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "BATCH",
    "CONTEXT",
    "QUICK_ENV",
    "REQUEST_ID",
    "UNRELATED",
    "Op",
    "Result",
    "make_record",
    "median_ratio",
    "quick",
    "race",
    "ratio",
    "rows",
    "timed",
    "timed_for",
    "timed_records",
    "unrelated_head",
    "verdict",
    "with_unrelated",
]

_T = TypeVar("_T")

#: Set to ``1`` by ``run.py --quick``; read through :func:`quick`.
QUICK_ENV = "CTXLOG_BENCH_QUICK"

#: How many unrelated ContextVars are set in the context, per column.
UNRELATED = (0, 100, 1_000)

REQUEST_ID = "6f1c2a9e-3d41-4b8f-9a57-0c2e8d7b1f34"
#: The 5 keys bound in the benchmarks: a typical request's fields.
CONTEXT: dict[str, Any] = {
    "request_id": REQUEST_ID,
    "user_id": 4217,
    "tenant": "acme",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "route": "/orders/{id}",
}

#: Records per timed batch: few enough that a fresh batch stays in cache, as a
#: record being logged is.
BATCH = 16


def quick() -> bool:
    """True when the run asked for fewer repetitions (``--quick``)."""
    return os.environ.get(QUICK_ENV, "") not in ("", "0")


# --------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------


@dataclass
class Op:
    """One thing to time; ``run()`` returns ns per operation for one run."""

    label: str
    run: Callable[[], float]
    samples: list[float] = field(default_factory=list)

    @property
    def ns(self) -> float:
        """Median ns per operation over the runs (gross: no baseline taken off)."""
        return statistics.median(self.samples)


def timed_for(stmt: str, namespace: dict[str, Any], seconds: float) -> Callable[[], float]:
    """A run of *stmt*: enough loops to last about *seconds*."""
    timer = timeit.Timer(stmt, globals=namespace)
    once = min(timer.repeat(repeat=3, number=1))
    number = max(1, int(seconds / max(once, 1e-7)))
    return lambda: timer.timeit(number) / number * 1e9


def timed(stmt: str, namespace: dict[str, Any], number: int) -> Callable[[], float]:
    """A run: *number* executions of *stmt* (no call around it), in ns each."""
    timer = timeit.Timer(stmt, globals=namespace)
    return lambda: timer.timeit(number) / number * 1e9


def make_record() -> logging.LogRecord:
    """A fresh INFO record, as a logging call would create."""
    return logging.LogRecord("bench", logging.INFO, __file__, 1, "request handled", (), None)


def timed_records(stmt: str, namespace: dict[str, Any], batches: int) -> Callable[[], float]:
    """A run of *stmt* on *batches* batches of fresh records (bound as ``record``).

    *namespace* provides ``make_record``; creating the records happens in
    ``timeit``'s untimed setup.
    """
    timer = timeit.Timer(
        f"record = next_record()\n{stmt}",
        setup=f"next_record = iter([make_record() for _ in range({BATCH})]).__next__",
        globals=namespace,
    )
    return lambda: sum(timer.repeat(repeat=batches, number=BATCH)) / (batches * BATCH) * 1e9


def race(ops: list[Op], runs: int, *, warm_up: bool = False) -> None:
    """Run every op *runs* times, round-robin, keeping each run's figure.

    With *warm_up*, every op first runs once untimed.
    """
    if warm_up:
        for op in ops:
            op.run()
    for _ in range(runs):
        for op in ops:
            op.samples.append(op.run())


def with_unrelated(n: int, fn: Callable[[], _T]) -> _T:
    """Run *fn* in a fresh context holding *n* unrelated, set ContextVars."""

    def inner() -> _T:
        for i in range(n):
            contextvars.ContextVar[int](f"unrelated_{n}_{i}").set(i)
        return fn()

    return contextvars.Context().run(inner)


# --------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------


def median_ratio(values: Iterable[float], references: Iterable[float]) -> float:
    """Median over runs of value / reference, each pair measured side by side."""
    pairs = zip(values, references, strict=True)
    return statistics.median(a / b for a, b in pairs)


def ratio(op: Op, reference: Op, baseline: Op | None = None) -> float:
    """Median over runs of op / reference (each net of *baseline*, if given)."""
    if baseline is None:
        return median_ratio(op.samples, reference.samples)
    triples = zip(op.samples, reference.samples, baseline.samples, strict=True)
    return statistics.median((a - c) / (b - c) for a, b, c in triples)


@dataclass
class Result:
    """Net ns per operation of each op, one figure per run (op minus baseline)."""

    nets: dict[str, list[float]]

    @classmethod
    def of(cls, ops: list[Op]) -> Result:
        """The first op is the baseline the others are net of."""
        baseline, *measured = ops
        return cls(
            {
                op.label: [a - b for a, b in zip(op.samples, baseline.samples, strict=True)]
                for op in measured
            }
        )

    @classmethod
    def race(cls, ops: list[Op], runs: int) -> Result:
        """:func:`race` the ops, then :meth:`of` them."""
        race(ops, runs)
        return cls.of(ops)

    def ns(self, label: str) -> float:
        """Median net ns of *label*."""
        return statistics.median(self.nets[label])

    def ratio(self, label: str, reference: str) -> float:
        """Median over runs of *label* / *reference*, each pair measured side by side."""
        return median_ratio(self.nets[label], self.nets[reference])


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------


def unrelated_head() -> str:
    """The column headings of a table with one column per :data:`UNRELATED`."""
    return "".join(f"{f'N = {n:,}':>18}" for n in UNRELATED)


def rows(
    title: str,
    lines: list[tuple[str, str, str]],
    results: dict[int, Result],
    *,
    width: int,
    digits: int,
) -> Iterator[str]:
    """*title*, then per (key, reference, label): net ns and ratio for each N."""
    yield title
    for key, ref, label in lines:
        cells = "".join(
            f"{results[n].ns(key):>10,.0f} {results[n].ratio(key, ref):>6.{digits}f}x"
            for n in UNRELATED
        )
        yield f"  {label:<{width}}{cells}"


def verdict(value: float, limit: float) -> str:
    """*value* beside its upper *limit*, and whether it is met."""
    return f"{value:>6.2f}x  (target <= {limit:.2f}x)  {'met' if value <= limit else 'MISSED'}"
