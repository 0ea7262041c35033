"""ctxlog.taskiq with a real Redis (taskiq-redis) and Taskiq's real receiver, in-process
and as a ``taskiq worker`` process, asserted on the JSON lines the workers write."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask
from taskiq.api import run_receiver_task

import ctxlog
from tests.integration import taskiq_app
from tests.integration._queues import (
    assert_fresh_id_shared,
    assert_nothing_leaked,
    assert_publishers_context,
    assert_scenario,
    json_lines_to,
    publish_from_threads,
    read_lines,
    wait_for_lines,
)
from tests.integration.taskiq_app import STEPS

ROOT = Path(__file__).resolve().parents[2]


def _task(broker: AsyncBroker, name: str) -> AsyncTaskiqDecoratedTask[Any, Any]:
    task = broker.find_task(name)
    assert task is not None
    return task


@contextlib.asynccontextmanager
async def worker(redis_url: str) -> AsyncIterator[AsyncBroker]:
    """A broker on its own queue, with Taskiq's receiver running it in this process."""
    broker = taskiq_app.make_broker(redis_url, f"ctxlog-{uuid.uuid4().hex}")
    await broker.startup()
    receiver = asyncio.create_task(run_receiver_task(broker, sync_workers=4))
    try:
        yield broker
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        await broker.shutdown()


async def result(broker: AsyncBroker, name: str, *args: Any) -> Any:
    kicked = await _task(broker, name).kiq(*args)
    outcome = await kicked.wait_result(timeout=20)
    return outcome.return_value if not outcome.is_err else outcome.error


def test_the_publishers_context_reaches_every_line_of_the_task(
    redis_url: str, tmp_path: Path
) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with worker(redis_url) as broker:
            with ctxlog.scope(request_id="req-1", user="ada"):
                ctxlog.annotate(tenant="acme")
                async_result = await result(broker, "work", "req-1")
                thread_result = await result(broker, "blocking", "req-1")
            return async_result, thread_result

    with json_lines_to(tmp_path / "lines.jsonl") as path:
        assert asyncio.run(scenario()) == ("req-1", "req-1")
    app = assert_publishers_context(read_lines(path), "req-1", STEPS + 1)
    # the sync task ran in Taskiq's thread pool, in its own task fields
    assert {line["task_name"] for line in app} == {"work", "blocking"}
    assert len({line["task_id"] for line in app}) == 2
    executing = [line for line in read_lines(path) if line["message"].startswith("Executing task")]
    assert [line["request_id"] for line in executing] == ["req-1", "req-1"]
    assert all(line["task_id"] in line["message"] for line in executing)


def test_a_task_kicked_without_an_id_gets_a_fresh_one_shared_by_what_it_kicks(
    redis_url: str, tmp_path: Path
) -> None:
    async def scenario() -> str:
        async with worker(redis_url) as broker:
            started = str(await result(broker, "chain"))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                line["message"].startswith("step 2") for line in read_lines(path)
            ):
                await asyncio.sleep(0.02)
            return started

    with json_lines_to(tmp_path / "lines.jsonl") as path:
        fresh = asyncio.run(scenario())
    assert_fresh_id_shared(read_lines(path), fresh, 1 + STEPS)


def test_nothing_leaks_to_the_next_task_on_the_same_worker(redis_url: str, tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with worker(redis_url) as broker:
            with ctxlog.bind(request_id="first", tenant="acme"):
                first = await result(broker, "snoop")
            with ctxlog.bind(request_id="second"):
                second = await result(broker, "snoop")
            return first, second

    with json_lines_to(tmp_path / "lines.jsonl"):
        first, second = asyncio.run(scenario())
    assert_nothing_leaked(first, second)


def test_a_retry_keeps_the_id_and_the_error_line_carries_it(redis_url: str, tmp_path: Path) -> None:
    key = uuid.uuid4().hex

    async def scenario() -> tuple[Any, Any]:
        async with worker(redis_url) as broker:
            with ctxlog.bind(request_id="retried"):
                kicked = await _task(broker, "flaky").kiq(key)
                # the first try fails; the retry middleware kicks it again
                deadline = time.monotonic() + 20
                while taskiq_app.failures.get(key, 0) < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
            with ctxlog.bind(request_id="failing"):
                failed = await result(broker, "fail")
            return kicked.task_id, failed

    with json_lines_to(tmp_path / "lines.jsonl") as path:
        task_id, failed = asyncio.run(scenario())
    assert isinstance(failed, taskiq_app.Boom)
    tries = [line for line in read_lines(path) if line["message"].startswith("try ")]
    assert [line["message"] for line in tries] == ["try 1", "try 2"]
    assert {line["request_id"] for line in tries} == {"retried"}
    assert {line["task_id"] for line in tries} == {task_id}
    errors = [line for line in read_lines(path) if line["level"] == "ERROR"]
    assert len(errors) == 2
    assert {line["request_id"] for line in errors} == {"retried", "failing"}
    assert all("Boom" in line["exception"] for line in errors)
    assert all(line["task_name"] in {"flaky", "fail"} for line in errors)


def test_200_tasks_from_20_publishers_each_line_has_its_publishers_id(
    redis_url: str, tmp_path: Path
) -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        async with worker(redis_url) as broker:
            job = _task(broker, "job")
            kicked: list[Any] = []

            def publish(request_id: str) -> None:
                # each publisher thread kicks through the loop, in its own context
                future = asyncio.run_coroutine_threadsafe(job.kiq(request_id), loop)
                kicked.append(future.result(30))

            ids = await asyncio.to_thread(publish_from_threads, publish)
            for task in kicked:
                assert not (await task.wait_result(timeout=30)).is_err
            return ids

    with json_lines_to(tmp_path / "lines.jsonl") as path:
        ids = asyncio.run(scenario())
    assert_scenario(read_lines(path), ids, "job")


def test_a_taskiq_worker_process(redis_url: str, tmp_path: Path) -> None:
    queue = f"ctxlog-{uuid.uuid4().hex}"
    log_file = tmp_path / "worker.jsonl"
    env = {
        **os.environ,
        "CTXLOG_TEST_REDIS": redis_url,
        "CTXLOG_TEST_QUEUE": queue,
        "CTXLOG_TEST_LOG": str(log_file),
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskiq",
            "worker",
            "tests.integration.taskiq_app:broker",
            "--workers",
            "1",
            "--no-configure-logging",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    async def publish() -> None:
        broker = taskiq_app.make_broker(redis_url, queue)
        await broker.startup()
        try:
            with ctxlog.scope(request_id="from-web", user="ada"):
                ctxlog.annotate(tenant="acme")
                work = await _task(broker, "work").kiq("from-web")
                blocking = await _task(broker, "blocking").kiq("from-web")
            for kicked in (work, blocking):
                outcome = await kicked.wait_result(timeout=30)
                assert outcome.return_value == "from-web"
        finally:
            await broker.shutdown()

    try:
        asyncio.run(publish())
        wait_for_lines(log_file, lambda line: line["logger"] == "app.tasks", STEPS + 1)
        found = read_lines(log_file)
    finally:
        # Taskiq's worker process waits on Redis and outlives SIGINT and SIGTERM: its
        # process group (the manager and its worker) is killed once the lines are in.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    app = assert_publishers_context(found, "from-web", STEPS + 1)
    assert {line["task_name"] for line in app} == {"work", "blocking"}
    executing = [line for line in found if line["message"].startswith("Executing task")]
    assert {line["request_id"] for line in executing} == {"from-web"}
