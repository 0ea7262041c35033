"""Handoff benchmark: executors, ``wrap``, ``Thread``, snapshots and ``memoize``.

Each block times ctxlog beside the standard-library way of doing the same
thing, in the same process, with 5 keys bound:

* ``ctxlog.ThreadPoolExecutor``: ``submit`` + ``result`` against the plain
  :class:`concurrent.futures.ThreadPoolExecutor` (target <= 1.3x), and
  ``loop.run_in_executor(None, fn)`` with each as the default executor, beside
  ``asyncio.to_thread``;
* ``ctxlog.wrap(fn)(...)``: the call overhead, against calling ``fn`` and
  against ``copy_context().run(fn, ...)`` (what ``asyncio.to_thread`` does);
* ``@ctxlog.memoize`` cache hit inside a ``cache_scope()`` against a
  :func:`functools.lru_cache` hit (target <= 2x), plus the call-through cost
  outside any scope;
* ``ctxlog.Thread`` start + join against ``threading.Thread``;
  ``ctxlog.ProcessPoolExecutor`` submit + result against the plain one, and on
  Python 3.14+ ``ctxlog.InterpreterPoolExecutor`` against the plain one (also
  with one line logged in the task, which the plain pool loses);
  ``snapshot()``, pickling it, and the header round trip against
  ``json.dumps`` / ``json.loads`` of the same values (target <= 3x each).

Figures are ns per operation, the median over many short runs taken
round-robin (a burst of load elsewhere hits an op and its reference alike); a
ratio is the median of the per-run ratios.  Run it with
``python benchmarks/run.py handoff`` (``--quick`` for a rough pass) or alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import json
import logging
import multiprocessing
import pickle
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from _harness import CONTEXT, Op, quick, ratio, timed, verdict
from _harness import race as _run_race

import ctxlog
import ctxlog._snapshot

__all__ = ["main"]

TARGET_SUBMIT = 1.30
TARGET_MEMOIZE = 2.00
TARGET_HEADERS = 3.00


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


def _loop_of(fn: Callable[[], object], number: int) -> Callable[[], float]:
    """A run: *number* calls of *fn*, in ns per call."""

    def run() -> float:
        started = time.perf_counter_ns()
        for _ in range(number):
            fn()
        return (time.perf_counter_ns() - started) / number

    return run


def _race(ops: list[Op], runs: int) -> dict[str, Op]:
    """Run every op *runs* times, round-robin, after a warm-up; return them by label."""
    _run_race(ops, runs, warm_up=True)
    return {op.label: op for op in ops}


def _noop() -> None:
    return None


def _identity(value: int) -> int:
    return value


# --------------------------------------------------------------------------
# the scenarios
# --------------------------------------------------------------------------


def _thread_pools(runs: int, number: int) -> dict[str, Op]:
    with (
        concurrent.futures.ThreadPoolExecutor(1) as plain,
        ctxlog.ThreadPoolExecutor(1) as carrying,
    ):
        ops = [
            Op("plain", _loop_of(lambda: plain.submit(_noop).result(), number)),
            Op("ctxlog", _loop_of(lambda: carrying.submit(_noop).result(), number)),
        ]
        return _race(ops, runs)


def _event_loop(runs: int, number: int) -> dict[str, Op]:
    """``run_in_executor(None, fn)`` with each default executor, and ``to_thread``."""

    async def awaited(make: Callable[[], Coroutine[Any, Any, object]]) -> float:
        started = time.perf_counter_ns()
        for _ in range(number):
            await make()
        return (time.perf_counter_ns() - started) / number

    async def measure() -> dict[str, Op]:
        loop = asyncio.get_running_loop()
        plain = concurrent.futures.ThreadPoolExecutor(1)
        carrying = ctxlog.ThreadPoolExecutor(1)

        async def with_default(executor: concurrent.futures.ThreadPoolExecutor) -> object:
            loop.set_default_executor(executor)
            return await loop.run_in_executor(None, _noop)

        makers: dict[str, Callable[[], Coroutine[Any, Any, object]]] = {
            "plain": lambda: with_default(plain),
            "ctxlog": lambda: with_default(carrying),
            "to_thread": lambda: _to_thread_on(loop, plain),
        }
        samples: dict[str, list[float]] = {label: [] for label in makers}
        for make in makers.values():
            await awaited(make)
        for _ in range(runs):
            for label, make in makers.items():
                samples[label].append(await awaited(make))
        plain.shutdown()
        carrying.shutdown()
        ops = {}
        for label, values in samples.items():
            op = Op(label, lambda: 0.0)
            op.samples = values
            ops[label] = op
        return ops

    with ctxlog.bind(**CONTEXT):
        return asyncio.run(measure())


async def _to_thread_on(
    loop: asyncio.AbstractEventLoop, executor: concurrent.futures.ThreadPoolExecutor
) -> object:
    # asyncio.to_thread on the plain default executor: a context copy per call.
    loop.set_default_executor(executor)
    return await asyncio.to_thread(_noop)


def _wraps(runs: int, number: int) -> dict[str, Op]:
    namespace = {
        "fn": _identity,
        "copy_context": contextvars.copy_context,
        "wrapped": ctxlog.wrap(_identity),
    }
    statements = {
        "direct": "fn(1)",
        "copy_run": "copy_context().run(fn, 1)",
        "wrap": "wrapped(1)",
    }
    return _race([Op(k, timed(v, namespace, number)) for k, v in statements.items()], runs)


def _memoize(runs: int, number: int) -> dict[str, Op]:
    @functools.lru_cache(maxsize=None)  # noqa: UP033 -- the unbounded form, as memoize's default
    def lru(value: int) -> int:
        return value

    @ctxlog.memoize
    def memo(value: int) -> int:
        return value

    @ctxlog.memoize(maxsize=128)
    def memo_bounded(value: int) -> int:
        return value

    results = {(1,): 1}

    def floor(*args: Any, **kwargs: Any) -> Any:  # noqa: ARG001 -- the shape of a wrapper
        # What any cache written in Python costs at least: a call through a
        # Python frame that takes any arguments, and one dict lookup.
        return results[args]

    namespace = {
        "plain": _identity,
        "lru": lru,
        "memo": memo,
        "memo_bounded": memo_bounded,
        "floor": floor,
    }

    def ops(*labels: str) -> list[Op]:
        return [Op(label, timed(f"{label}(1)", namespace, number)) for label in labels]

    with ctxlog.cache_scope():
        inside = _race(ops("plain", "lru", "memo", "memo_bounded", "floor"), runs)
    outside = _race(ops("plain", "memo"), runs)
    return {**inside, "plain_out": outside["plain"], "memo_out": outside["memo"]}


def _threads(runs: int, number: int) -> dict[str, Op]:
    def start_join(cls: type[threading.Thread]) -> None:
        thread = cls(target=_noop)
        thread.start()
        thread.join()

    ops = [
        Op("plain", _loop_of(lambda: start_join(threading.Thread), number)),
        Op("ctxlog", _loop_of(lambda: start_join(ctxlog.Thread), number)),
    ]
    return _race(ops, runs)


def _process_pools(runs: int, number: int) -> dict[str, Op]:
    mp = multiprocessing.get_context("spawn")
    with (
        concurrent.futures.ProcessPoolExecutor(1, mp_context=mp) as plain,
        ctxlog.ProcessPoolExecutor(1, mp_context=mp) as carrying,
    ):
        plain.submit(_noop).result()  # the workers are up before timing
        carrying.submit(_noop).result()
        ops = [
            Op("plain", _loop_of(lambda: plain.submit(_noop).result(), number)),
            Op("ctxlog", _loop_of(lambda: carrying.submit(_noop).result(), number)),
        ]
        return _race(ops, runs)


def _logs_one_line(value: int) -> int:
    import logging  # noqa: PLC0415 -- a task for a subinterpreter imports what it uses

    logging.getLogger("bench.interpreters").info("in a subinterpreter")
    return value


def _interpreter_pools(runs: int, number: int) -> dict[str, Op]:
    """3.14+: the plain InterpreterPoolExecutor and ctxlog's, 1 worker each; the line
    logged in ``one_line`` reaches a handler that drops it (level CRITICAL)."""
    if sys.version_info < (3, 14):
        return {}
    sink = logging.getLogger("bench.interpreters")
    handler = logging.NullHandler()
    sink.addHandler(handler)
    sink.setLevel(logging.INFO)
    sink.propagate = False
    try:
        with (
            concurrent.futures.InterpreterPoolExecutor(1) as plain,
            ctxlog.InterpreterPoolExecutor(1) as carrying,
        ):
            plain.submit(_identity, 0).result()  # the interpreters are up before timing
            carrying.submit(_identity, 0).result()
            ops = [
                Op("plain", _loop_of(lambda: plain.submit(_identity, 1).result(), number)),
                Op("ctxlog", _loop_of(lambda: carrying.submit(_identity, 1).result(), number)),
                Op(
                    "one_line",
                    _loop_of(lambda: carrying.submit(_logs_one_line, 1).result(), number),
                ),
            ]
            return _race(ops, runs)
    finally:
        sink.removeHandler(handler)
        sink.setLevel(logging.NOTSET)
        sink.propagate = True


def _snapshots(runs: int, number: int) -> dict[str, Op]:
    snap = ctxlog.snapshot()
    namespace = {
        "copy_context": contextvars.copy_context,
        "snapshot": ctxlog.snapshot,
        "dumps": pickle.dumps,
        "values": dict(CONTEXT),
        "snap": snap,
        "from_headers": ctxlog.Snapshot.from_headers,
        "headers": snap.to_headers(),
        "json": json,
        "text": snap.to_headers()[ctxlog._snapshot.CONTEXT_HEADER],
    }
    statements = {
        "copy_context": "copy_context()",
        "snapshot": "snapshot()",
        "pickle_dict": "dumps(values)",
        "pickle_snap": "dumps(snapshot())",
        "to_headers": "snap.to_headers()",
        "from_headers": "from_headers(headers)",
        "json_dumps": "json.dumps(values)",
        "json_loads": "json.loads(text)",
    }
    return _race([Op(k, timed(v, namespace, number)) for k, v in statements.items()], runs)


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------


def _line(label: str, ns: float, factor: float | None = None, note: str = "") -> str:
    cell = f"{factor:>7.2f}x" if factor is not None else " " * 8
    return f"  {label:<58}{ns:>12,.0f} ns {cell}  {note}"


def _print_interpreter_pools(runs: int, number: int) -> None:
    """Measure (5 keys bound) and print the interpreter pools' block."""
    with ctxlog.bind(**CONTEXT):
        interpreters = _interpreter_pools(runs, number)
    print("interpreter pool, submit(fn) + result(), 1 worker")
    if not interpreters:
        print("  (needs Python 3.14 or newer)")
        return
    plain_ns = interpreters["plain"].ns
    print(_line("concurrent.futures.InterpreterPoolExecutor  [reference]", plain_ns, 1.0))
    for key, label in (
        ("ctxlog", "ctxlog.InterpreterPoolExecutor"),
        ("one_line", "ctxlog.InterpreterPoolExecutor, 1 line logged in the task"),
    ):
        factor = ratio(interpreters[key], interpreters["plain"])
        print(_line(label, interpreters[key].ns, factor))


