"""The tasks the Huey tests run, declared on whichever Huey instance a test gives.

As ``huey_consumer tests.integration.huey_app.huey``, it builds a RedisHuey on
``CTXLOG_TEST_REDIS`` and writes the consumer's lines as JSON to
``CTXLOG_TEST_LOG``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from huey import RedisHuey

import ctxlog.huey
from tests.integration._queues import Declared, fail, in_a_thread, leaky, log, whoami, work


def declare(huey: Any) -> Declared:
    """Install ctxlog on *huey* and declare the tasks on it."""
    ctxlog.huey.install(huey)

    def flaky(tag: str, task: Any = None) -> None:
        log.info("attempt with %s retries left of %s", task.retries, tag)
        if task.retries:
            raise RuntimeError(tag)

    def spawn(tag: str) -> None:
        log.info("spawning %s", tag)
        tasks.work(tag + "-child")

    def threads(tag: str) -> None:
        log.info("before %s", tag)
        asyncio.run(asyncio.to_thread(in_a_thread, tag))

    task = huey.task
    tasks = Declared(
        work=task()(work),
        whoami=task()(whoami),
        fail=task()(fail),
        flaky=task(retries=1, context=True)(flaky),
        spawn=task()(spawn),
        leaky=task()(leaky),
        threads=task()(threads),
    )
    return tasks


if "CTXLOG_TEST_REDIS" in os.environ:  # the consumer process
    from tests.integration._queues import Declared, json_handler

    logging.getLogger().addHandler(json_handler(os.environ["CTXLOG_TEST_LOG"]))
    logging.getLogger().setLevel(logging.INFO)
    huey = RedisHuey("ctxlog-test", url=os.environ["CTXLOG_TEST_REDIS"])
    tasks = declare(huey)
