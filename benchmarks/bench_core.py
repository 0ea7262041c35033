"""Core benchmark: the filter, ``bind``, a whole JSON log line, and ``import ctxlog``.

Everything is measured in one process beside the anchors, with 0, 100 and
1,000 unrelated ContextVars set in the current context (structlog's
``merge_contextvars`` and ``bound_contextvars`` walk all of them; ctxlog reads
one):

* the filter's cost per record: ``ctxlog.ContextFilter().filter(record)`` with
  5 keys bound, against the bare ``record.__dict__.update(ctx)`` floor and
  asgi-correlation-id's ``CorrelationIdFilter`` (1 key), net of creating the
  record; beside it the same filter with its written-out cache check replaced
  by the ``Projection.current()`` call it stands for, and the filter inside a
  unit of work (``ctxlog.scope``) with 2 keys bound and 3 annotated;
* ``with ctxlog.bind(2 keys)`` enter + exit, against structlog's
  ``bound_contextvars`` and loguru's ``logger.contextualize``;
* a whole JSON line (python-json-logger's ``JsonFormatter``, a handler writing
  into memory) with 5 context keys through the filter, against the same fields
  passed with ``extra=``.

plus ``import ctxlog`` (``-X importtime``, fresh interpreters) beside the anchors.

Figures are net nanoseconds per operation: the median over many short
``timeit`` runs, taken round-robin with a baseline and the block's reference,
so that a burst of load elsewhere hits an op and its reference alike; a ratio
is the median of the per-run ratios.  Run it with
``python benchmarks/run.py core`` (``--quick`` for a rough pass) or alone.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

from _harness import (
    CONTEXT,
    REQUEST_ID,
    UNRELATED,
    Op,
    Result,
    make_record,
    quick,
    rows,
    timed_for,
    timed_records,
    unrelated_head,
    verdict,
    with_unrelated,
)
from asgi_correlation_id import CorrelationIdFilter, correlation_id
from loguru import logger as loguru_logger
from structlog.contextvars import bound_contextvars

import ctxlog
from ctxlog._context import Reusable
from ctxlog.stdlib import json_formatter

__all__ = ["main"]

BIND_STMT = "with {}(request_id='r-1', user_id=42):\n    pass"

TARGET_FLAT = 1.20
TARGET_FLOOR = 1.25
TARGET_IMPORT = 2.00
TARGET_BIND = 0.25
TARGET_JSON = 1.05
TARGET_UNIT = 1.30

#: The 5 keys of CONTEXT split as a request's unit of work has them: 2 bound by
#: the middleware when it opens the unit, 3 annotated later (user, tenant, route).
UNIT_BOUND = ("request_id", "trace_id")


# --------------------------------------------------------------------------
# the scenarios
# --------------------------------------------------------------------------


class _UpdateFilter(logging.Filter):
    """The least any filter can do: one call and the update (no context read)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.update(CONTEXT)
        return True


class _MinimalBind:
    """The least a bind can do over one ContextVar: no key check, not reentrant."""

    __slots__ = ("_token", "_values")

    _store: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("bench_minimal")

    def __init__(self, **values: Any) -> None:
        self._values = values

    def __enter__(self) -> None:
        self._token = self._store.set({**self._store.get({}), **self._values})

    def __exit__(self, *exc_info: object) -> None:
        self._store.reset(self._token)


class _CallingFilter(ctxlog.ContextFilter):
    """ctxlog's filter with its common path as the call it writes out
    (``Projection.current()``): what the written-out check saves."""

    def filter(self, record: logging.LogRecord) -> bool:
        attrs = record.__dict__
        out = self._projection.current()
        if len(attrs) == _PLAIN_RECORD_LEN:
            attrs.update(out)
            return True
        return super().filter(record)


_PLAIN_RECORD_LEN = len(vars(make_record()))


def _in_unit() -> contextvars.Context:
    """A context copy in which a unit of work is open with CONTEXT's 5 keys:
    UNIT_BOUND bound by the scope, the other 3 annotated."""
    ctx = contextvars.copy_context()

    def open_unit() -> None:
        ctxlog.clear()
        ctxlog.scope(**{k: CONTEXT[k] for k in UNIT_BOUND}).__enter__()
        ctxlog.annotate(**{k: v for k, v in CONTEXT.items() if k not in UNIT_BOUND})

    ctx.run(open_unit)
    return ctx


