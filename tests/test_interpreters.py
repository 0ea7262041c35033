"""ctxlog.InterpreterPoolExecutor: the context into subinterpreters, their lines back out.

The tasks below import what they use inside their body: a function that uses
no globals crosses into a subinterpreter as it is, without its module having
to be importable there (as for the stdlib executor).
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import sys
import threading
import time
from typing import Any, cast

import pytest

import ctxlog
from ctxlog.testing import capture

needs_314 = pytest.mark.needs_python((3, 14))


def work(n: int) -> dict[str, Any]:
    import logging  # noqa: PLC0415 -- a task imports inside: see the module docstring

    import ctxlog  # noqa: PLC0415

    log = logging.getLogger("app")
    log.info("start %d", n)
    with ctxlog.bind(step=n):
        log.warning("bound")
    return dict(ctxlog.current())


def fail(message: str) -> None:
    import logging  # noqa: PLC0415

    log = logging.getLogger("app")
    log.info("before")
    try:
        1 / 0  # noqa: B018 -- the error under test
    except ZeroDivisionError:
        log.exception("caught")
    raise ValueError(message)


def levels() -> None:
    import logging  # noqa: PLC0415

    logging.getLogger("app").debug("app debug")
    logging.getLogger("app.db").debug("db debug")
    logging.getLogger("other").info("other info")
    logging.getLogger("other").warning("other warning")


def wait_for(queue: Any) -> str:
    import logging  # noqa: PLC0415

    logging.getLogger("app").info("waiting")
    return str(queue.get(timeout=30))


def read(key: str) -> Any:
    import ctxlog  # noqa: PLC0415

    return ctxlog.get(key)


def stdlib_interpreters() -> Any:
    """``concurrent.interpreters`` (new in 3.14), untyped: mypy checks for 3.10 too."""
    return importlib.import_module("concurrent.interpreters")


def interpreters_pool(max_workers: int) -> Any:
    """The stdlib's ``concurrent.futures.InterpreterPoolExecutor`` (3.14+), untyped too."""
    return importlib.import_module("concurrent.futures.interpreter").InterpreterPoolExecutor(
        max_workers
    )


def by_level(lines: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(line["level"], line["message"]) for line in lines]


def test_available_from_python_3_14() -> None:
    if sys.version_info >= (3, 14):
        stdlib = concurrent.futures.InterpreterPoolExecutor
        assert issubclass(ctxlog.InterpreterPoolExecutor, stdlib)
        assert "InterpreterPoolExecutor" in ctxlog.__all__
        assert "InterpreterPoolExecutor" in dir(ctxlog)
    else:
        with pytest.raises(ImportError, match=r"needs Python 3\.14 or newer"):
            ctxlog.InterpreterPoolExecutor  # noqa: B018 -- the attribute access raises
        with pytest.raises(ImportError, match=r"ProcessPoolExecutor"):
            from ctxlog import InterpreterPoolExecutor  # noqa: F401, PLC0415
        assert "InterpreterPoolExecutor" not in ctxlog.__all__
        assert "InterpreterPoolExecutor" not in dir(ctxlog)


@needs_314
def test_tasks_run_with_the_submitters_context_and_their_lines_come_back() -> None:
    with capture(level="INFO") as lines, ctxlog.InterpreterPoolExecutor(2) as pool:
        with ctxlog.bind(request_id="r-1", user="ada"):
            first = pool.submit(work, 1)
        with ctxlog.bind(request_id="r-2"):
            mapped = list(pool.map(work, [2, 3]))
        # Every line of a task is handled before its future completes.
        assert first.result() == {"request_id": "r-1", "user": "ada"}
        done = len(lines)
    assert mapped == [{"request_id": "r-2"}, {"request_id": "r-2"}]
    assert done == 6
    assert ctxlog.current() == {}
    got = sorted(
        (line["message"], line["request_id"], line.get("user"), line.get("step")) for line in lines
    )
    assert got == [
        ("bound", "r-1", "ada", 1),
        ("bound", "r-2", None, 2),
        ("bound", "r-2", None, 3),
        ("start 1", "r-1", "ada", None),
        ("start 2", "r-2", None, None),
        ("start 3", "r-2", None, None),
    ]
    assert {line["logger"] for line in lines} == {"app"}


