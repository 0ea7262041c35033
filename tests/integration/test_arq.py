"""ctxlog.arq with a real Redis and arq's real ``Worker``, in-process and as an ``arq``
process, asserted on the JSON lines the workers write."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from arq.connections import ArqRedis, RedisSettings
from arq.typing import WorkerSettingsType
from arq.worker import create_worker

import ctxlog
import ctxlog.arq
from tests.integration import arq_app
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
from tests.integration.arq_app import STEPS

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def worker(redis_url: str) -> AsyncIterator[ArqRedis]:
    """arq's Worker running the app's settings in this process, on a queue of its own;
    yields a publisher's pool (ctxlog.arq.create_pool) for that queue."""
    queue = f"ctxlog-{uuid.uuid4().hex}"
    settings = RedisSettings.from_dsn(redis_url)
    running = create_worker(
        cast("WorkerSettingsType", arq_app.WorkerSettings),  # arq's Protocol lists few settings
        redis_settings=settings,
        queue_name=queue,
        handle_signals=False,
    )
    task = asyncio.create_task(running.async_run())
    redis = await ctxlog.arq.create_pool(settings, default_queue_name=queue)
    try:
        yield redis
    finally:
        await redis.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with warnings.catch_warnings():
            # arq's Worker.close() calls redis-py's deprecated close() of its pool
            warnings.simplefilter("ignore", DeprecationWarning)
            await running.close()


async def result(redis: ArqRedis, function: str, *args: Any) -> Any:
    job = await redis.enqueue_job(function, *args)
    assert job is not None
    try:
        return await job.result(timeout=20, poll_delay=0.02)
    except arq_app.Boom as exc:
        return exc


def test_the_publishers_context_reaches_every_line_of_the_job(
    redis_url: str, tmp_path: Path
) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with worker(redis_url) as redis:
            with ctxlog.scope(request_id="req-1", user="ada"):
                ctxlog.annotate(tenant="acme")
                awaited = await result(redis, "work", "req-1")
                threaded = await result(redis, "blocking", "req-1")
            return awaited, threaded

    with json_lines_to(tmp_path / "lines.jsonl") as path:
        assert asyncio.run(scenario()) == ("req-1", ["req-1", "req-1"])
    lines = read_lines(path)
    app = assert_publishers_context(lines, "req-1", STEPS + 2)
    # the sync function ran in the executor and in asyncio.to_thread, in its job's fields
    assert {line["task_name"] for line in app} == {"work", "blocking"}
    assert len({line["task_id"] for line in app}) == 2
    # arq's own lines: the job starting ("→") and done ("←")
    arq_lines = [
        line for line in lines if line["logger"] == "arq.worker" and ":" in line["message"]
    ]
    started = [line for line in arq_lines if "→" in line["message"]]
    done = [line for line in arq_lines if "←" in line["message"]]
    assert len(started) == len(done) == 2
    for line in started + done:
        assert line["request_id"] == "req-1"
        assert line["task_id"] in line["message"]


def test_a_job_enqueued_without_an_id_gets_a_fresh_one_shared_by_what_it_enqueues(
    redis_url: str, tmp_path: Path
) -> None:
    async def scenario() -> str:
        async with worker(redis_url) as redis:
            started = str(await result(redis, "chain"))
            wait = asyncio.to_thread(
                wait_for_lines, path, lambda line: line["message"].startswith("step 2")
            )
            await wait
            return started

    with json_lines_to(tmp_path / "lines.jsonl") as path:
        fresh = asyncio.run(scenario())
    assert_fresh_id_shared(read_lines(path), fresh, 1 + STEPS)


def test_nothing_leaks_to_the_next_job_on_the_same_worker(redis_url: str, tmp_path: Path) -> None:
    async def scenario() -> tuple[Any, Any]:
        async with worker(redis_url) as redis:
            with ctxlog.bind(request_id="first", tenant="acme"):
                first = await result(redis, "snoop")
            with ctxlog.bind(request_id="second"):
                second = await result(redis, "snoop")
            return first, second

    with json_lines_to(tmp_path / "lines.jsonl"):
        first, second = asyncio.run(scenario())
    assert_nothing_leaked(first, second)


