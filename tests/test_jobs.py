"""The job envelope every task-queue integration shares (ctxlog._jobs)."""

from __future__ import annotations

import contextvars
import json
import logging
import subprocess
import sys
import threading

import pytest

import ctxlog
from ctxlog import _jobs
from ctxlog._store import store
from ctxlog.headers import is_valid_request_id
from tests.conftest import Captured


def test_envelope_carries_bound_and_annotated_values_but_not_task_keys() -> None:
    with ctxlog.scope(request_id="r-1"), ctxlog.bind(user="ann", task_id="t-old"):
        ctxlog.annotate(tenant="acme")
        text = _jobs.envelope("demo")
    assert text is not None
    assert json.loads(text) == {"request_id": "r-1", "user": "ann", "tenant": "acme"}


def test_envelope_leaves_computed_values_to_the_worker() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("shop")

    class Computed:
        def get(self) -> str:
            return "computed-here"

    computed = Computed()
    ctxlog.register(var, "shop")
    store.add_provider(computed, "here", "test")
    try:
        token = var.set("north")
        with ctxlog.bind(request_id="r-2"):
            text = _jobs.envelope("demo")
        var.reset(token)
    finally:
        store.remove_provider(computed, "test")
        ctxlog.unregister(var)
    assert text is not None
    assert json.loads(text) == {"request_id": "r-2", "shop": "north"}


def test_a_job_published_outside_any_request_gets_a_fresh_id() -> None:
    first, second = _jobs.envelope("a"), _jobs.envelope("b")
    assert first is not None
    assert second is not None
    one, two = json.loads(first)["request_id"], json.loads(second)["request_id"]
    assert is_valid_request_id(one)
    assert is_valid_request_id(two)
    assert one != two
    options = _jobs.JobOptions(request_id_key=None)
    assert _jobs.envelope("c", options=options) is None


def test_a_context_that_cannot_travel_is_left_out_with_a_warning(captured: Captured) -> None:
    with ctxlog.bind(request_id="r-3", big="x" * 10_000):
        assert _jobs.envelope("big.job", log=captured.logger) is None
    (warning,) = captured.lines()
    assert warning.startswith("The context of task big.job was not sent with it:")


def test_run_job_binds_only_the_envelope_and_the_task_fields() -> None:
    text = json.dumps({"request_id": "r-4", "user": "bob"})
    with ctxlog.bind(leftover="from-an-earlier-job"):
        with _jobs.run_job(text, task_id="j-1", task_name="mail.send"):
            assert dict(ctxlog.current()) == {
                "request_id": "r-4",
                "user": "bob",
                "task_id": "j-1",
                "task_name": "mail.send",
            }
            assert ctxlog.get("leftover") is None
        assert dict(ctxlog.current()) == {"leftover": "from-an-earlier-job"}


def test_run_job_closes_the_unit_when_the_job_fails() -> None:
    with pytest.raises(ValueError, match="boom"), _jobs.run_job(None, task_id=1, task_name="x"):
        raise ValueError("boom")
    assert dict(ctxlog.current()) == {}


@pytest.mark.parametrize("bad", ['{"request_id": ', "[1, 2]", b"\xff\xfe", 42])
def test_a_bad_envelope_is_ignored_with_a_warning(captured: Captured, bad: object) -> None:
    with _jobs.run_job(
        bad, task_id="j-2", task_name="t", log=captured.logger, field="opt", carrier="entry"
    ):
        assert dict(ctxlog.current()) == {"task_id": "j-2", "task_name": "t"}
    (warning,) = captured.lines()
    assert warning.startswith("Ignored the opt entry of task t[j-2]:")
    assert "X-Ctxlog-Context" not in warning


def test_end_job_from_another_context_ends_the_unit() -> None:
    """A hook-based queue may run its "after" hook in another context."""
    entries: list[_jobs.JobEntry] = []

    def before() -> None:
        entries.append(_jobs.begin_job(None, task_id="j-3", task_name="t"))

    ctx = contextvars.copy_context()
    ctx.run(before)
    (entry,) = entries
    unit = entry.unit[2]
    thread = threading.Thread(target=_jobs.end_job, args=(entry,))
    thread.start()
    thread.join()
    assert not unit.open
    ctx.run(_jobs.end_job, entry)  # a second end is harmless too
    assert ctx.run(ctxlog.get, "task_id") is None
    assert dict(ctxlog.current()) == {}


def test_the_warnings_go_to_the_jobs_logger_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.WARNING, "ctxlog.jobs"),
        _jobs.run_job("{", task_id=1, task_name="t"),
    ):
        pass
    assert [r.name for r in caplog.records] == ["ctxlog.jobs"]


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("dramatiq", ["dramatiq"], "dramatiq"),
        ("rq", ["rq"], "rq"),
        ("huey", ["huey"], "huey"),
        ("arq", ["arq"], "arq"),
        ("taskiq", ["taskiq"], "taskiq"),
        ("django_tasks", ["django.tasks", "django_tasks"], "django-tasks"),
    ],
)
def test_a_missing_queue_library_names_the_extra(
    module: str, missing: list[str], extra: str
) -> None:
    code = (
        "import sys\n"
        f"for name in {missing!r}:\n"
        "    sys.modules[name] = None\n"
        "import ctxlog\n"
        "try:\n"
        f"    import ctxlog.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert f"pip install 'ctxlog-correlation[{extra}]'" in out


def test_nested_jobs_close_innermost_first_and_restore_the_context() -> None:
    running = _jobs.RunningJobs("test.running")

    def scenario() -> list[object]:
        seen: list[object] = []
        with ctxlog.bind(request_id="outside"):
            running.start(_jobs.begin_job(None, task_id="outer", task_name="a"))
            seen.append(ctxlog.get("task_id"))
            running.start(_jobs.begin_job(None, task_id="inner", task_name="b"))
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