def main() -> None:
    """Measure, then print the table and whether each target is met."""
    rough = quick()
    runs = 9 if rough else 31
    scale = 1 if rough else 3

    with ctxlog.bind(**CONTEXT):
        pools = _thread_pools(runs, 100 * scale)
        wraps = _wraps(runs, 2_000 * scale)
        memo = _memoize(runs, 5_000 * scale)
        threads = _threads(runs, 30 * scale)
        processes = _process_pools(max(5, runs // 3), 50 * scale)
        snaps = _snapshots(runs, 1_000 * scale)
    loop = _event_loop(runs, 50 * scale)

    print(
        f"ns per operation, median of {runs} runs; ratio: median of the per-run ratios\n"
        "against the block's reference (measured side by side, round-robin); 5 keys bound"
    )
    print("thread pool, submit(fn) + result(), 1 worker")
    print(_line("concurrent.futures.ThreadPoolExecutor  [reference]", pools["plain"].ns, 1.0))
    submit_ratio = ratio(pools["ctxlog"], pools["plain"])
    print(_line("ctxlog.ThreadPoolExecutor", pools["ctxlog"].ns, submit_ratio))

    print("asyncio, await loop.run_in_executor(None, fn), 1 worker")
    print(_line("plain default executor (no context)  [reference]", loop["plain"].ns, 1.0))
    print(
        _line(
            "ctxlog.ThreadPoolExecutor as the default",
            loop["ctxlog"].ns,
            ratio(loop["ctxlog"], loop["plain"]),
        )
    )
    print(
        _line(
            "asyncio.to_thread(fn)", loop["to_thread"].ns, ratio(loop["to_thread"], loop["plain"])
        )
    )

    print("calling fn(1) in a copy of the context (net of calling fn directly)")
    direct = wraps["direct"]
    copy_run_net = wraps["copy_run"].ns - direct.ns
    print(_line("fn(1)  [the baseline, gross]", direct.ns))
    print(_line("copy_context().run(fn, 1)  [reference, net]", copy_run_net, 1.0))
    wrap_ratio = ratio(wraps["wrap"], wraps["copy_run"], direct)
    print(
        _line(
            "ctxlog.wrap(fn)(1), a fresh copy per call (net)",
            wraps["wrap"].ns - direct.ns,
            wrap_ratio,
        )
    )

    print("memoized call with the result cached (hit)")
    print(_line("functools.lru_cache hit  [reference]", memo["lru"].ns, 1.0))
    memo_ratio = ratio(memo["memo"], memo["lru"])
    print(_line("@ctxlog.memoize hit, inside cache_scope()", memo["memo"].ns, memo_ratio))
    print(
        _line(
            "@ctxlog.memoize(maxsize=128) hit",
            memo["memo_bounded"].ns,
            ratio(memo["memo_bounded"], memo["lru"]),
        )
    )
    print(_line("plain call, no cache", memo["plain"].ns, ratio(memo["plain"], memo["lru"])))
    print(
        _line(
            "floor: a Python wrapper, one dict lookup",
            memo["floor"].ns,
            ratio(memo["floor"], memo["lru"]),
        )
    )
    print(
        _line(
            "@ctxlog.memoize outside any scope (calls through)",
            memo["memo_out"].ns,
            ratio(memo["memo_out"], memo["plain_out"]),
            "vs a plain call",
        )
    )

    print("thread start() + join()")
    print(_line("threading.Thread  [reference]", threads["plain"].ns, 1.0))
    print(_line("ctxlog.Thread", threads["ctxlog"].ns, ratio(threads["ctxlog"], threads["plain"])))

    print("process pool (spawn), submit(fn) + result(), 1 worker")
    print(_line("concurrent.futures.ProcessPoolExecutor  [reference]", processes["plain"].ns, 1.0))
    print(
        _line(
            "ctxlog.ProcessPoolExecutor",
            processes["ctxlog"].ns,
            ratio(processes["ctxlog"], processes["plain"]),
        )
    )

    _print_interpreter_pools(runs, 100 * scale)

    print("snapshots")
    print(_line("contextvars.copy_context()  [reference]", snaps["copy_context"].ns, 1.0))
    for key, label in (
        ("snapshot", "ctxlog.snapshot()"),
        ("pickle_dict", "pickle.dumps(the 5 values as a dict)"),
        ("pickle_snap", "pickle.dumps(ctxlog.snapshot())"),
        ("to_headers", "Snapshot.to_headers()"),
        ("from_headers", "Snapshot.from_headers(headers)"),
        ("json_dumps", "json.dumps(the 5 values)"),
        ("json_loads", "json.loads(the header's text)"),
    ):
        print(_line(label, snaps[key].ns, ratio(snaps[key], snaps["copy_context"])))
    to_ratio = ratio(snaps["to_headers"], snaps["json_dumps"])
    from_ratio = ratio(snaps["from_headers"], snaps["json_loads"])

    print("\ntargets")
    for label, value, limit in (
        ("ThreadPoolExecutor submit + result against the plain one", submit_ratio, TARGET_SUBMIT),
        ("memoize hit against an lru_cache hit", memo_ratio, TARGET_MEMOIZE),
        ("Snapshot.to_headers() against json.dumps", to_ratio, TARGET_HEADERS),
        ("Snapshot.from_headers() against json.loads", from_ratio, TARGET_HEADERS),
    ):
        print(f"  {label:<60}{verdict(value, limit)}")


if __name__ == "__main__":
    main()
