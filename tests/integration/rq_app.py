"""The RQ-specific jobs and workers of the RQ tests (the others are in ``_queues``).

As ``rq worker --config tests.integration.rq_app``, it also writes the worker
process's lines as JSON to ``CTXLOG_TEST_LOG`` and points it at
``CTXLOG_TEST_REDIS`` (``REDIS_URL``, an RQ setting).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from rq import Queue, SimpleWorker, Worker, get_current_job

from ctxlog.rq import ContextJob
from tests.integration._queues import log, work


def flaky(tag: str) -> None:
    job = get_current_job()
    assert job is not None
    log.info("attempt with %s retries left of %s", job.retries_left, tag)
    if job.retries_left == 2:  # the first attempt
        raise RuntimeError(tag)


def spawn(tag: str) -> None:
    job = get_current_job()
    assert job is not None
    log.info("spawning %s", tag)
    Queue(job.origin, connection=job.connection, job_class=ContextJob).enqueue(work, tag + "-child")


class _QuickStop:
    """RQ's worker, with its control-channel thread polling every 50 ms instead of 60 s.

    redis-py's pubsub thread can sleep out its whole interval once the worker has
    unsubscribed, which holds up the end of every burst by up to a minute.
    """

    def subscribe(self: Any) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=0.05, daemon=True, exception_handler=self._pubsub_exception_handler
        )


class QuickSimpleWorker(_QuickStop, SimpleWorker):
    """RQ's SimpleWorker (jobs in the worker's own thread), stopping promptly."""


class QuickWorker(_QuickStop, Worker):
    """RQ's Worker (a work horse forked per job), stopping promptly."""


if "CTXLOG_TEST_LOG" in os.environ:  # the worker process
    from tests.integration._queues import json_handler

    logging.getLogger().addHandler(json_handler(os.environ["CTXLOG_TEST_LOG"]))
    logging.getLogger().setLevel(logging.INFO)
    REDIS_URL = os.environ["CTXLOG_TEST_REDIS"]