def test_a_retry_keeps_the_id_and_the_error_line_carries_it(redis_url: str, tmp_path: Path) -> None:
    async def scenario() -> tuple[str, Any]:
        async with worker(redis_url) as redis:
            with ctxlog.bind(request_id="retried"):
                job = await redis.enqueue_job("flaky")
                assert job is not None
                assert await job.result(timeout=20, poll_delay=0.02) == "retried"
            with ctxlog.bind(request_id="failing"):
                failed = await result(redis, "fail")
            return job.job_id, failed

    with json_lines_to(tmp_path / "lines.jsonl") as path:
        job_id, failed = asyncio.run(scenario())
    assert isinstance(failed, arq_app.Boom)
    lines = read_lines(path)
    tries = [line for line in lines if line["message"].startswith("try ")]
    assert [line["message"] for line in tries] == ["try 1", "try 2"]
    assert {(line["request_id"], line["task_id"]) for line in tries} == {("retried", job_id)}
    retrying = [line for line in lines if "retrying job" in line["message"]]
    assert [line["request_id"] for line in retrying] == ["retried"]
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert (errors[0]["request_id"], errors[0]["task_name"]) == ("failing", "fail")
    assert "Boom: no luck" in errors[0]["exception"]


def test_200_jobs_from_20_publishers_each_line_has_its_publishers_id(
    redis_url: str, tmp_path: Path
) -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        async with worker(redis_url) as redis:
            enqueued: list[Any] = []

            def publish(request_id: str) -> None:
                # each publisher thread enqueues through the loop, in its own context
                future = asyncio.run_coroutine_threadsafe(
                    redis.enqueue_job("job", request_id), loop
                )
                enqueued.append(future.result(30))

            ids = await asyncio.to_thread(publish_from_threads, publish)
            for job in enqueued:
                await job.result(timeout=30, poll_delay=0.05)
            return ids

    with json_lines_to(tmp_path / "lines.jsonl") as path:
        ids = asyncio.run(scenario())
    assert_scenario(read_lines(path), ids, "job")


def test_an_arq_worker_process(redis_url: str, tmp_path: Path) -> None:
    queue = f"ctxlog-{uuid.uuid4().hex}"
    log_file = tmp_path / "worker.jsonl"

    async def publish() -> None:
        redis = await ctxlog.arq.create_pool(
            RedisSettings.from_dsn(redis_url), default_queue_name=queue
        )
        try:
            with ctxlog.scope(request_id="from-web", user="ada"):
                ctxlog.annotate(tenant="acme")
                await redis.enqueue_job("work", "from-web")
                await redis.enqueue_job("blocking", "from-web")
        finally:
            await redis.aclose()

    asyncio.run(publish())
    # --burst: the worker runs what is queued, then exits
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "arq",
            "tests.integration.arq_app.WorkerSettings",
            "--burst",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "CTXLOG_TEST_REDIS": redis_url,
            "CTXLOG_TEST_QUEUE": queue,
            "CTXLOG_TEST_LOG": str(log_file),
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    lines = read_lines(log_file)
    app = assert_publishers_context(lines, "from-web", STEPS + 2)
    assert {line["task_name"] for line in app} == {"work", "blocking"}
    started = [line for line in lines if "→" in line["message"]]
    assert {line["request_id"] for line in started} == {"from-web"}


def test_worker_settings_takes_a_dict_and_keeps_the_hooks_already_there() -> None:
    calls: list[str] = []

    async def mine(ctx: dict[str, Any]) -> None:
        calls.append(str(ctxlog.get("task_id")))

    settings: dict[str, Any] = ctxlog.arq.worker_settings(
        {"functions": [arq_app.work], "on_job_start": mine}
    )
    assert settings["functions"] == [arq_app.work]
    assert isinstance(settings["job_serializer"], ctxlog.arq.job_serializer)
    assert ctxlog.arq.worker_settings(settings) == settings  # wrapped once only

    async def run() -> None:
        await settings["on_job_start"]({"job_id": "j-1"})
        await settings["after_job_end"]({"job_id": "j-1"})

    asyncio.run(run())
    assert calls == ["j-1"]  # the hook ran inside the job's unit of work
    with pytest.raises(ctxlog.ContextError, match="WorkerSettings class"):
        ctxlog.arq.worker_settings([])
