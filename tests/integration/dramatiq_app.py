"""The actors the Dramatiq tests run, declared on whichever broker a test gives.

Run as a worker process (``dramatiq tests.integration.dramatiq_app``), it builds a
RedisBroker from ``CTXLOG_TEST_REDIS`` and writes JSON lines to
``CTXLOG_TEST_LOG``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

from ctxlog.dramatiq import ContextMiddleware
from tests.integration._queues import Declared, awork, fail, leaky, log, whoami, work


def declare(broker: Any) -> Declared:
    """Add ctxlog's middleware (and AsyncIO) to *broker* and declare the actors on it."""
    broker.add_middleware(AsyncIO())
    broker.add_middleware(ContextMiddleware())
    attempts: dict[str, int] = {}

    def flaky(tag: str) -> None:
        attempts[tag] = attempts.get(tag, 0) + 1
        log.info("attempt %d of %s", attempts[tag], tag)
        if attempts[tag] == 1:
            raise RuntimeError(tag)

    def spawn(tag: str) -> None:
        log.info("spawning %s", tag)
        actors.work.send(tag + "-child")

    def actor(fn: Any, **options: Any) -> Any:
        # No retries unless asked: a failing test must not wait out Dramatiq's backoff.
        options.setdefault("max_retries", 0)
        return dramatiq.actor(broker=broker, actor_name=fn.__name__, **options)(fn)

    actors = Declared(
        work=actor(work),
        whoami=actor(whoami),
        fail=actor(fail),
        flaky=actor(flaky, max_retries=2, min_backoff=10, max_backoff=20),
        spawn=actor(spawn),
        leaky=actor(leaky),
        awork=actor(awork),
    )
    return actors


if "CTXLOG_TEST_REDIS" in os.environ:  # the worker process
    from tests.integration._queues import Declared, json_handler

    logging.getLogger().addHandler(json_handler(os.environ["CTXLOG_TEST_LOG"]))
    logging.getLogger().setLevel(logging.INFO)
    broker = RedisBroker(url=os.environ["CTXLOG_TEST_REDIS"])
    dramatiq.set_broker(broker)
    actors = declare(broker)
