"""ctxlog._jobs.RunningJobs: the jobs a context runs, nested, each closed in turn."""

from __future__ import annotations

import contextvars

import ctxlog
from ctxlog._jobs import RunningJobs, begin_job


def test_nested_jobs_close_innermost_first_and_restore_the_context() -> None:
    running = RunningJobs("test.running")

    def scenario() -> list[object]:
        seen: list[object] = []
        with ctxlog.bind(request_id="outside"):
            running.start(begin_job(None, task_id="outer", task_name="a"))
            seen.append(ctxlog.get("task_id"))
            running.start(begin_job(None, task_id="inner", task_name="b"))
            seen.append(ctxlog.get("task_id"))
            running.finish()
            seen.append(ctxlog.get("task_id"))
            running.finish()
            seen.append((ctxlog.get("task_id"), ctxlog.get("request_id")))
            running.finish()  # nothing running: nothing to do
            seen.append(ctxlog.get("request_id"))
        return seen

    assert contextvars.copy_context().run(scenario) == [
        "outer",
        "inner",
        "outer",
        (None, "outside"),
        "outside",
    ]
