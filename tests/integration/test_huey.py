"""ctxlog.huey with Huey's real consumer: in this process on MemoryHuey and on a real
Redis, in immediate mode, and as a ``huey_consumer`` process; assertions on the JSON
lines the consumer writes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huey import MemoryHuey, RedisHuey
from huey.exceptions import CancelExecution

import ctxlog
import ctxlog.huey
from ctxlog.headers import is_valid_request_id
from ctxlog.huey import CONTEXT_KWARG
from tests.integration._queues import (
    JOB_LOGGER,
    Declared,
    assert_lines,
    assert_nothing_left_by,
    assert_scenario,
    json_lines_to,
    publish_from_threads,
    read_lines,
    wait_for_lines,
)
from tests.integration.huey_app import declare

ROOT = Path(__file__).resolve().parents[2]


class Running:
    """A Huey instance with the tasks declared, its real consumer, and the lines written."""

    def __init__(self, huey: Any, log: Path, workers: int) -> None:
        self.huey = huey
        self.tasks: Declared = declare(huey)
        self.log = log
        self.consumer = huey.create_consumer(
            workers=workers, worker_type="thread", periodic=False, check_worker_health=False
        )

    def lines(self, count: int) -> list[dict[str, Any]]:
        """Wait for *count* job lines; return the job lines."""
        return wait_for_lines(self.log, lambda line: line["logger"] == JOB_LOGGER, count)

    def __enter__(self) -> Running:
        self.consumer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.stop(graceful=True)


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[Running]:
    with (
        json_lines_to(tmp_path / "consumer.log"),
        Running(
            MemoryHuey("ctxlog-test", utc=True), tmp_path / "consumer.log", workers=1
        ) as running,
    ):
        yield running


def test_the_publishers_context_reaches_every_line_of_the_task(memory: Running) -> None:
    with ctxlog.scope(request_id="r-1", user="ann"):
        ctxlog.annotate(tenant="acme")
        result = memory.tasks.work("a")
    lines = memory.lines(2)
    assert_lines(
        lines,
        ["job a", "done a"],
        request_id="r-1",
        user="ann",
        tenant="acme",
        task_id=result.id,
        task_name="work",
    )


def test_the_task_function_never_sees_the_envelope(memory: Running) -> None:
    with ctxlog.scope(request_id="r-kw"):
        memory.tasks.whoami("x", extra=1)
    (line,) = memory.lines(1)
    assert line["message"] == "whoami x ['extra']"
    assert line["request_id"] == "r-kw"


def test_a_task_enqueued_outside_any_request_gets_a_fresh_id_its_children_share(
    memory: Running,
) -> None:
    parent = memory.tasks.spawn("p")
    lines = memory.lines(3)
    spawning, child = (
        next(line for line in lines if line["message"] == text)
        for text in ("spawning p", "job p-child")
    )
    assert is_valid_request_id(spawning["request_id"])
    assert child["request_id"] == spawning["request_id"]
    assert spawning["task_id"] == parent.id
    assert child["task_id"] != parent.id


def test_a_pipeline_shares_one_fresh_id(memory: Running) -> None:
    pipeline = memory.tasks.work.s("first").then(memory.tasks.whoami, "second")
    memory.huey.enqueue(pipeline)
    lines = memory.lines(3)
    assert len({line["request_id"] for line in lines}) == 1
    assert len({line["task_id"] for line in lines}) == 2


def test_nothing_leaks_to_the_next_task_on_the_same_worker(memory: Running) -> None:
    with ctxlog.scope(request_id="r-leak"):
        memory.tasks.leaky("x")
    memory.tasks.whoami("next")
    whoami = next(line for line in memory.lines(2) if line["message"].startswith("whoami"))
    assert_nothing_left_by("r-leak", whoami)


def test_a_retry_keeps_the_original_ids(memory: Running) -> None:
    with ctxlog.scope(request_id="r-retry"):
        result = memory.tasks.flaky("f")
    lines = memory.lines(2)
    assert_lines(
        lines,
        [
            "attempt with 1 retries left of f",
            "attempt with 0 retries left of f",
        ],
        request_id="r-retry",
        task_id=result.id,
    )


def test_a_failing_tasks_error_line_carries_the_id(memory: Running) -> None:
    with ctxlog.scope(request_id="r-fail"):
        result = memory.tasks.fail("boom")
    (error,) = wait_for_lines(memory.log, lambda line: line["level"] == "ERROR")
    assert error["message"] == f"Unhandled exception in task {result.id}."
    assert error["request_id"] == "r-fail"
    assert error["task_id"] == result.id
    assert "ValueError: boom" in error["exception"]


def test_a_task_keeps_the_context_in_the_threads_it_starts(memory: Running) -> None:
    with ctxlog.scope(request_id="r-thread"):
        memory.tasks.threads("t")
    lines = memory.lines(2)
    assert [line["message"] for line in lines] == ["before t", "thread t"]
    assert {line["request_id"] for line in lines} == {"r-thread"}


def test_a_value_the_consumer_cannot_read_is_ignored_with_a_warning(memory: Running) -> None:
    result = memory.tasks.whoami("bad", **{CONTEXT_KWARG: "{"})
    (line,) = memory.lines(1)
    assert line["message"] == "whoami bad []"
    assert line["task_id"] == result.id
    (warning,) = [x for x in read_lines(memory.log) if x["logger"] == "ctxlog.huey"]
    assert warning["message"].startswith(
        f"Ignored the ctxlog_context keyword argument of task whoami[{result.id}]:"
    )


def test_immediate_mode_runs_the_task_in_its_own_unit_and_gives_the_context_back(
    tmp_path: Path,
) -> None:
    huey = MemoryHuey("ctxlog-immediate", immediate=True)
    tasks = declare(huey)
    with json_lines_to(tmp_path / "log"), ctxlog.bind(request_id="r-now", user="ann"):
        result = tasks.work("now")
        assert dict(ctxlog.current()) == {"request_id": "r-now", "user": "ann"}
    lines = [line for line in read_lines(tmp_path / "log") if line["logger"] == JOB_LOGGER]
    assert_lines(lines, ["job now", "done now"], request_id="r-now", task_id=result.id)


def test_install_twice_changes_nothing_and_uninstall_undoes_it(tmp_path: Path) -> None:
    huey = MemoryHuey("ctxlog-install", immediate=True)
    tasks = declare(huey)
    ctxlog.huey.install(huey)
    assert ctxlog.huey.installed(huey)
    with json_lines_to(tmp_path / "log"), ctxlog.bind(request_id="r-twice"):
        tasks.whoami("once")
    ctxlog.huey.uninstall(huey)
    assert not ctxlog.huey.installed(huey)
    with json_lines_to(tmp_path / "log"), ctxlog.bind(request_id="r-off"):
        tasks.whoami("off")
    first, second = [line for line in read_lines(tmp_path / "log") if line["logger"] == JOB_LOGGER]
    assert first["message"] == "whoami once []"
    assert first["task_name"] == "whoami"
    assert "task_id" not in second


def test_200_tasks_from_20_publishers_on_redis(redis_url: str, tmp_path: Path) -> None:
    huey = RedisHuey("ctxlog-in-process", url=redis_url, utc=True)
    huey.flush()
    with (
        json_lines_to(tmp_path / "consumer.log"),
        Running(huey, tmp_path / "consumer.log", workers=8) as running,
    ):
        ids = publish_from_threads(running.tasks.work)
        lines = running.lines(len(ids) * 2)
    assert_scenario(lines, ids, task_name="work")


def test_a_huey_consumer_process_on_redis(redis_url: str, tmp_path: Path) -> None:
    """``huey_consumer`` with worker threads: the same guarantees."""
    log = tmp_path / "consumer.log"
    env = {**os.environ, "CTXLOG_TEST_REDIS": redis_url, "CTXLOG_TEST_LOG": str(log)}
    huey = RedisHuey("ctxlog-test", url=redis_url, utc=True)
    huey.flush()
    tasks = declare(huey)
    consumer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "huey.bin.huey_consumer",
            "tests.integration.huey_app.huey",
            "--workers",
            "4",
            "--worker-type",
            "thread",
            "--no-periodic",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ids = publish_from_threads(tasks.work)
        with ctxlog.scope(request_id="r-proc"):
            failed = tasks.fail("in-a-process")
        lines = wait_for_lines(log, lambda line: line["logger"] == JOB_LOGGER, len(ids) * 2 + 1)
        errors = wait_for_lines(log, lambda line: line["level"] == "ERROR")
    finally:
        consumer.terminate()
        _, stderr = consumer.communicate(timeout=30)
    assert lines, stderr.decode(errors="replace")[-2000:]
    assert_scenario(lines, ids, task_name="work")
    (error,) = errors
    assert error["request_id"] == "r-proc"
    assert error["task_id"] == failed.id


def test_a_task_cancelled_before_it_runs_gives_the_context_back(tmp_path: Path) -> None:
    huey = MemoryHuey("ctxlog-cancel", immediate=True)
    tasks = declare(huey)

    def cancel_tagged(task: Any) -> None:
        if task.args and str(task.args[0]).startswith("cancel"):
            raise CancelExecution

    huey.pre_execute()(cancel_tagged)

    with json_lines_to(tmp_path / "log"), ctxlog.bind(request_id="r-cancel"):
        cancelled = tasks.work("cancel-me")
        assert dict(ctxlog.current()) == {"request_id": "r-cancel"}
    (line,) = [x for x in read_lines(tmp_path / "log") if "cancelled by" in x["message"]]
    assert line["task_id"] == cancelled.id
    assert line["request_id"] == "r-cancel"
