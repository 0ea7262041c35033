"""The simulated demo: concurrent "requests" as asyncio tasks, no server.

Each request binds its own id, awaits, hops to worker threads through
``asyncio.to_thread`` and through a plain ``ThreadPoolExecutor`` via
``ctxlog.wrap``, and logs JSON lines that mention its own
id in the message.  The lines are then checked: each must carry the id of the
request that wrote it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ctxlog
from ctxlog._check import CheckReport, check_files

LOGGER = "ctxlog.demo"


def _blocking_work(rid: str, step: int) -> int:
    log = logging.getLogger(LOGGER + ".worker")
    time.sleep(random.random() / 1000)
    log.info("worker step %d for %s", step, rid)
    return step


async def _request(n: int, pool: ThreadPoolExecutor) -> None:
    rid = f"req-{n:05d}"
    log = logging.getLogger(LOGGER)
    with ctxlog.bind(request_id=rid, user_id=f"user-{n % 17}"):
        log.info("start %s", rid)
        await asyncio.sleep(random.random() / 100)
        await asyncio.to_thread(_blocking_work, rid, 1)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(pool, ctxlog.wrap(_blocking_work), rid, 2)
        await asyncio.sleep(random.random() / 100)
        log.info("end %s", rid)


async def _main(requests: int) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        await asyncio.gather(*(_request(n, pool) for n in range(requests)))


def run(requests: int, output: Path) -> CheckReport:
    """Run *requests* simulated requests logging JSON lines to *output*; check them."""
    from ctxlog.stdlib import json_formatter  # noqa: PLC0415 -- needs python-json-logger

    handler = logging.FileHandler(output, mode="w", encoding="utf-8")
    handler.setFormatter(json_formatter())
    handler.addFilter(ctxlog.ContextFilter(defaults={"request_id": "-"}))
    demo_logger = logging.getLogger(LOGGER)
    level, propagate = demo_logger.level, demo_logger.propagate
    demo_logger.addHandler(handler)
    demo_logger.setLevel(logging.INFO)
    demo_logger.propagate = False
    try:
        asyncio.run(_main(requests))
    finally:
        demo_logger.removeHandler(handler)
        demo_logger.setLevel(level)
        demo_logger.propagate = propagate
        handler.close()
    return check_files([output])