def _filters(runs: int, batches: int) -> Result:
    """Net ns per record: the floor, ctxlog's filter (also inside a unit of
    work), asgi-correlation-id's filter."""
    ctxlog.set(**CONTEXT)
    correlation_id.set(REQUEST_ID)
    namespace: dict[str, Any] = {
        "make_record": make_record,
        "ctx": dict(CONTEXT),
        "ctxlog_filter": ctxlog.ContextFilter(),
        "calling_filter": _CallingFilter(),
        "unit_filter": ctxlog.ContextFilter(),
        "asgi_filter": CorrelationIdFilter(),
        "update_filter": _UpdateFilter(),
    }
    statements = {
        "baseline": "pass",
        "floor": "record.__dict__.update(ctx)",
        "update_filter": "update_filter.filter(record)",
        "ctxlog": "ctxlog_filter.filter(record)",
        "calling": "calling_filter.filter(record)",
        "asgi": "asgi_filter.filter(record)",
    }
    ops = [Op(k, timed_records(s, namespace, batches)) for k, s in statements.items()]
    unit_ctx = _in_unit()
    in_unit = timed_records("unit_filter.filter(record)", namespace, batches)
    ops.append(Op("unit", lambda: unit_ctx.run(in_unit)))
    result = Result.race(ops, runs)
    # The unit's line carries the same 5 fields.
    record = make_record()
    unit_ctx.run(namespace["unit_filter"].filter, record)
    assert {k: vars(record)[k] for k in CONTEXT} == CONTEXT
    return result


class _GenericBind(ctxlog.bind):
    """ctxlog.bind through the generic enter/exit of its base class: what its
    written-out __enter__/__exit__ save."""

    __slots__ = ()
    __enter__ = Reusable.__enter__
    __exit__ = Reusable.__exit__


def _binds(runs: int, seconds: float) -> Result:
    """Net ns per ``with`` block binding 2 keys (enter + exit)."""
    namespace: dict[str, Any] = {
        "bind": ctxlog.bind,
        "bound_contextvars": bound_contextvars,
        "contextualize": loguru_logger.contextualize,
        "minimal": _MinimalBind,
        "generic": _GenericBind,
    }
    statements = {
        "baseline": "pass",
        "structlog": BIND_STMT.format("bound_contextvars"),
        "ctxlog": BIND_STMT.format("bind"),
        "loguru": BIND_STMT.format("contextualize"),
        "minimal": BIND_STMT.format("minimal"),
        "generic": BIND_STMT.format("generic"),
    }
    ops = [Op(k, timed_for(s, namespace, seconds)) for k, s in statements.items()]
    return Result.race(ops, runs)


def _json_lines(runs: int, seconds: float) -> Result:
    """ns per JSON line written to memory: 5 keys via extra=, via the filter, none."""
    ctxlog.set(**CONTEXT)
    variants = ("extra", "ctxlog", "none")
    streams = {variant: io.StringIO() for variant in variants}
    namespace: dict[str, Any] = {"ctx": dict(CONTEXT)}
    handlers: list[tuple[logging.Logger, logging.Handler]] = []
    for variant in variants:
        log = logging.getLogger(f"ctxlog.bench.{variant}.{uuid.uuid4().hex}")
        log.propagate = False
        log.setLevel(logging.INFO)
        handler = logging.StreamHandler(streams[variant])
        handler.setFormatter(json_formatter())
        if variant == "ctxlog":
            handler.addFilter(ctxlog.ContextFilter())
        log.addHandler(handler)
        handlers.append((log, handler))
        namespace[f"{variant}_log"] = log
    statements = {
        "baseline": "pass",
        "extra": "extra_log.info('request handled', extra=ctx)",
        "ctxlog": "ctxlog_log.info('request handled')",
        "none": "none_log.info('request handled')",
    }
    ops = [Op(k, timed_for(s, namespace, seconds)) for k, s in statements.items()]
    try:
        result = Result.race(ops, runs)
    finally:
        for owner, attached in handlers:
            owner.removeHandler(attached)
            attached.close()
    last = {v: json.loads(stream.getvalue().splitlines()[-1]) for v, stream in streams.items()}
    for line in last.values():
        del line["time"], line["logger"]
    # The two ways wrote the same line: the comparison is fair.
    assert last["extra"] == last["ctxlog"] != last["none"], last
    return result


# --------------------------------------------------------------------------
# import time
# --------------------------------------------------------------------------


