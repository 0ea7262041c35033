"""What the task-queue tests share: the jobs, JSON lines to a file, the concurrency scenario.

The jobs (``work``, ``whoami``, ``fail``, ``leaky``, ``awork``) are plain
functions each queue's app module declares on its broker (``Declared`` holds
what it declared); a worker process imports that module by name and writes its
lines with ``json_handler``.

Every queue test writes the lines its worker logs as JSON (ctxlog's
``json_formatter`` behind a ``ContextFilter``) to a file, in the test process
or in a worker process, and asserts on the lines read back.  The concurrency
scenario publishes ``JOBS`` jobs from ``PUBLISHERS`` threads, each job inside
a request of its own (a distinct ``request_id``) and logging that id in its
message, then checks with ``ctxlog.testing.check`` that no line lacks its id
or mentions another job's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ctxlog
from ctxlog.headers import is_valid_request_id
from ctxlog.stdlib import json_formatter
from ctxlog.testing import check

PUBLISHERS = 20
JOBS = 200

#: The logger the test jobs log on; the scenario reads only its lines.
JOB_LOGGER = "jobs"

log = logging.getLogger(JOB_LOGGER)


# --------------------------------------------------------------------------
# the jobs every queue test runs (each queue's app module declares them)
# --------------------------------------------------------------------------


@dataclass
class Declared:
    """The jobs as one queue declared them (its actors, its tasks)."""

    work: Any
    whoami: Any
    fail: Any
    flaky: Any
    spawn: Any
    leaky: Any
    #: Dramatiq's async actor.
    awork: Any = None
    #: Huey's task that starts a thread (Huey runs no coroutine).
    threads: Any = None


def work(tag: str) -> None:
    log.info("job %s", tag)
    log.info("done %s", tag)


def whoami(tag: str, **kwargs: Any) -> None:
    log.info("whoami %s %s", tag, sorted(kwargs))


def fail(tag: str) -> None:
    log.info("failing %s", tag)
    raise ValueError(tag)


def leaky(tag: str) -> None:
    ctxlog.set(leaked=tag)  # never reset: the next job must not see it
    ctxlog.annotate(annotated=tag)
    log.info("leaking %s", tag)


def in_a_thread(tag: str) -> None:
    log.info("thread %s", tag)


async def awork(tag: str) -> None:
    log.info("async before %s", tag)
    await asyncio.sleep(0.01)
    log.info("async after %s", tag)
    await asyncio.to_thread(in_a_thread, tag)


def json_handler(path: Path | str) -> logging.Handler:
    """A handler appending JSON lines with the context to *path*."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(json_formatter())
    handler.addFilter(ctxlog.ContextFilter())
    return handler


@contextlib.contextmanager
def on_root(handler: logging.Handler, *levels: tuple[str, int]) -> Iterator[None]:
    """*handler* on the root logger (INFO and up; other loggers' levels as *levels*
    say) for the block; everything as it was afterwards."""
    root = logging.getLogger()
    old_level = root.level
    old_levels = [(name, logging.getLogger(name).level) for name, _ in levels]
    for name, level in levels:
        logging.getLogger(name).setLevel(level)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in old_levels:
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def json_lines_to(path: Path) -> Iterator[Path]:
    """Write every INFO-and-up line of the process to *path* for the block."""
    handler = json_handler(path)
    try:
        with on_root(handler):
            yield path
    finally:
        handler.close()


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON lines written to *path* so far (a last partial line left out)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def wait_for_lines(
    path: Path,
    predicate: Callable[[dict[str, Any]], bool],
    count: int = 1,
    timeout: float = 30,
) -> list[dict[str, Any]]:
    """Wait (bounded) until *count* lines of *path* match; return the matching lines."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in read_lines(path) if predicate(line)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def publish_from_threads(publish: Callable[[str], object]) -> list[str]:
    """Call *publish(request_id)* for ``JOBS`` jobs from ``PUBLISHERS`` threads, each
    inside a request of its own; return the request ids."""
    ids = [f"req-{n:03d}-{i:03d}" for n in range(PUBLISHERS) for i in range(JOBS // PUBLISHERS)]
    start = threading.Barrier(PUBLISHERS)
    errors: list[BaseException] = []

    def publisher(mine: list[str]) -> None:
        start.wait()
        try:
            for request_id in mine:
                with ctxlog.scope(request_id=request_id, publisher=_publisher_of(request_id)):
                    publish(request_id)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    per = JOBS // PUBLISHERS
    threads = [
        threading.Thread(target=publisher, args=(ids[n * per : (n + 1) * per],))
        for n in range(PUBLISHERS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return ids


def _publisher_of(request_id: str) -> str:
    return "pub" + request_id[4:7]


def job_lines(lines: list[dict[str, Any]], marker: str = "job ") -> list[dict[str, Any]]:
    """The lines the scenario's jobs logged (``job <request id>``)."""
    return [
        line
        for line in lines
        if line.get("logger") == JOB_LOGGER and str(line["message"]).startswith(marker)
    ]