@needs_314
def test_a_worker_keeps_nothing_from_one_task_to_the_next() -> None:
    with ctxlog.InterpreterPoolExecutor(1) as pool:
        with ctxlog.bind(request_id="r-1"):
            assert pool.submit(read, "request_id").result() == "r-1"
        assert pool.submit(read, "request_id").result() is None
        with ctxlog.bind(request_id="r-3"):
            assert pool.submit(read, "request_id").result() == "r-3"


@needs_314
def test_an_exception_comes_back_after_the_lines_before_it() -> None:
    with capture(level="INFO") as lines, ctxlog.InterpreterPoolExecutor(1) as pool:
        with ctxlog.bind(request_id="r-err"), pytest.raises(ValueError, match="bad input"):
            pool.submit(fail, "bad input").result()
        assert by_level(lines) == [("INFO", "before"), ("ERROR", "caught")]
    assert [line["request_id"] for line in lines] == ["r-err", "r-err"]
    assert "ZeroDivisionError: division by zero" in lines[1]["exception"]


class Seen(logging.Handler):
    """(level, message) of each record handled."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.levelname, record.getMessage()))


@needs_314
def test_levels_are_the_submitting_interpreters() -> None:
    root, app = logging.getLogger(), logging.getLogger("app")
    handler = Seen()
    root.addHandler(handler)  # removed after the test (tests/conftest.py)
    old_level = root.level
    root.setLevel(logging.WARNING)
    try:
        with ctxlog.InterpreterPoolExecutor(1) as pool:
            pool.submit(levels).result()
            first = list(handler.seen)
            # A level set between two tasks applies to the next one.
            app.setLevel(logging.DEBUG)
            pool.submit(levels).result()
    finally:
        app.setLevel(logging.NOTSET)
        root.setLevel(old_level)
    assert first == [("WARNING", "other warning")]
    assert handler.seen[1:] == [
        ("DEBUG", "app debug"),
        ("DEBUG", "db debug"),
        ("WARNING", "other warning"),
    ]


@needs_314
def test_a_long_tasks_lines_arrive_while_it_runs() -> None:
    interpreters = stdlib_interpreters()
    go = interpreters.create_queue()
    with capture(level="INFO") as lines, ctxlog.InterpreterPoolExecutor(1) as pool:
        with ctxlog.bind(request_id="r-long"):
            future = pool.submit(wait_for, go)
        deadline = time.monotonic() + 10
        while not lines and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not future.done()
        go.put("go")
        assert future.result(10) == "go"
    assert [(line["message"], line["request_id"]) for line in lines] == [("waiting", "r-long")]


@needs_314
def test_bound_values_must_pickle() -> None:
    lock = threading.Lock()
    with (
        ctxlog.InterpreterPoolExecutor(1) as pool,
        ctxlog.bind(request_id="r-1", lock=lock),
        pytest.raises(ctxlog.ContextError, match="'lock'"),
    ):
        pool.submit(read, "request_id")
    with ctxlog.InterpreterPoolExecutor(1, on_unpicklable="str") as pool, ctxlog.bind(lock=lock):
        assert pool.submit(read, "lock").result() == str(lock)
    with pytest.raises(ctxlog.ContextError, match="'raise' or 'str'"):
        ctxlog.InterpreterPoolExecutor(on_unpicklable=cast("Any", "drop"))


@needs_314
def test_the_plain_pool_loses_the_context_and_the_lines() -> None:
    """What ctxlog's executor is for: the stdlib's shares neither."""
    interpreters = stdlib_interpreters()
    with (
        capture(level="INFO") as lines,
        interpreters_pool(1) as pool,
        ctxlog.bind(request_id="r-1"),
    ):
        assert pool.submit(read, "request_id").result() is None
        assert pool.submit(levels).result() is None
        with pytest.raises(interpreters.NotShareableError):
            pool.submit(ctxlog.wrap(read), "request_id").result()
    assert lines == []


@needs_314
def test_shutdown_without_wait_still_hands_every_line_on() -> None:
    pool = ctxlog.InterpreterPoolExecutor(2)
    with capture(level="INFO") as lines:
        with ctxlog.bind(request_id="r-1"):
            futures = [pool.submit(work, n) for n in range(4)]
        pool.shutdown(wait=False)
        for future in futures:
            future.result(30)
        assert len(lines) == 8
    pool.shutdown()
    assert {line["request_id"] for line in lines} == {"r-1"}
