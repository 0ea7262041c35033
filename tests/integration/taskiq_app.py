"""The Taskiq application of the Taskiq tests: a Redis broker with ctxlog's middleware.

`taskiq worker tests.integration.taskiq_app:broker` runs it in its own
process: ``CTXLOG_TEST_REDIS`` names the Redis, ``CTXLOG_TEST_QUEUE`` the
queue, and ``CTXLOG_TEST_LOG`` the file its JSON lines go to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from taskiq import AsyncBroker, SimpleRetryMiddleware
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

import ctxlog
from ctxlog.taskiq import ContextMiddleware
from tests.integration._queues import JOB_LOGGER, json_handler

log = logging.getLogger("app.tasks")

#: Lines the ``work`` task logs, one per step, with an await between them.
STEPS = 3

#: How many times each key of ``flaky`` has failed (per process).
failures: dict[str, int] = {}


class Boom(RuntimeError):
    """What the failing tasks raise."""


def make_broker(redis_url: str, queue: str) -> AsyncBroker:
    """A Redis list-queue broker, a Redis result backend, retries, and ctxlog's middleware."""
    broker = (
        ListQueueBroker(redis_url, queue_name=queue)
        .with_result_backend(RedisAsyncResultBackend(redis_url, result_ex_time=60))
        .with_middlewares(SimpleRetryMiddleware(default_retry_count=3), ContextMiddleware())
    )

    @broker.task(task_name="work")
    async def work(expected: str) -> str:
        for step in range(STEPS):
            log.info("step %d for %s", step, expected)
            await asyncio.sleep(0)
        return str(ctxlog.get("request_id"))

    @broker.task(task_name="job")
    async def job(request_id: str) -> None:
        await asyncio.sleep(0)
        logging.getLogger(JOB_LOGGER).info("job %s", request_id)

    @broker.task(task_name="blocking")
    def blocking(expected: str) -> str:
        time.sleep(0.001)
        log.info("in a thread for %s", expected)
        return str(ctxlog.get("request_id"))

    @broker.task(task_name="chain")
    async def chain() -> str:
        log.info("chain starts")
        await broker.find_task("work").kiq(str(ctxlog.get("request_id")))  # type: ignore[union-attr]
        return str(ctxlog.get("request_id"))

    @broker.task(task_name="snoop")
    async def snoop() -> dict[str, object]:
        log.info("snooping")
        seen = dict(ctxlog.current())
        ctxlog.set(left="behind")  # never reset: the next task must not see it
        return seen

    @broker.task(task_name="flaky", retry_on_error=True)
    async def flaky(key: str) -> str:
        failures[key] = failures.get(key, 0) + 1
        log.info("try %d", failures[key])
        if failures[key] == 1:
            raise Boom(key)
        return str(ctxlog.get("request_id"))

    @broker.task(task_name="fail")
    async def fail() -> None:
        log.info("about to fail")
        raise Boom("no luck")

    return broker


_log_file = os.environ.get("CTXLOG_TEST_LOG")
if _log_file:  # the worker process: JSON lines into the file the test reads
    logging.getLogger().addHandler(json_handler(_log_file))
    logging.getLogger().setLevel(logging.INFO)
broker = make_broker(
    os.environ.get("CTXLOG_TEST_REDIS", "redis://127.0.0.1:6379/0"),
    os.environ.get("CTXLOG_TEST_QUEUE", "ctxlog-tests"),
)
