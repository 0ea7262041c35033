"""Uncaught exceptions reach their hooks inside the context of the work that failed."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import ctxlog
from ctxlog.testing import capture


@pytest.fixture
def logging_excepthook() -> Iterator[None]:
    def hook(args: threading.ExceptHookArgs) -> None:
        logging.getLogger("crash").error(
            "uncaught in %s",
            args.thread.name if args.thread else "?",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]  # set for a real exception
        )

    old = threading.excepthook
    threading.excepthook = hook
    yield
    threading.excepthook = old


@pytest.mark.usefixtures("logging_excepthook")
def test_a_thread_s_uncaught_exception_is_logged_in_its_context() -> None:
    def work() -> None:
        ctxlog.set(step="inside")  # bound in the thread itself, before it fails
        raise ValueError("boom")

    with capture() as lines, ctxlog.bind(request_id="r-thread"):
        thread = ctxlog.Thread(target=work, name="worker-1")
        thread.start()
        thread.join()
        plain = threading.Thread(target=work, name="plain")
        plain.start()
        plain.join()
    by_thread = {line["message"]: line for line in lines}
    crashed = by_thread["uncaught in worker-1"]
    assert (crashed["request_id"], crashed["step"]) == ("r-thread", "inside")
    assert "ValueError: boom" in crashed["exception"]
    # A plain thread runs in a context of its own: nothing of the caller's.
    assert "request_id" not in by_thread["uncaught in plain"]


def test_asyncio_error_lines_carry_the_failing_work_s_context() -> None:
    async def fail() -> None:
        raise ValueError("never retrieved")

    async def main() -> None:
        ctxlog.install_asyncio_handler()
        ctxlog.install_asyncio_handler()  # twice changes nothing
        with ctxlog.bind(request_id="r-task"):
            task: Any = asyncio.ensure_future(fail())
        await asyncio.sleep(0.01)
        del task
        gc.collect()
        with ctxlog.bind(request_id="r-callback"):
            asyncio.get_running_loop().call_soon(lambda: 1 / 0)
        await asyncio.sleep(0.01)

    with capture() as lines:
        asyncio.run(main())
    seen = [(line["message"].splitlines()[0][:34], line.get("request_id")) for line in lines]
    assert ("Task exception was never retrieved", "r-task") in seen
    assert [rid for message, rid in seen if message.startswith("Exception in callback")] == [
        "r-callback"
    ]


def test_install_asyncio_handler_needs_a_loop() -> None:
    with pytest.raises(ctxlog.ContextError, match="no event loop is running"):
        ctxlog.install_asyncio_handler()


def test_without_a_context_the_default_handler_runs() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with capture() as lines:
            ctxlog.asyncio_exception_handler(loop, {"message": "plain"})
        assert [line["message"] for line in lines] == ["plain"]

    asyncio.run(main())