def _import_us(module: str) -> float:
    """Cumulative ``-X importtime`` microseconds of *module* in a fresh interpreter."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in proc.stderr.splitlines():
        # "import time:      self [us] | cumulative | imported package"
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == module:
            return float(parts[1])
    msg = f"no -X importtime line for {module!r}"
    raise RuntimeError(msg)


def _import_times(runs: int) -> tuple[dict[str, float], float]:
    """Median import times, and the median of the per-round ratios of
    ``import ctxlog`` to ``import logging`` (which it includes)."""
    modules = ("ctxlog", "logging", "structlog", "loguru", "asgi_correlation_id")
    samples: dict[str, list[float]] = {m: [] for m in modules}
    ratios: list[float] = []
    for _ in range(runs):
        for module in modules:
            samples[module].append(_import_us(module))
        ratios.append(samples["ctxlog"][-1] / samples["logging"][-1])
    return {m: statistics.median(s) for m, s in samples.items()}, statistics.median(ratios)


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------


def _rows(
    title: str, lines: list[tuple[str, str]], results: dict[int, Result], ref: str
) -> Iterator[str]:
    """A block whose every row is against *ref*."""
    return rows(title, [(key, ref, label) for key, label in lines], results, width=50, digits=2)


def main() -> None:
    """Measure, then print the table and whether each target is met."""
    rough = quick()
    # Many short runs, round-robin: on a shared machine a burst of load then
    # hits an op and its reference alike, and the median of their ratios holds.
    runs = 9 if rough else 31
    batches = 30 if rough else 60
    seconds = 0.003 if rough else 0.005
    import_runs = 3 if rough else 7

    filters: dict[int, Result] = {}
    binds: dict[int, Result] = {}
    lines: dict[int, Result] = {}
    for n in UNRELATED:
        binds[n] = with_unrelated(n, lambda: _binds(runs, seconds))
        filters[n] = with_unrelated(n, lambda: _filters(runs, batches))
        lines[n] = with_unrelated(n, lambda: _json_lines(runs, seconds))
    imports, import_ratio = _import_times(import_runs)

    head = unrelated_head()
    print(
        f"net ns per operation, median of {runs} runs; ratio: median of the per-run ratios\n"
        f"against the block's first row (measured side by side, round-robin)\n"
        f"{'unrelated ContextVars set in the context:':<52}{head}"
    )
    out = [
        *_rows(
            "filter cost per record, 5 keys bound (net of creating the LogRecord)",
            [
                ("floor", "record.__dict__.update(ctx)  [the floor]"),
                ("update_filter", "a Filter doing only that (+ the call)"),
                ("ctxlog", "ctxlog.ContextFilter().filter(record)"),
                ("calling", "  the same through Projection.current()"),
                ("unit", "  in a unit of work, 2 keys bound + 3 annotated"),
                ("asgi", "asgi-correlation-id CorrelationIdFilter, 1 key"),
            ],
            filters,
            "floor",
        ),
        *_rows(
            "the filter's written-out cache check, and a unit of work",
            [
                ("ctxlog", "ctxlog.ContextFilter, 5 keys bound"),
                ("calling", "through Projection.current()"),
                ("unit", "in a unit of work, 2 keys bound + 3 annotated"),
            ],
            filters,
            "ctxlog",
        ),
        *_rows(
            "with ... (2 keys): enter + exit",
            [
                ("structlog", "structlog bound_contextvars"),
                ("ctxlog", "ctxlog.bind"),
                ("loguru", "loguru logger.contextualize"),
                ("minimal", "bare __slots__ class, one ContextVar, no checks"),
                ("generic", "ctxlog.bind through the generic path"),
            ],
            binds,
            "structlog",
        ),
        *_rows(
            "ctxlog.bind's written-out __enter__/__exit__",
            [("ctxlog", "ctxlog.bind"), ("generic", "through the generic path")],
            binds,
            "generic",
        ),
        *_rows(
            "one JSON line (python-json-logger JsonFormatter, in-memory stream)",
            [
                ("extra", "5 keys passed with extra="),
                ("ctxlog", "5 keys bound, via ctxlog.ContextFilter"),
                ("none", "no context keys"),
            ],
            lines,
            "extra",
        ),
    ]
    print("\n".join(out))

    print(f"\nimport time (-X importtime cumulative, median of {import_runs} fresh interpreters)")
    for module, us in imports.items():
        print(f"  import {module:<44}{us / 1000:>10.1f} ms {us / imports['ctxlog']:>6.2f}x")

    worst_floor = max(filters[n].ratio("ctxlog", "floor") for n in UNRELATED)
    worst_bind = max(binds[n].ratio("ctxlog", "structlog") for n in UNRELATED)
    worst_json = max(lines[n].ratio("ctxlog", "extra") for n in UNRELATED)
    worst_unit = max(filters[n].ratio("unit", "ctxlog") for n in UNRELATED)
    worst_unit_floor = max(filters[n].ratio("unit", "floor") for n in UNRELATED)
    # In floors (the floor reads no ContextVar), so that load that differs between
    # the N = 0 and the N = 1,000 runs cancels out.
    flat = filters[UNRELATED[-1]].ratio("ctxlog", "floor") / filters[UNRELATED[0]].ratio(
        "ctxlog", "floor"
    )
    print("\ntargets")
    print(f"  {'filter, N = 1,000 against N = 0 (in floors)':<50}{verdict(flat, TARGET_FLAT)}")
    print(f"  {'filter against the floor (worst N)':<50}{verdict(worst_floor, TARGET_FLOOR)}")
    print(f"  {'bind against bound_contextvars (worst N)':<50}{verdict(worst_bind, TARGET_BIND)}")
    print(f"  {'JSON line: filter against extra= (worst N)':<50}{verdict(worst_json, TARGET_JSON)}")
    unit_label = "filter in a unit against 5 keys bound (worst N)"
    print(f"  {unit_label:<50}{verdict(worst_unit, TARGET_UNIT)}")
    unit_floor_label = "filter in a unit against the floor (worst N)"
    print(f"  {unit_floor_label:<50}{verdict(worst_unit_floor, TARGET_FLOOR)}")
    print(f"  {'import ctxlog against import logging':<50}{verdict(import_ratio, TARGET_IMPORT)}")


if __name__ == "__main__":
    main()
