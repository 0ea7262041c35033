"""ctxlog.rq with RQ's real workers on a real Redis: a SimpleWorker in this process and
an ``rq worker --burst`` process (forking a work horse per job); assertions on the
JSON lines the worker writes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Queue, Retry

import ctxlog
from ctxlog.headers import is_valid_request_id
from ctxlog.rq import CONTEXT_META_KEY, ContextJob
from tests.integration import _queues as jobs
from tests.integration import rq_app
from tests.integration._queues import (
    JOB_LOGGER,
    assert_lines,
    assert_nothing_left_by,
    assert_scenario,
    json_lines_to,
    publish_from_threads,
    read_lines,
)

ROOT = Path(__file__).resolve().parents[2]


class Running:
    """A queue with ContextJob on a real Redis, and a burst SimpleWorker to run it."""

    def __init__(self, redis: Redis, log: Path) -> None:
        self.redis = redis
        self.log = log
        self.queue = Queue("default", connection=redis, job_class=ContextJob)

    def work(self) -> list[dict[str, Any]]:
        """Run every job enqueued so far; return the lines the jobs logged."""
        worker = rq_app.QuickSimpleWorker([self.queue], connection=self.redis, job_class=ContextJob)
        worker.work(burst=True, logging_level="INFO")
        return [line for line in read_lines(self.log) if line["logger"] == JOB_LOGGER]

    def all_lines(self) -> list[dict[str, Any]]:
        return read_lines(self.log)


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    connection = Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture
def rq(redis: Redis, tmp_path: Path) -> Iterator[Running]:
    with json_lines_to(tmp_path / "worker.log") as log:
        yield Running(redis, log)


def test_the_enqueuers_context_reaches_every_line_of_the_job(rq: Running) -> None:
    with ctxlog.scope(request_id="r-1", user="ann"):
        ctxlog.annotate(tenant="acme")
        job = rq.queue.enqueue(jobs.work, "a")
    lines = rq.work()
    assert_lines(
        lines,
        ["job a", "done a"],
        request_id="r-1",
        user="ann",
        tenant="acme",
        task_id=job.id,
        task_name="tests.integration._queues.work",
    )


def test_a_job_enqueued_outside_any_request_gets_a_fresh_id_its_children_share(
    rq: Running,
) -> None:
    parent = rq.queue.enqueue(rq_app.spawn, "p")
    lines = rq.work()
    spawning, child = (
        next(line for line in lines if line["message"] == text)
        for text in ("spawning p", "job p-child")
    )
    assert is_valid_request_id(spawning["request_id"])
    assert child["request_id"] == spawning["request_id"]
    assert spawning["task_id"] == parent.id
    assert child["task_id"] != parent.id


def test_nothing_leaks_to_the_next_job_on_the_same_worker(rq: Running) -> None:
    with ctxlog.scope(request_id="r-leak"):
        rq.queue.enqueue(jobs.leaky, "x")
    rq.queue.enqueue(jobs.whoami, "next")
    whoami = next(line for line in rq.work() if line["message"] == "whoami next []")
    assert_nothing_left_by("r-leak", whoami)
    assert ctxlog.get("leaked") is None


def test_a_retry_keeps_the_original_ids(rq: Running) -> None:
    with ctxlog.scope(request_id="r-retry"):
        job = rq.queue.enqueue(rq_app.flaky, "f", retry=Retry(max=2))
    lines = rq.work()
    assert_lines(
        lines,
        [
            "attempt with 2 retries left of f",
            "attempt with 1 retries left of f",
        ],
        request_id="r-retry",
        task_id=job.id,
    )


def test_a_failing_jobs_error_line_carries_the_id(rq: Running) -> None:
    with ctxlog.scope(request_id="r-fail"):
        job = rq.queue.enqueue(jobs.fail, "boom")
    rq.work()
    (error,) = [line for line in rq.all_lines() if line["level"] == "ERROR"]
    assert "exception raised while executing" in error["message"]
    assert "ValueError: boom" in error["message"]
    assert error["request_id"] == "r-fail"
    assert error["task_id"] == job.id
    assert ctxlog.get("request_id") is None


def test_an_async_job_keeps_the_context_across_awaits_and_in_threads(rq: Running) -> None:
    with ctxlog.scope(request_id="r-async"):
        job = rq.queue.enqueue(jobs.awork, "aw")
    lines = rq.work()
    assert_lines(
        lines,
        ["async before aw", "async after aw", "thread aw"],
        request_id="r-async",
        task_id=job.id,
    )


def test_a_meta_entry_the_worker_cannot_read_is_ignored_with_a_warning(rq: Running) -> None:
    job = rq.queue.enqueue(jobs.whoami, "bad", meta={CONTEXT_META_KEY: "{"})
    (line,) = rq.work()
    assert line["task_id"] == job.id
    assert "request_id" not in line
    (warning,) = [x for x in rq.all_lines() if x["logger"] == "ctxlog.rq"]
    assert warning["message"].startswith(
        "Ignored the ctxlog_context job meta entry of task "
        f"tests.integration._queues.whoami[{job.id}]:"
    )


def test_200_jobs_from_20_publishers_on_a_simple_worker(rq: Running) -> None:
    ids = publish_from_threads(lambda request_id: rq.queue.enqueue(jobs.work, request_id))
    assert_scenario(rq.work(), ids, task_name="tests.integration._queues.work")


def test_an_rq_worker_process(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    """``rq worker --burst``: a work horse forked for each job, the same guarantees."""
    queue = Queue("default", connection=redis, job_class=ContextJob)
    ids = publish_from_threads(lambda request_id: queue.enqueue(jobs.work, request_id))
    with ctxlog.scope(request_id="r-proc"):
        failed = queue.enqueue(jobs.fail, "in-a-horse")
    log = tmp_path / "worker.log"
    env = {**os.environ, "CTXLOG_TEST_REDIS": redis_url, "CTXLOG_TEST_LOG": str(log)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rq.cli",
            "worker",
            "--burst",
            "--config",
            "tests.integration.rq_app",
            "--job-class",
            "ctxlog.rq.ContextJob",
            "--worker-class",
            "tests.integration.rq_app.QuickWorker",
            "default",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    lines = read_lines(log)
    assert_scenario(lines, ids, task_name="tests.integration._queues.work")
    (error,) = [line for line in lines if line["level"] == "ERROR"]
    assert error["request_id"] == "r-proc"
    assert error["task_id"] == failed.id


def test_a_synchronous_queue_gives_the_callers_context_back(rq: Running) -> None:
    queue = Queue("sync", connection=rq.redis, job_class=ContextJob, is_async=False)
    with ctxlog.bind(request_id="r-sync", user="ann"):
        done = queue.enqueue(jobs.work, "ok")
        failed = queue.enqueue(jobs.fail, "boom")
        assert dict(ctxlog.current()) == {"request_id": "r-sync", "user": "ann"}
    lines = [line for line in rq.all_lines() if line["logger"] == JOB_LOGGER]
    assert [(line["message"], line["task_id"]) for line in lines] == [
        ("job ok", done.id),
        ("done ok", done.id),
        ("failing boom", failed.id),
    ]
    assert {line["request_id"] for line in lines} == {"r-sync"}
