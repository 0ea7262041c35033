"""The job envelope every task-queue integration shares (ctxlog._jobs)."""

from __future__ import annotations

import contextvars
import io
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
from ctxlog.testing import capture
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
        assert (
            _jobs.envelope("big.job", options=_jobs.JobOptions(where=_jobs.Where(captured.logger)))
            is None
        )
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
        bad,
        task_id="j-2",
        task_name="t",
        options=_jobs.JobOptions(where=_jobs.Where(captured.logger, "opt", "entry")),
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


def test_the_warnings_go_to_the_jobs_logger_by_default() -> None:
    with capture(logger="ctxlog.jobs") as lines, _jobs.run_job("{", task_id=1, task_name="t"):
        pass
    assert [(line["logger"], line["level"]) for line in lines] == [("ctxlog.jobs", "WARNING")]


def test_the_envelope_follows_every_change_of_the_context() -> None:
    """Consecutive jobs from one context reuse its text; any change is seen."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("region")
    with ctxlog.scope(request_id="r-5"):
        first = _jobs.envelope("a")
        assert _jobs.envelope("b") is first
        ctxlog.annotate(step=2)
        assert json.loads(_jobs.envelope("c") or "")["step"] == 2
        with ctxlog.bind(user="cy"):
            assert json.loads(_jobs.envelope("d") or "")["user"] == "cy"
        ctxlog.register(var, "region")
        try:
            token = var.set("north")
            assert json.loads(_jobs.envelope("e") or "")["region"] == "north"
            var.set("south")
            assert json.loads(_jobs.envelope("f") or "")["region"] == "south"
            var.reset(token)
        finally:
            ctxlog.unregister(var)
        tags = ["a"]
        with ctxlog.bind(tags=tags):
            assert json.loads(_jobs.envelope("h") or "")["tags"] == ["a"]
            tags.append("b")
            assert json.loads(_jobs.envelope("i") or "")["tags"] == ["a", "b"]
        options = _jobs.JobOptions(keys=frozenset({"request_id"}))
        assert json.loads(_jobs.envelope("g", options=options) or "") == {"request_id": "r-5"}


def test_each_job_gets_its_own_values_from_the_same_envelope() -> None:
    text = json.dumps({"request_id": "r-6", "n": 1})
    first = _jobs.read_envelope(text, job="a")
    first["n"] = 2
    assert _jobs.read_envelope(text, job="b") == {"request_id": "r-6", "n": 1}
    nested = json.dumps({"request_id": "r-7", "items": [1]})
    _jobs.read_envelope(nested, job="c")["items"].append(2)
    assert _jobs.read_envelope(nested, job="d")["items"] == [1]


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


def test_a_failed_job_writes_what_tail_sampling_held() -> None:
    """A job that raises (run_job) or that its queue reports failed (end_job's
    failed=) is a failed unit: its held lines are written, even when its own
    error line is below flush_on; a job that succeeds drops them."""
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    target.setFormatter(ctxlog.stdlib.json_formatter())
    target.addFilter(ctxlog.ContextFilter())
    sampled = ctxlog.TailSamplingHandler(target, flush_on=logging.CRITICAL)
    log = logging.getLogger("ctxlog.test.jobs.sampling")
    log.addHandler(sampled)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        with ctxlog.scope(request_id="r-ok"):
            text = _jobs.envelope("ok")
        with _jobs.run_job(text, task_id="t-ok", task_name="ok"):
            log.info("quiet ok")
        with ctxlog.scope(request_id="r-raise"):
            text = _jobs.envelope("raise")
        with pytest.raises(KeyError), _jobs.run_job(text, task_id="t-raise", task_name="raise"):
            log.info("quiet raise")
            raise KeyError("x")
        with ctxlog.scope(request_id="r-hook"):
            text = _jobs.envelope("hook")
        entry = _jobs.begin_job(text, task_id="t-hook", task_name="hook")
        log.info("quiet hook")
        _jobs.end_job(entry, failed=True)
    finally:
        log.removeHandler(sampled)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["message"], line["task_id"], line["request_id"]) for line in lines] == [
        ("quiet raise", "t-raise", "r-raise"),
        ("quiet hook", "t-hook", "r-hook"),
    ]
