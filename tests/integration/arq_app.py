"""The arq application of the arq tests: job functions and ``WorkerSettings``.

`arq tests.integration.arq_app.WorkerSettings` runs it in its own process:
``CTXLOG_TEST_REDIS`` names the Redis, ``CTXLOG_TEST_QUEUE`` the queue, and
``CTXLOG_TEST_LOG`` the file its JSON lines go to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from arq import Retry
from arq.connections import RedisSettings

import ctxlog
import ctxlog.arq
from tests.integration._queues import JOB_LOGGER, json_handler

log = logging.getLogger("app.tasks")

#: Lines the ``work`` job logs, one per step, with an await between them.
STEPS = 3


class Boom(RuntimeError):
    """What the failing job raises."""


async def work(ctx: dict[str, Any], expected: str) -> str:
    for step in range(STEPS):
        log.info("step %d for %s", step, expected)
        await asyncio.sleep(0)
    return str(ctxlog.get("request_id"))


async def job(ctx: dict[str, Any], request_id: str) -> None:
    await asyncio.sleep(0)
    logging.getLogger(JOB_LOGGER).info("job %s", request_id)


def _in_a_thread(expected: str) -> str:
    time.sleep(0.001)
    log.info("in a thread for %s", expected)
    return str(ctxlog.get("request_id"))


async def blocking(ctx: dict[str, Any], expected: str) -> list[str]:
    # arq's recipe for sync code: the executor made in on_startup (ctxlog's, which
    # carries the context; a plain one would not), and asyncio.to_thread
    loop = asyncio.get_running_loop()
    pooled = await loop.run_in_executor(ctx["pool"], _in_a_thread, expected)
    threaded = await asyncio.to_thread(_in_a_thread, expected)
    return [pooled, threaded]


async def chain(ctx: dict[str, Any]) -> str:
    log.info("chain starts")
    await ctx["redis"].enqueue_job("work", str(ctxlog.get("request_id")))
    return str(ctxlog.get("request_id"))


async def snoop(ctx: dict[str, Any]) -> dict[str, Any]:
    log.info("snooping")
    seen = dict(ctxlog.current())
    ctxlog.set(left="behind")  # never reset: the next job must not see it
    return seen


async def flaky(ctx: dict[str, Any]) -> str:
    log.info("try %d", ctx["job_try"])
    if ctx["job_try"] == 1:
        raise Retry(defer=0)
    return str(ctxlog.get("request_id"))


async def fail(ctx: dict[str, Any]) -> None:
    log.info("about to fail")
    raise Boom("no luck")


async def startup(ctx: dict[str, Any]) -> None:
    ctx["pool"] = ctxlog.ThreadPoolExecutor(4)
    log_file = os.environ.get("CTXLOG_TEST_LOG")
    if log_file:  # the worker process: JSON lines into the file the test reads
        logging.getLogger().addHandler(json_handler(log_file))
        logging.getLogger().setLevel(logging.INFO)


async def shutdown(ctx: dict[str, Any]) -> None:
    ctx["pool"].shutdown()


@ctxlog.arq.worker_settings
class WorkerSettings:
    functions: Sequence[Any] = (work, job, blocking, chain, snoop, flaky, fail)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("CTXLOG_TEST_REDIS", "redis://127.0.0.1:6379/0")
    )
    queue_name = os.environ.get("CTXLOG_TEST_QUEUE", "ctxlog-tests")
    max_jobs = 50
    poll_delay = 0.02