def assert_lines(lines: list[dict[str, Any]], messages: list[str], **carried: Any) -> None:
    """The lines say *messages*, in that order, and every one carries *carried*."""
    assert [line["message"] for line in lines] == messages
    for line in lines:
        assert {key: line.get(key) for key in carried} == carried


def assert_nothing_left_by(leaky_request_id: str, line: dict[str, Any]) -> None:
    """*line*, of the job after a leaky one, carries nothing the leaky job bound."""
    assert "leaked" not in line
    assert "annotated" not in line
    assert line["request_id"] != leaky_request_id


def assert_scenario(lines: list[dict[str, Any]], ids: list[str], task_name: str) -> None:
    """Every job ran once, with its own request id, task id and publisher: 0 missing,
    0 crossed (``ctxlog.testing.check``)."""
    mine = job_lines(lines)
    report = check(mine)
    assert report.count("missing") == 0, report.summary()
    assert report.count("crossed") == 0, report.summary()
    assert report.ok, report.summary()
    seen = sorted(str(line["message"]).removeprefix("job ") for line in mine)
    assert seen == sorted(ids)
    for line in mine:
        assert line["message"] == f"job {line['request_id']}"
        assert line["publisher"] == _publisher_of(line["request_id"])
        assert line["task_name"] == task_name
    assert len({line["task_id"] for line in mine}) == len(ids)


# --------------------------------------------------------------------------
# the scenarios the arq, Taskiq and Django tasks tests share
# --------------------------------------------------------------------------

#: The logger those tests' jobs log their own lines on.
APP_LOGGER = "app.tasks"


def assert_publishers_context(
    lines: list[dict[str, Any]], request_id: str, count: int
) -> list[dict[str, Any]]:
    """*count* lines of the jobs, each carrying the publisher's ``request_id``, ``user``
    (``"ada"``) and annotated ``tenant`` (``"acme"``); return them."""
    app = [line for line in lines if line["logger"] == APP_LOGGER]
    assert len(app) == count, app
    for line in app:
        assert (line["request_id"], line["user"], line["tenant"]) == (request_id, "ada", "acme")
    return app


def assert_fresh_id_shared(lines: list[dict[str, Any]], fresh: str, count: int) -> None:
    """A job published with no request id got *fresh*, and the job it published shares
    it: *count* lines of the two jobs, two task ids."""
    assert is_valid_request_id(fresh)
    app = [line for line in lines if line["logger"] == APP_LOGGER]
    assert len(app) == count
    assert {line["request_id"] for line in app} == {fresh}
    assert len({line["task_id"] for line in app}) == 2


def assert_nothing_leaked(first: dict[str, Any], second: dict[str, Any]) -> None:
    """What two jobs on one worker saw (``ctxlog.current()``), published in the contexts
    ``request_id="first", tenant="acme"`` then ``request_id="second"``; the first left
    a value bound: the second saw only its own context."""
    assert (first["request_id"], first["tenant"]) == ("first", "acme")
    assert set(second) == {"request_id", "task_id", "task_name"}
    assert second["request_id"] == "second"
    assert second["task_id"] != first["task_id"]
