"""ctxlog.celery with a real ``celery worker`` process (solo, threads and prefork pools).

The worker runs the Celery page's ``tasks.py`` as written, plus a test configuration
appended to it: a broker and a result backend on SQLite files in ``tmp_path``
(no server), a second plain-text log file with a
``%(request_id)s`` format, and a few tasks for the scenarios.  The test process
publishes, as the Celery page's publisher does, and then reads every line the
worker wrote.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from celery import Celery, signals
from celery.app.trace import build_tracer
from opentelemetry.sdk.trace import TracerProvider

import ctxlog
import ctxlog.celery
import ctxlog.otel
from ctxlog.headers import is_valid_request_id
from tests.conftest import Captured, import_error_without

CELERY_PAGE = Path(__file__).resolve().parents[2] / "docs" / "celery.md"
BLOCK = re.compile(r"^```py\n(.*?)^```$", re.MULTILINE | re.DOTALL)

TEST_CONFIG = """

# --- appended by tests/integration/test_celery.py: no server, every line kept ---
import os as _os

import kombu.transport.sqlalchemy as _kombu_sqla

import ctxlog as _ctxlog

_HERE = _os.path.dirname(_os.path.abspath(__file__))
# The transport polls its table every second by default (and passes its
# transport options to create_engine(), so the interval is set on the class).
_kombu_sqla.Transport.polling_interval = 0.02
app.conf.update(
    # SQLite behind SQLAlchemy: kombu's filesystem:// transport can hand a consumer a
    # message file a publisher is still writing (a task publishing from a pool thread).
    broker_url="sqla+sqlite:///" + _os.path.join(_HERE, "broker.sqlite"),
    result_backend="db+sqlite:///" + _os.path.join(_HERE, "results.sqlite"),
    broker_connection_retry_on_startup=True,
    worker_enable_remote_control=False,
    worker_prefetch_multiplier=1,
)
_plain = logging.FileHandler(_os.path.join(_HERE, "plain.log"))


@signals.setup_logging.connect
def setup_plain_log(**kwargs: object) -> None:
    # A text format that needs request_id and task_id on every line, in or out of a task.
    _plain.setFormatter(logging.Formatter("@%(request_id)s|%(task_id)s|%(name)s|%(message)s"))
    _plain.addFilter(_ctxlog.ContextFilter(defaults={"request_id": "-", "task_id": "-"}))
    logging.getLogger().addHandler(_plain)


@signals.task_prerun.connect
def log_task_start(task_id: str = "", **kwargs: object) -> None:
    log.info("start %s", task_id)


@signals.task_postrun.connect
def log_task_end(task_id: str = "", **kwargs: object) -> None:
    # Connected after ctxlog's receiver: the task's context is gone by now.
    log.info("after %s", task_id)


@app.task
def whoami(tag: str) -> dict:
    log.info("whoami %s", tag)
    return dict(_ctxlog.current())


@app.task
def fail(tag: str) -> None:
    log.info("failing %s", tag)
    raise ValueError(tag)


@app.task
def spawn(tag: str) -> str:
    log.info("spawning %s", tag)
    return whoami.delay(tag + "-child").id
"""


def page_blocks() -> tuple[str, str]:
    """The Celery page's ``tasks.py`` and publisher blocks (```py, run here for real)."""
    blocks = BLOCK.findall(CELERY_PAGE.read_text(encoding="utf-8"))
    tasks = next(b for b in blocks if b.startswith("# tasks.py"))
    publisher = next(b for b in blocks if b.startswith("# the publisher"))
    return tasks, publisher


