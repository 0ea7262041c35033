"""Stress and no-growth: every line carries its own id; memory and worker threads stay clean."""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import io
import json
import logging
import logging.handlers
import multiprocessing
import queue
import random
import sys
import time
import tracemalloc
import weakref
from typing import Any

import pytest

import ctxlog
from ctxlog.stdlib import json_formatter

pytestmark = pytest.mark.slow

TASKS = 10_000
PROCESS_EVERY = 5  # every 5th task also hops through the process pool
CONCURRENCY = 300
LOGGER = "ctxlog.test.stress"


# --------------------------------------------------------------------------
# module level: the process pool's workers import these (spawn)
# --------------------------------------------------------------------------


def process_worker_init(log_queue: Any) -> None:
    log = logging.getLogger(LOGGER)
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(ctxlog.QueueHandler(log_queue))


def process_hop(expect: str) -> str:
    time.sleep(random.random() / 5000)
    logging.getLogger(LOGGER).info("hop", extra={"hop": "process", "expect": expect})
    return str(ctxlog.get("request_id"))


def blocking_hop(hop: str, expect: str) -> None:
    if random.random() < 0.3:
        time.sleep(random.random() / 5000)
    logging.getLogger(LOGGER).info("hop", extra={"hop": hop, "expect": expect})


def executor_then_thread_hop(expect: str) -> None:
    """In an executor worker: log, then hand over once more, to a ctxlog.Thread."""
    blocking_hop("executor", expect)
    thread = ctxlog.Thread(target=blocking_hop, args=("thread", expect))
    thread.start()
    thread.join()


# --------------------------------------------------------------------------
# 10,000 tasks
# --------------------------------------------------------------------------


def test_ten_thousand_tasks_every_line_carries_its_own_id() -> None:
    stream = io.StringIO()
    out = logging.StreamHandler(stream)
    out.setFormatter(json_formatter())

    thread_queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    log = logging.getLogger(LOGGER)
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = ctxlog.QueueHandler(thread_queue)
    log.addHandler(handler)
    mp = multiprocessing.get_context("spawn")
    process_queue = mp.Queue()
    listeners = [
        logging.handlers.QueueListener(thread_queue, out),
        logging.handlers.QueueListener(process_queue, out),
    ]
    for listener in listeners:
        listener.start()
    mismatched_returns: list[tuple[str, str]] = []

    async def request(n: int, gate: asyncio.Semaphore, pool: Any) -> None:
        rid = f"r-{n}"
        async with gate, ctxlog.bind(request_id=rid, n=n):
            loop = asyncio.get_running_loop()
            log.info("hop", extra={"hop": "task", "expect": rid})
            await asyncio.sleep(random.random() / 2000)
            await loop.run_in_executor(None, executor_then_thread_hop, rid)
            await asyncio.to_thread(blocking_hop, "to_thread", rid)
            if n % PROCESS_EVERY == 0:
                seen = await loop.run_in_executor(pool, process_hop, rid)
                if seen != rid:
                    mismatched_returns.append((rid, seen))
            with ctxlog.bind(phase="end"):
                await asyncio.sleep(0)
                log.info("hop", extra={"hop": "end", "expect": rid})

    async def main(pool: Any) -> None:
        asyncio.get_running_loop().set_default_executor(ctxlog.ThreadPoolExecutor(8))
        gate = asyncio.Semaphore(CONCURRENCY)
        await asyncio.gather(*(request(n, gate, pool) for n in range(TASKS)))

    try:
        with ctxlog.ProcessPoolExecutor(
            2, mp_context=mp, initializer=process_worker_init, initargs=(process_queue,)
        ) as pool:
            asyncio.run(main(pool))
    finally:
        for listener in listeners:
            listener.stop()
        log.removeHandler(handler)
        process_queue.close()
        process_queue.join_thread()

    lines = stream.getvalue().splitlines()
    per_id: collections.Counter[str] = collections.Counter()
    hops: collections.Counter[str] = collections.Counter()
    mismatches = []
    for line in lines:
        record = json.loads(line)
        expect = record["expect"]
        hops[record["hop"]] += 1
        per_id[expect] += 1
        if (record.get("request_id"), record.get("n")) != (expect, int(expect[2:])):
            mismatches.append(line)
    assert mismatches == []
    assert mismatched_returns == []
    processes = TASKS // PROCESS_EVERY
    assert hops == {
        "task": TASKS,
        "executor": TASKS,
        "to_thread": TASKS,
        "thread": TASKS,
        "end": TASKS,
        "process": processes,
    }
    assert len(lines) == 5 * TASKS + processes
    assert all(per_id[f"r-{n}"] == 5 + (n % PROCESS_EVERY == 0) for n in range(TASKS))


# --------------------------------------------------------------------------
# no growth
# --------------------------------------------------------------------------


