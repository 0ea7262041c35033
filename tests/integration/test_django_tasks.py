"""ctxlog.django_tasks on Django's task framework with django-tasks-db's database backend:
its real worker in a thread of this process and as a ``db_worker`` process, asserted on
the JSON lines the workers write."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

import ctxlog
from tests.integration import django_site, django_tasks_app
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
from tests.integration.django_tasks_app import STEPS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _database() -> None:
    call_command("migrate", verbosity=0)
    connection.close()


@contextlib.contextmanager
def worker() -> Iterator[None]:
    """django-tasks-db's worker, running in a thread of this process."""
    # its module loads the models: only once the site's settings are configured
    from django_tasks_db.management.commands.db_worker import Worker  # noqa: PLC0415

    running = Worker(
        queue_names=["default"],
        interval=0.01,
        batch=False,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id="in-process",
        excluded_queue_names=[],
    )

    def run() -> None:
        try:
            running.run()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        running.running = False
        thread.join(20)


def enqueue(task: Any, *args: Any) -> Any:
    try:
        return task.enqueue(*args)
    finally:
        connection.close()  # publisher threads each opened one


def finished(result: Any) -> Any:
    """Wait (bounded) for *result* to finish; return it refreshed."""
    for _ in range(2000):
        result.refresh()
        if result.is_finished:
            return result
        threading.Event().wait(0.01)
    msg = f"task {result.id} did not finish"
    raise AssertionError(msg)


def test_the_publishers_context_reaches_every_line_of_the_task(tmp_path: Path) -> None:
    with json_lines_to(tmp_path / "lines.jsonl") as path, worker():
        with ctxlog.scope(request_id="req-1", user="ada"):
            ctxlog.annotate(tenant="acme")
            result = enqueue(django_tasks_app.work, "req-1")
        assert finished(result).return_value == "req-1"
    # the function never saw the envelope; the stored arguments hold it
    assert set(result.kwargs) == {"ctxlog_context"}
    lines = read_lines(path)
    for line in assert_publishers_context(lines, "req-1", STEPS):
        assert line["task_id"] == str(result.id)
        assert line["task_name"] == "tests.integration.django_tasks_app.work"
    state = [line for line in lines if "state=" in line["message"]]
    assert state
    assert {line["request_id"] for line in state} == {"req-1"}


def test_a_task_enqueued_without_an_id_gets_a_fresh_one_shared_by_what_it_enqueues(
    tmp_path: Path,
) -> None:
    with json_lines_to(tmp_path / "lines.jsonl") as path, worker():
        fresh = finished(enqueue(django_tasks_app.chain)).return_value
        wait_for_lines(path, lambda line: line["message"].startswith("step 2"))
    assert_fresh_id_shared(read_lines(path), fresh, 1 + STEPS)


def test_nothing_leaks_to_the_next_task_and_a_failing_tasks_error_line_carries_the_id(
    tmp_path: Path,
) -> None:
    with json_lines_to(tmp_path / "lines.jsonl") as path, worker():
        with ctxlog.bind(request_id="first", tenant="acme"):
            first = enqueue(django_tasks_app.snoop)
        with ctxlog.bind(request_id="failing"):
            failed = enqueue(django_tasks_app.fail)
        with ctxlog.bind(request_id="second"):
            second = enqueue(django_tasks_app.snoop)
        seen_first = finished(first).return_value
        assert finished(failed).status == "FAILED"
        seen_second = finished(second).return_value
    assert_nothing_leaked(seen_first, seen_second)
    errors = [line for line in read_lines(path) if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert (errors[0]["request_id"], errors[0]["task_id"]) == ("failing", str(failed.id))
    assert "Boom: no luck" in errors[0]["exception"]


def test_200_tasks_from_20_publishers_each_line_has_its_publishers_id(tmp_path: Path) -> None:
    with json_lines_to(tmp_path / "lines.jsonl") as path:
        ids = publish_from_threads(lambda rid: enqueue(django_tasks_app.job, rid))
        with worker():
            wait_for_lines(path, lambda line: line["logger"] == "jobs", len(ids), timeout=50)
    assert_scenario(read_lines(path), ids, "tests.integration.django_tasks_app.job")


def test_a_db_worker_process(tmp_path: Path) -> None:
    log_file = tmp_path / "worker.jsonl"
    with ctxlog.scope(request_id="from-web", user="ada"):
        ctxlog.annotate(tenant="acme")
        result = enqueue(django_tasks_app.work, "from-web")
    code = (
        "import logging, os, sys\n"
        "from tests.integration import django_site\n"
        "from tests.integration._queues import json_handler\n"
        "django_site.setup()\n"
        "logging.getLogger().addHandler(json_handler(os.environ['CTXLOG_TEST_LOG']))\n"
        "logging.getLogger().setLevel(logging.INFO)\n"
        "from django.core.management import call_command\n"
        "call_command('db_worker', '--batch', '--interval', '0.01', '--no-startup-delay')\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **os.environ,
            "CTXLOG_TEST_DJANGO_DB": str(django_site.DB),
            "CTXLOG_TEST_LOG": str(log_file),
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert finished(result).return_value == "from-web"
    app = assert_publishers_context(read_lines(log_file), "from-web", STEPS)
    assert {line["task_id"] for line in app} == {str(result.id)}