class Worker:
    """A ``celery worker`` process and the lines it writes."""

    def __init__(self, directory: Path, pool: str, concurrency: int) -> None:
        self.directory = directory
        self.stderr_path = directory / "worker.err"
        self.stdout_path = directory / "worker.out"
        self.plain_path = directory / "plain.log"
        with self.stderr_path.open("wb") as err, self.stdout_path.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tasks",
                    "worker",
                    f"--pool={pool}",
                    f"--concurrency={concurrency}",
                    "--loglevel=INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                    f"--hostname={pool}@localhost",
                ],
                cwd=directory,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONPATH": str(directory)},
                start_new_session=True,  # its own process group: prefork children go with it
            )
        self.wait_for(lambda line: line["message"].endswith(" ready."), what="the worker to start")

    def json_lines(self) -> list[dict[str, Any]]:
        out = []
        for raw in self.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict) and "message" in line:
                    out.append(line)
        return out

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, what: str = "lines"
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 20
        while True:
            found = [line for line in self.json_lines() if predicate(line)]
            if len(found) >= count:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                err = self.stderr_path.read_text(encoding="utf-8", errors="replace")
                msg = f"timed out waiting for {what}; worker stderr:\n{err[-4000:]}"
                raise AssertionError(msg)
            time.sleep(0.02)

    def stop(self) -> None:
        # SIGKILL to the worker's own process group (its pool children included):
        # everything the tests read was written and flushed line by line already.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def app_module(tmp_path: Path) -> Iterator[ModuleType]:
    """The Celery page's tasks.py, plus the test configuration, imported as ``tasks``."""
    tasks_code, _ = page_blocks()
    path = tmp_path / "tasks.py"
    path.write_text(tasks_code + TEST_CONFIG, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("tasks", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tasks"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("tasks", None)
        ctxlog.celery.uninstall()
        for sig, receiver in (
            (signals.setup_logging, "setup_logging"),
            (signals.setup_logging, "setup_plain_log"),
            (signals.task_prerun, "log_task_start"),
            (signals.task_postrun, "log_task_end"),
        ):
            if hasattr(module, receiver):
                sig.disconnect(getattr(module, receiver))
        if hasattr(module, "_plain"):
            module._plain.close()
        if hasattr(module, "app"):
            module.app.close()


def check_plain_text(worker: Worker, lines: list[dict[str, Any]], first_id: str) -> None:
    """The plain-text format with %(request_id)s and %(task_id)s never broke."""
    records = [
        text
        for text in worker.plain_path.read_text(encoding="utf-8").splitlines()
        if text.startswith("@")  # not a traceback's continuation line
    ]
    # The same records as the JSON handler's, each with both fields filled.
    assert len(records) == len(lines)
    for text in records:
        request_id, task_id, _ = text[1:].split("|", 2)
        assert request_id
        assert task_id
    assert f"@-|-|tasks|after {first_id}" in records
    assert "Logging error" not in worker.stderr_path.read_text(encoding="utf-8")


def by_message(lines: list[dict[str, Any]], message: str) -> dict[str, Any]:
    found = [line for line in lines if line["message"] == message]
    assert len(found) == 1, (message, found)
    return found[0]


@dataclass(frozen=True)
class Planned:
    """One published task and what its lines must carry."""

    result: Any
    tag: str
    request_id: str | None
    failing: bool


def publish_mixed(tasks: Any, pool: str) -> list[Planned]:
    """Bound, unbound and failing tasks in one stream: each must see only its own."""
    planned = []
    for i in range(12):
        request_id = None if i % 3 == 1 else f"r-{pool}-{i}"
        failing = i % 4 == 3
        tag = f"{pool}-{i}"
        task = tasks.fail if failing else tasks.whoami
        if request_id is None:
            result = task.delay(tag)
        else:
            with ctxlog.bind(request_id=request_id, user_id=f"u-{tag}"):
                result = task.delay(tag)
        planned.append(Planned(result, tag, request_id, failing))
    return planned


def check_results(planned: list[Planned]) -> dict[str, str]:
    """What each task saw, as it returned it (``whoami`` returns ``ctxlog.current()``);
    returns each task's request id (a fresh one, made at publish time, when none
    was bound)."""
    ids: dict[str, str] = {}
    for task in planned:
        value = task.result.get(timeout=20, interval=0.02, propagate=False)
        if task.failing:
            assert isinstance(value, ValueError)
            continue
        task_id = task.result.id
        # A task published outside any request: a root task, with an id of its own.
        expected = {"task_id": task_id, "task_name": "tasks.whoami", "root_task_id": task_id}
        if task.request_id is not None:
            expected.update(request_id=task.request_id, user_id=f"u-{task.tag}")
        else:
            expected["request_id"] = value.get("request_id")
            assert is_valid_request_id(expected["request_id"])
            assert expected["request_id"] not in ids.values()
        assert value == expected
        ids[task_id] = value["request_id"]
    return ids


def check_task_lines(
    lines: list[dict[str, Any]], planned: list[Planned], ids: dict[str, str]
) -> None:
    """Lines inside each task carry its context; the line after it carries none."""
    for task in planned:
        task_id = task.result.id
        inside = [
            by_message(lines, f"start {task_id}"),
            by_message(lines, f"{'failing' if task.failing else 'whoami'} {task.tag}"),
        ]
        if task.failing:
            # Celery's own error line is written inside the task too.
            inside += [
                line
                for line in lines
                if line["logger"] == "celery.app.trace" and task_id in line["message"]
            ]
            assert len(inside) == 3
        for line in inside:
            assert line["task_id"] == task_id
            assert line["root_task_id"] == task_id
            if task.request_id is not None or not task.failing:
                assert line["request_id"] == (task.request_id or ids[task_id])
            else:  # a failing task returned nothing: its fresh id is still one
                assert is_valid_request_id(line["request_id"])
            assert line.get("user_id") == (task.request_id and f"u-{task.tag}")
        # After the task, failed or not: nothing of it is left.
        after = by_message(lines, f"after {task_id}")
        assert after["request_id"] == "-"
        assert "task_id" not in after
        assert "user_id" not in after


@pytest.mark.parametrize(
    ("pool", "concurrency"), [("solo", 1), ("threads", 2), ("prefork", 1)], ids=str
)
# kombu's SQLAlchemy transport still maps with a loader SQLAlchemy 2.1 deprecates.
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_worker(app_module: ModuleType, tmp_path: Path, pool: str, concurrency: int) -> None:
    tasks: Any = app_module
    worker = Worker(tmp_path, pool, concurrency)
    try:
        # The Celery page's publisher, as written.
        _, publisher = page_blocks()
        exec(compile(publisher, "the Celery page publisher", "exec"), {})  # noqa: S102 -- the Celery page's own code
        planned = publish_mixed(tasks, pool)
        # A task that publishes another: the child gets the context, with its own task id.
        with ctxlog.bind(request_id=f"r-{pool}-spawn"):
            spawner = tasks.spawn.delay(f"{pool}-spawn")
        # Started outside any request: the chain shares the id made at the first publish.
        unbound_spawner = tasks.spawn.delay(f"{pool}-unbound")

        ids = check_results(planned)
        child_id = spawner.get(timeout=20, interval=0.02)
        child = tasks.whoami.AsyncResult(child_id).get(timeout=20, interval=0.02)
        assert child == {
            "request_id": f"r-{pool}-spawn",
            "task_id": child_id,
            "task_name": "tasks.whoami",
            "parent_task_id": spawner.id,
            "root_task_id": spawner.id,
        }

        unbound_child_id = unbound_spawner.get(timeout=20, interval=0.02)
        unbound_child = tasks.whoami.AsyncResult(unbound_child_id).get(timeout=20, interval=0.02)
        assert unbound_child["parent_task_id"] == unbound_spawner.id
        assert unbound_child["root_task_id"] == unbound_spawner.id

        # Every task has ended once its "after" line is written (the Celery page's one too).
        worker.wait_for(lambda line: line["message"].startswith("after "), len(planned) + 5)
        lines = worker.json_lines()
        spawning = by_message(lines, f"spawning {pool}-unbound")
        assert is_valid_request_id(spawning["request_id"])
        assert unbound_child["request_id"] == spawning["request_id"]

        # The Celery page's task: the publisher's values and the task's own fields.
        charging = by_message(lines, "charging order 17")
        assert charging["request_id"] == "req-42"
        assert charging["user_id"] == "u-7"
        assert charging["task_name"] == "tasks.charge"
        assert re.fullmatch(r"[0-9a-f-]{36}", charging["task_id"])

        check_task_lines(lines, planned, ids)
        spawned = by_message(lines, f"whoami {pool}-spawn-child")
        assert spawned["task_id"] == child_id
        assert spawned["request_id"] == f"r-{pool}-spawn"

        # Lines outside any task (start-up, "received") carry no task field.
        for line in lines:
            if line["logger"] in {"celery.worker.strategy", "celery.apps.worker"}:
                assert "task_id" not in line
                assert line["request_id"] == "-"

        check_plain_text(worker, lines, planned[0].result.id)
    finally:
        worker.stop()


# --------------------------------------------------------------------------
# in one process: Celery's own publishing and tracing code, no worker
# --------------------------------------------------------------------------


class Published:
    """The message headers of every task published, as the broker gets them.

    A ``before_task_publish`` receiver connected after ctxlog's sees the same
    headers dict, with ctxlog's header already in it.
    """

    def __init__(self) -> None:
        self.headers: list[dict[str, Any]] = []

    def __call__(
        self,
        headers: dict[str, Any] | None = None,
        **kwargs: Any,  # noqa: ARG002 -- the signal's other arguments
    ) -> None:
        assert headers is not None
        self.headers.append(dict(headers))

    def context(self) -> dict[str, Any] | None:
        raw = self.headers[-1].get(ctxlog.celery.CONTEXT_HEADER)
        return None if raw is None else dict(json.loads(raw))


@pytest.fixture
def unit_app() -> Iterator[Any]:
    """An app on kombu's in-memory broker, with the in-memory result backend."""
    app = Celery("unit", broker="memory://", backend="cache+memory://")
    ctxlog.celery.install()
    yield app
    ctxlog.celery.uninstall()
    app.close()


@pytest.fixture
def published(unit_app: Any) -> Iterator[Published]:
    receiver = Published()
    signals.before_task_publish.connect(receiver, weak=False)
    yield receiver
    signals.before_task_publish.disconnect(receiver)


def noop() -> None:
    """A task body that does nothing."""


def as_task(app: Any, name: str, fn: Callable[[], None]) -> Any:
    """Register *fn* as a task of *app* (``@app.task``, which mypy cannot see typed)."""
    return app.task(name=name)(fn)


def run_as_worker(task: Any, headers: dict[str, Any] | None = None) -> Any:
    """Run *task* through Celery's worker-side tracer, as a pool does for a message."""
    task_id = str(uuid.uuid4())
    request = {"id": task_id, "task": task.name, "delivery_info": {}, **(headers or {})}
    tracer = build_tracer(task.name, task, app=task.app, eager=False)
    return tracer(task_id, [], {}, request)


def test_publish_writes_the_bound_context(unit_app: Any, published: Published) -> None:
    task = as_task(unit_app, "unit.noop", noop)
    task.delay()
    # Nothing bound: a fresh request id, for the chain this task starts.
    fresh = published.context()
    assert fresh is not None
    assert list(fresh) == ["request_id"]
    assert is_valid_request_id(fresh["request_id"])
    task.delay()
    assert published.context() != fresh  # a new one for each
    with ctxlog.bind(request_id="r-1", user_id=7, task_id="of-the-parent", task_name="parent"):
        task.delay()
    # The task fields are the worker's to bind.
    assert published.context() == {"request_id": "r-1", "user_id": 7}
    ctxlog.celery.install(request_id_key=None)
    task.delay()
    assert published.context() is None  # nothing bound, nothing made: no header


def test_publish_carries_registered_vars_but_not_providers(
    unit_app: Any, published: Published
) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id")
    ctxlog.register(var)
    ctxlog.otel.install()
    tracer = TracerProvider().get_tracer("ctxlog.tests")
    task = as_task(unit_app, "unit.noop", noop)
    try:
        var.set("c-1")
        with tracer.start_as_current_span("publish"):
            assert "trace_id" in ctxlog.current()
            with ctxlog.bind(request_id="r-otel"):
                task.delay()
                assert published.context() == {"correlation_id": "c-1", "request_id": "r-otel"}
                with ctxlog.bind(span_id="bound-by-hand"):
                    task.delay()
                assert published.context() == {
                    "correlation_id": "c-1",
                    "request_id": "r-otel",
                    "span_id": "bound-by-hand",
                }
    finally:
        ctxlog.otel.uninstall()
        ctxlog.unregister(var)


def test_publish_keys_and_header_options(unit_app: Any, published: Published) -> None:
    ctxlog.celery.install(keys=["request_id"], header="x_context", request_id_key=None)
    task = as_task(unit_app, "unit.noop", noop)
    with ctxlog.bind(request_id="r-2", secret="s"):
        task.delay()
    assert ctxlog.celery.CONTEXT_HEADER not in published.headers[-1]
    assert json.loads(published.headers[-1]["x_context"]) == {"request_id": "r-2"}
    with ctxlog.bind(secret="s"):
        task.delay()
    assert "x_context" not in published.headers[-1]


@pytest.mark.parametrize(
    "value", ["line\nbreak", "x" * 9000], ids=["control-character", "too-large"]
)
def test_a_context_that_cannot_travel_is_left_out(
    unit_app: Any, published: Published, captured: Captured, value: str
) -> None:
    logging.getLogger("ctxlog.celery").addHandler(captured.handler)
    task = as_task(unit_app, "unit.noop", noop)
    try:
        with ctxlog.bind(request_id="r-3", note=value):
            result = task.delay()
    finally:
        logging.getLogger("ctxlog.celery").removeHandler(captured.handler)
    assert result.id  # published all the same
    assert ctxlog.celery.CONTEXT_HEADER not in published.headers[-1]
    (warning,) = captured.lines()
    assert warning.startswith("The context of task unit.noop was not sent with it:")
    assert "\n" not in warning


def test_worker_side_replaces_the_context_and_restores_it(unit_app: Any) -> None:
    seen: list[dict[str, Any]] = []

    def who() -> None:
        seen.append(dict(ctxlog.current()))

    who_task = as_task(unit_app, "unit.who", who)

    def boom() -> None:
        seen.append(dict(ctxlog.current()))
        raise ValueError

    boom_task = as_task(unit_app, "unit.boom", boom)

    header = {ctxlog.celery.CONTEXT_HEADER: '{"request_id":"r-4","n":[1,2]}'}
    with ctxlog.bind(left_over="from before"):
        run_as_worker(who_task, header)
        run_as_worker(who_task)
        run_as_worker(boom_task, header)
        assert dict(ctxlog.current()) == {"left_over": "from before"}
    assert seen[0] == {
        "request_id": "r-4",
        "n": [1, 2],
        "task_id": seen[0]["task_id"],
        "task_name": "unit.who",
    }
    assert seen[1] == {"task_id": seen[1]["task_id"], "task_name": "unit.who"}
    assert seen[2]["request_id"] == "r-4"
    assert seen[2]["task_name"] == "unit.boom"
    assert len({s["task_id"] for s in seen}) == 3


def test_worker_side_options(unit_app: Any) -> None:
    seen: list[dict[str, Any]] = []

    def who() -> None:
        seen.append(dict(ctxlog.current()))

    who_task = as_task(unit_app, "unit.who", who)

    ctxlog.celery.install(keys=["request_id"], task_id_key="celery_id", task_name_key=None)
    run_as_worker(who_task, {ctxlog.celery.CONTEXT_HEADER: '{"request_id":"r-5","other":1}'})
    assert seen[-1] == {"request_id": "r-5", "celery_id": seen[-1]["celery_id"]}
    ctxlog.celery.install(task_id_key=None, task_name_key=None)
    run_as_worker(who_task)
    assert seen[-1] == {}


@pytest.mark.parametrize(
    "raw",
    ['{"request_id": "a\\nb"}', "not json", '["a list"]', {"a": "dict"}, "[" * 100],
    ids=["control", "not-json", "not-object", "not-text", "deep"],
)
def test_worker_side_ignores_a_bad_header(unit_app: Any, captured: Captured, raw: object) -> None:
    seen: list[dict[str, Any]] = []

    def who() -> None:
        seen.append(dict(ctxlog.current()))

    who_task = as_task(unit_app, "unit.who", who)

    logging.getLogger("ctxlog.celery").addHandler(captured.handler)
    try:
        run_as_worker(who_task, {ctxlog.celery.CONTEXT_HEADER: raw})
    finally:
        logging.getLogger("ctxlog.celery").removeHandler(captured.handler)
    assert set(seen[-1]) == {"task_id", "task_name"}
    (warning,) = captured.lines()
    assert warning.startswith("Ignored the ctxlog_context header of task unit.who[")
    assert "X-Ctxlog-Context" not in warning


def test_eager_tasks_add_to_the_callers_context(captured: Captured) -> None:
    app = Celery("eager", task_always_eager=True)
    ctxlog.celery.install()
    captured.handler.setFormatter(logging.Formatter("%(request_id)s|%(task_id)s|%(message)s"))
    captured.handler.addFilter(ctxlog.ContextFilter(defaults={"request_id": "-", "task_id": "-"}))
    log = captured.logger

    def inner() -> None:
        log.info("inner")

    inner_task = as_task(app, "eager.inner", inner)

    def outer() -> None:
        log.info("outer")
        inner_task.delay()
        log.info("outer again")

    outer_task = as_task(app, "eager.outer", outer)

    def boom() -> None:
        log.info("boom")
        raise ValueError

    boom_task = as_task(app, "eager.boom", boom)

    try:
        with ctxlog.bind(request_id="r-6"):
            first = outer_task.delay()
            failed = boom_task.delay()
            assert dict(ctxlog.current()) == {"request_id": "r-6"}
        log.info("outside")
        boom_task.delay()
    finally:
        ctxlog.celery.uninstall()
        app.close()
    assert failed.failed()
    lines = captured.lines()
    outer_id = first.id
    assert lines[0] == f"r-6|{outer_id}|outer"
    assert lines[1].startswith("r-6|")
    assert lines[1].endswith("|inner")
    assert lines[1] != f"r-6|{outer_id}|inner"
    assert lines[2] == f"r-6|{outer_id}|outer again"
    assert lines[3] == f"r-6|{failed.id}|boom"
    assert lines[4] == "-|-|outside"
    assert lines[5].startswith("-|")
    assert lines[5].endswith("|boom")


def test_uninstall_while_a_task_runs(unit_app: Any) -> None:
    seen: list[dict[str, Any]] = []

    def quitter() -> None:
        ctxlog.celery.uninstall()
        seen.append(dict(ctxlog.current()))

    quitter_task = as_task(unit_app, "unit.quitter", quitter)

    with ctxlog.bind(request_id="r-7"):
        quitter_task.apply()
        # Its context was still given back, by the receiver left connected for it.
        assert dict(ctxlog.current()) == {"request_id": "r-7"}
    assert seen[0]["task_name"] == "unit.quitter"
    assert not ctxlog.celery.installed()
    assert ctxlog.celery._on_postrun not in [r() for _, r in signals.task_postrun.receivers]
    ctxlog.celery.uninstall()  # twice: nothing to do


def test_prerun_and_postrun_in_different_contexts(unit_app: Any) -> None:
    """A pool that moved a task to another context between the two signals: the
    binding is undone where it is found, and nowhere else."""
    task = as_task(unit_app, "unit.moved", noop)
    task.push_request(id="t-1", is_eager=False)
    try:
        ctx_a = contextvars.copy_context()
        ctx_a.run(signals.task_prerun.send, sender=task, task_id="t-1", task=task)
        assert ctx_a.run(ctxlog.get, "task_id") == "t-1"
        # postrun in another context that does hold the binding (a copy of A):
        ctx_b = ctx_a.copy()
        ctx_b.run(signals.task_postrun.send, sender=task, task_id="t-1", task=task)
        assert ctx_b.run(ctxlog.get, "task_id") is None
        # ... or in one that does not: it is left alone.
        ctx_a.run(signals.task_prerun.send, sender=task, task_id="t-1", task=task)
        with ctxlog.bind(request_id="elsewhere"):
            signals.task_postrun.send(sender=task, task_id="t-1", task=task)
            assert dict(ctxlog.current()) == {"request_id": "elsewhere"}
        assert ctx_a.run(ctxlog.get, "task_id") == "t-1"
    finally:
        task.pop_request()
    # Signals without headers or task, or for a task prerun never saw, change nothing.
    signals.before_task_publish.send(sender="unit.noop", headers=None)
    signals.task_prerun.send(sender=None, task_id="x", task=None)
    signals.task_postrun.send(sender=None, task_id="x", task=None)
    signals.task_postrun.send(sender=task, task_id="x", task=task)
    assert dict(ctxlog.current()) == {}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"header": ""}, "plain name"),
        ({"header": "has space"}, "plain name"),
        ({"header": 7}, "plain name"),
        ({"header": "id"}, "Celery uses this name"),
        ({"header": "task"}, "Celery uses this name"),
        ({"keys": "request_id"}, "pass a collection"),
        ({"keys": ["request_id", ""]}, "non-empty"),
        ({"task_id_key": ""}, "non-empty"),
        ({"task_id_key": "t", "task_name_key": "t"}, "different names"),
        ({"root_task_id_key": "task_id"}, "task_id_key and root_task_id_key are both"),
        ({"request_id_key": ""}, "non-empty"),
        ({"parent_task_id_key": 3}, "non-empty"),
        ({"generator": "uuid4"}, "give a function"),
    ],
)
def test_install_refuses_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ctxlog.ContextError, match=match):
        ctxlog.celery.install(**options)
    assert not ctxlog.celery.installed()