def growth(cycle: Any, count: int, traced: int) -> tuple[int, int]:
    """Run ``cycle(n)`` *count* times, after a warm-up; return what stays allocated.

    Returns (pymalloc blocks still allocated after all *count* calls, bytes
    still allocated as tracemalloc sees it over the last *traced* calls).
    Tracing costs ~6x, so it covers a slice; the block count, which any leaked
    object shows in, covers every call at full speed.
    """
    for n in range(1_000):
        cycle(n)
    gc.collect()
    blocks = sys.getallocatedblocks()
    for n in range(count - traced):
        cycle(n)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(count - traced, count):
            cycle(n)
        gc.collect()
        traced_bytes = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    gc.collect()
    return sys.getallocatedblocks() - blocks, traced_bytes


def test_a_million_bind_unbind_cycles_leave_memory_flat() -> None:
    bind, unbind = ctxlog.bind, ctxlog.unbind

    def cycle(n: int) -> None:
        with bind(request_id=n):
            pass
        if n % 16 == 0:
            with bind(user=n), unbind("user"):
                ctxlog.reset(ctxlog.set(request_id=n))

    blocks, traced_bytes = growth(cycle, 1_000_000, traced=100_000)
    assert blocks < 1_000  # one leaked mapping per cycle would be 1,000,000
    assert traced_bytes < 16 * 1024
    assert dict(ctxlog.current()) == {}


def test_ten_thousand_scopes_leave_memory_flat() -> None:
    @ctxlog.memoize
    def load(key: int) -> bytes:
        return bytes(1_000) + key.to_bytes(4, "little")

    with ctxlog.ThreadPoolExecutor(max_workers=2) as pool:

        def cycle(n: int) -> None:
            with ctxlog.cache_scope(), ctxlog.bind(request_id=n):
                load(n)
                load(n)
                if n % 10 == 0:
                    pool.submit(load, n).result(timeout=10)

        # Each scope caches ~1 kB: a leak of the scopes would show as ~10 MB.
        blocks, traced_bytes = growth(cycle, 10_000, traced=10_000)
        assert blocks < 1_000
        assert traced_bytes < 256 * 1024


def test_worker_threads_hold_no_reference_to_finished_requests() -> None:
    class Value:
        pass

    refs: list[weakref.ref[Value]] = []

    async def request(pool: ctxlog.ThreadPoolExecutor) -> None:
        value = Value()
        refs.append(weakref.ref(value))
        async with ctxlog.bind(request_id=value), ctxlog.cache_scope():
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, ctxlog.get, "request_id")
            await asyncio.to_thread(ctxlog.get, "request_id")
            await asyncio.wrap_future(pool.submit(ctxlog.get, "request_id"))
            ctxlog.wrap(ctxlog.get)("request_id")
            thread = ctxlog.Thread(target=ctxlog.get, args=("request_id",))
            thread.start()
            await asyncio.to_thread(thread.join)

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(ctxlog.ThreadPoolExecutor(4))
        with ctxlog.ThreadPoolExecutor(4) as pool:
            await asyncio.gather(*(request(pool) for _ in range(200)))
            await asyncio.sleep(0.01)
            gc.collect()
            # The executors' threads are still alive here, idle.
            assert [ref for ref in refs if ref() is not None] == []

    asyncio.run(main())
    assert len(refs) == 200


def test_annotate_across_threads_and_tasks_on_the_json_lines() -> None:
    """1,000 units of work, each annotated from a pool thread, a ctxlog.Thread and a
    task at once, each logging from tasks and threads: every JSON line carries its
    own unit's values and all of them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(ctxlog.ContextFilter())
    log = logging.getLogger(f"{LOGGER}.annotate")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    pool = ctxlog.ThreadPoolExecutor(max_workers=8)

    async def unit(n: int) -> None:
        async with ctxlog.scope(request_id=f"r{n}"):
            thread = ctxlog.Thread(target=ctxlog.annotate, kwargs={"tenant": f"t{n}"})
            thread.start()
            loop = asyncio.get_running_loop()

            async def in_task() -> None:
                await asyncio.sleep(0)
                ctxlog.annotate(role=f"x{n}")

            await asyncio.gather(
                loop.run_in_executor(pool, functools.partial(ctxlog.annotate, user_id=f"u{n}")),
                asyncio.create_task(in_task()),
                asyncio.to_thread(thread.join),
            )
            log.info("task", extra={"n": n})
            await loop.run_in_executor(pool, functools.partial(log.info, "pool", extra={"n": n}))

    async def main() -> None:
        await asyncio.gather(*(unit(n) for n in range(1_000)))

    try:
        asyncio.run(main())
    finally:
        pool.shutdown()
        log.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2_000
    for line in lines:
        n = line["n"]
        assert (line["request_id"], line["user_id"], line["tenant"], line["role"]) == (
            f"r{n}",
            f"u{n}",
            f"t{n}",
            f"x{n}",
        ), line
