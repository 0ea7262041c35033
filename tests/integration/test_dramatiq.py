"""ctxlog.dramatiq with Dramatiq's real Worker: in this process on the StubBroker and
on a real Redis, and as a ``dramatiq`` worker process; assertions on the JSON lines
the worker writes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq import Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import SkipMessage, default_middleware

import ctxlog
from ctxlog.dramatiq import CONTEXT_OPTION, ContextMiddleware
from ctxlog.headers import is_valid_request_id
from tests.integration._queues import (
    JOB_LOGGER,
    Declared,
    assert_lines,
    assert_nothing_left_by,
    assert_scenario,
    json_lines_to,
    log,
    publish_from_threads,
    read_lines,
    wait_for_lines,
)
from tests.integration.dramatiq_app import declare

ROOT = Path(__file__).resolve().parents[2]


class Running:
    """A broker with the actors declared, a real Worker on it, and the lines written."""

    def __init__(self, broker: Any, log: Path, threads: int) -> None:
        self.broker = broker
        self.actors: Declared = declare(broker)
        self.log = log
        self.worker = Worker(broker, worker_threads=threads, worker_timeout=50)

    def join(self) -> list[dict[str, Any]]:
        """Wait until every message sent so far ran; return the job lines."""
        if isinstance(self.broker, StubBroker):
            self.broker.join("default", fail_fast=False)
        else:
            self.broker.join("default", timeout=30_000)
        self.worker.join()
        return [line for line in read_lines(self.log) if line["logger"] == JOB_LOGGER]


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[Running]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    with json_lines_to(tmp_path / "worker.log"):
        running = Running(broker, tmp_path / "worker.log", threads=1)
        running.worker.start()
        try:
            yield running
        finally:
            running.worker.stop()
            broker.close()


def test_the_publishers_context_reaches_every_line_of_the_actor(stub: Running) -> None:
    with ctxlog.scope(request_id="r-1", user="ann"):
        ctxlog.annotate(tenant="acme")
        message = stub.actors.work.send("a")
    lines = stub.join()
    assert_lines(
        lines,
        ["job a", "done a"],
        request_id="r-1",
        user="ann",
        tenant="acme",
        task_id=message.message_id,
        task_name="work",
    )


def test_a_message_sent_outside_any_request_gets_a_fresh_id_its_children_share(
    stub: Running,
) -> None:
    parent = stub.actors.spawn.send("p")
    lines = stub.join()
    spawning, child = (
        next(line for line in lines if line["message"] == text)
        for text in ("spawning p", "job p-child")
    )
    assert is_valid_request_id(spawning["request_id"])
    assert child["request_id"] == spawning["request_id"]
    assert spawning["task_id"] == parent.message_id
    assert child["task_id"] != parent.message_id
    assert child["task_name"] == "work"


def test_nothing_leaks_to_the_next_message_on_the_same_worker_thread(stub: Running) -> None:
    with ctxlog.scope(request_id="r-leak"):
        stub.actors.leaky.send("x")
    stub.join()
    stub.actors.whoami.send("next")
    whoami = next(line for line in stub.join() if line["message"] == "whoami next []")
    assert_nothing_left_by("r-leak", whoami)
    assert whoami["task_name"] == "whoami"


def test_a_retry_keeps_the_original_ids(stub: Running) -> None:
    with ctxlog.scope(request_id="r-retry"):
        message = stub.actors.flaky.send("f")
    lines = stub.join()
    attempts = [line for line in lines if line["message"].startswith("attempt")]
    assert_lines(
        attempts,
        ["attempt 1 of f", "attempt 2 of f"],
        request_id="r-retry",
        task_id=message.message_id,
    )


def test_a_failing_actors_error_line_carries_the_id(stub: Running, tmp_path: Path) -> None:
    with ctxlog.scope(request_id="r-fail"):
        message = stub.actors.fail.send("boom")
    stub.join()
    errors = [line for line in read_lines(tmp_path / "worker.log") if line["level"] == "ERROR"]
    (error,) = [line for line in errors if "unhandled exception" in line["message"]]
    assert error["request_id"] == "r-fail"
    assert error["task_id"] == message.message_id
    assert "ValueError: boom" in error["exception"]


def test_an_async_actor_keeps_the_context_across_awaits_and_in_threads(stub: Running) -> None:
    with ctxlog.scope(request_id="r-async"):
        message = stub.actors.awork.send("aw")
    lines = stub.join()
    assert_lines(
        lines,
        ["async before aw", "async after aw", "thread aw"],
        request_id="r-async",
        task_id=message.message_id,
        task_name="awork",
    )


def test_an_option_the_worker_cannot_read_is_ignored_with_a_warning(
    stub: Running, tmp_path: Path
) -> None:
    message = stub.actors.whoami.send_with_options(args=("bad",), **{CONTEXT_OPTION: "{"})
    (line,) = stub.join()
    assert line["task_id"] == message.message_id
    assert "request_id" not in line
    (warning,) = [
        x for x in read_lines(tmp_path / "worker.log") if x["logger"] == "ctxlog.dramatiq"
    ]
    assert warning["message"].startswith(
        f"Ignored the ctxlog_context message option of task whoami[{message.message_id}]:"
    )


def test_200_messages_from_20_publishers_on_redis_none_missing_none_crossed(
    redis_url: str, tmp_path: Path
) -> None:
    broker = RedisBroker(url=redis_url, namespace="in-process")
    broker.client.flushdb()
    with json_lines_to(tmp_path / "worker.log"):
        running = Running(broker, tmp_path / "worker.log", threads=8)
        running.worker.start()
        try:
            ids = publish_from_threads(running.actors.work.send)
            lines = running.join()
        finally:
            running.worker.stop()
            broker.close()
    assert_scenario(lines, ids, task_name="work")


def test_a_dramatiq_worker_process_on_redis(redis_url: str, tmp_path: Path) -> None:
    """The ``dramatiq`` command, its processes and threads, the same guarantees."""
    log = tmp_path / "worker.log"
    env = {**os.environ, "CTXLOG_TEST_REDIS": redis_url, "CTXLOG_TEST_LOG": str(log)}
    broker = RedisBroker(url=redis_url)
    broker.client.flushdb()
    actors = declare(broker)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dramatiq",
            "tests.integration.dramatiq_app",
            "--processes",
            "1",
            "--threads",
            "4",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ids = publish_from_threads(actors.work.send)
        with ctxlog.scope(request_id="r-proc"):
            failed = actors.fail.send("in-process")
        lines = wait_for_lines(log, lambda line: line["logger"] == JOB_LOGGER, len(ids) * 2 + 1)
        errors = wait_for_lines(log, lambda line: line["level"] == "ERROR")
    finally:
        worker.terminate()
        _, stderr = worker.communicate(timeout=30)
        broker.close()
    assert lines, stderr.decode(errors="replace")[-2000:]
    assert_scenario(lines, ids, task_name="work")
    (error,) = errors
    assert error["request_id"] == "r-proc"
    assert error["task_id"] == failed.message_id


def test_added_first_the_middleware_covers_the_lines_other_middleware_writes(
    tmp_path: Path,
) -> None:
    broker = StubBroker(middleware=[ContextMiddleware(), *(m() for m in default_middleware)])
    broker.emit_after("process_boot")

    def flaky_once(tag: str) -> None:
        raise RuntimeError(tag)

    actor = dramatiq.actor(broker=broker, max_retries=1, min_backoff=10, max_backoff=10)(flaky_once)
    worker = Worker(broker, worker_threads=1, worker_timeout=50)
    with json_lines_to(tmp_path / "worker.log"):
        worker.start()
        try:
            with ctxlog.scope(request_id="r-first"):
                message = actor.send("x")
            broker.join(actor.queue_name, fail_fast=False)
            worker.join()
        finally:
            worker.stop()
            broker.close()
    lines = read_lines(tmp_path / "worker.log")
    (retrying,) = [line for line in lines if line["message"].startswith("Retrying message")]
    assert retrying["request_id"] == "r-first"
    assert retrying["task_id"] == message.message_id


class SkipTagged(dramatiq.Middleware):
    """Skips the messages whose first argument starts with "skip" (as AgeLimit skips)."""

    def before_process_message(self, broker: Any, message: Any) -> None:  # noqa: ARG002 -- Dramatiq's hook signature
        if str(message.args[0]).startswith("skip"):
            log.warning("skipping %s", message.args[0])
            raise SkipMessage


def test_a_skipped_message_is_one_unit_too(stub: Running, tmp_path: Path) -> None:
    stub.broker.add_middleware(SkipTagged())
    with ctxlog.scope(request_id="r-skip"):
        skipped = stub.actors.work.send("skip-me")
    stub.join()
    stub.actors.whoami.send("after")
    after = next(line for line in stub.join() if line["message"].startswith("whoami"))
    lines = read_lines(tmp_path / "worker.log")
    (skipping,) = [line for line in lines if line["message"] == "skipping skip-me"]
    (was_skipped,) = [line for line in lines if line["message"].endswith("was skipped.")]
    for line in (skipping, was_skipped):
        assert line["request_id"] == "r-skip"
        assert line["task_id"] == skipped.message_id
    assert after["message"] == "whoami after []"
    assert after["request_id"] != "r-skip"
    (ours,) = [m for m in stub.broker.middleware if isinstance(m, ContextMiddleware)]
    assert not ours._running  # every unit closed, the skipped message's too