def test_import_ctxlog_loads_no_celery() -> None:
    code = (
        "import sys, ctxlog\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'celery', 'kombu'}))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_missing_celery_names_the_extra() -> None:
    message = import_error_without("celery", "import ctxlog.celery")
    assert "pip install 'ctxlog-correlation[celery]'" in message


def test_annotated_values_travel_and_each_task_is_a_unit_of_work(
    unit_app: Any, published: Published
) -> None:
    task = as_task(unit_app, "unit.noop", noop)
    with ctxlog.scope(request_id="r-u"):
        ctxlog.annotate(user_id="alice")
        task.delay()
    assert published.context() == {"request_id": "r-u", "user_id": "alice"}

    seen: list[dict[str, Any]] = []

    def annotating() -> None:
        ctxlog.annotate(step="inside")  # a unit of work is open for the task
        seen.append(dict(ctxlog.current()))

    annotating_task = as_task(unit_app, "unit.annotating", annotating)
    header = {ctxlog.celery.CONTEXT_HEADER: '{"request_id":"r-w"}'}
    run_as_worker(annotating_task, header)
    run_as_worker(annotating_task)
    assert [(s.get("request_id"), s["step"]) for s in seen] == [("r-w", "inside"), (None, "inside")]
    # Nothing of either task's unit is left behind.
    assert dict(ctxlog.current()) == {}
    with pytest.raises(ctxlog.ContextError, match="needs a unit of work"):
        ctxlog.annotate(step="after")


def test_a_generator_that_returns_no_id_is_refused_at_publish(
    unit_app: Any, published: Published, captured: Captured
) -> None:
    ctxlog.celery.install(generator=lambda: "two words")
    task = as_task(unit_app, "unit.noop", noop)
    logging.getLogger("ctxlog.celery").addHandler(captured.handler)
    try:
        task.delay()
    finally:
        logging.getLogger("ctxlog.celery").removeHandler(captured.handler)
    assert published.context() is None  # published all the same, without an id
    (warning,) = captured.lines()
    assert "published without a request id" in warning
    assert "printable ASCII str without spaces" in warning


def test_baggage_travels_as_a_w3c_header(unit_app: Any, published: Published) -> None:
    ctxlog.celery.install(baggage=["tenant", "plan"])
    task = as_task(unit_app, "unit.noop", noop)
    with ctxlog.bind(request_id="r-b", tenant="acme eu", secret="s"):
        task.delay()
    assert published.headers[-1]["baggage"] == "tenant=acme%20eu"
    # A baggage header already there (OpenTelemetry's instrumentation writes one) is kept.
    with ctxlog.bind(tenant="acme"):
        task.apply_async(headers={"baggage": "tenant=theirs"})
    assert published.headers[-1]["baggage"] == "tenant=theirs"
    with ctxlog.bind(plan=["not", "a", "scalar"]):
        task.delay()
    assert "baggage" not in published.headers[-1]


def test_the_worker_binds_baggage_from_any_publisher(unit_app: Any, captured: Captured) -> None:
    seen: list[dict[str, Any]] = []

    def who() -> None:
        seen.append(dict(ctxlog.current()))

    who_task = as_task(unit_app, "unit.who", who)
    ctxlog.celery.install(baggage=["tenant", "plan"])
    # A publisher that is not ctxlog: only the W3C header.
    run_as_worker(who_task, {"baggage": "tenant=acme,plan=pro%20team,other=1"})
    assert (seen[-1]["tenant"], seen[-1]["plan"]) == ("acme", "pro team")
    assert "other" not in seen[-1]
    # ctxlog's own header wins over the baggage header.
    run_as_worker(
        who_task, {ctxlog.celery.CONTEXT_HEADER: '{"tenant":"from-ctxlog"}', "baggage": "tenant=b"}
    )
    assert seen[-1]["tenant"] == "from-ctxlog"
    # A hostile header binds nothing raw, and the task runs.
    captured.handler.setFormatter(logging.Formatter("%(tenant)s|%(message)s"))
    captured.handler.addFilter(ctxlog.ContextFilter(defaults={"tenant": "-"}))

    def logs() -> None:
        captured.logger.info("in the task")

    log_task = as_task(unit_app, "unit.logs", logs)
    run_as_worker(log_task, {"baggage": "tenant=a%0Aforged," + "k=v," * 10_000})
    assert captured.lines() == ["-|in the task"]


@pytest.mark.parametrize(
    ("baggage", "match"),
    [("tenant", "not a string"), (["bad key"], "not a baggage key"), (["task_id"], "task keys")],
)
def test_install_refuses_bad_baggage(baggage: Any, match: str) -> None:
    with pytest.raises(ctxlog.ContextError, match=match):
        ctxlog.celery.install(baggage=baggage)
    assert not ctxlog.celery.installed()
