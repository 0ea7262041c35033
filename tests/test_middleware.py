"""The response-body steps the middlewares share (ctxlog._middleware): every
step of a body, sync or async, runs in the request's context whichever
context drives it; errors are logged there; cancellation and close pass through."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Iterator
from contextvars import Context, copy_context

import pytest

import ctxlog
from ctxlog._middleware import BODY_ERROR, ContextAsyncBody, ContextBody, InContext
from tests.conftest import Captured


@pytest.fixture
def logger(captured: Captured) -> logging.Logger:
    captured.handler.setFormatter(logging.Formatter("%(request_id)s %(message)s"))
    captured.handler.addFilter(ctxlog.ContextFilter(defaults={"request_id": "-"}))
    return captured.logger


def request_context(request_id: str) -> Context:
    """A copy of the context with a request's id bound, as a middleware hands on."""
    with ctxlog.scope(request_id=request_id):
        return copy_context()


def test_sync_steps_run_in_the_request_s_context(
    captured: Captured, logger: logging.Logger
) -> None:
    def body() -> Iterator[str]:
        yield ctxlog.get("request_id")
        msg = "late"
        raise ValueError(msg)

    steps = ContextBody(body(), request_context("r-1"), logger)
    assert copy_context().run(next, steps) == "r-1"
    assert ctxlog.current() == {}
    with pytest.raises(ValueError, match="late"):
        next(steps)
    with pytest.raises(StopIteration):  # the end is not an error
        next(steps)
    assert captured.lines()[0] == f"r-1 {BODY_ERROR}"
    assert sum(line.endswith(BODY_ERROR) for line in captured.lines()) == 1


def test_async_steps_run_in_the_request_s_context(
    captured: Captured, logger: logging.Logger
) -> None:
    seen: list[str] = []

    async def body() -> AsyncIterator[str]:
        try:
            for _ in range(2):
                await asyncio.sleep(0)
                yield ctxlog.get("request_id")
        finally:
            seen.append(ctxlog.get("request_id"))

    async def consume() -> list[str]:
        return [part async for part in ContextAsyncBody(body(), request_context("r-2"), logger)]

    assert asyncio.run(consume()) == ["r-2", "r-2"]
    assert seen == ["r-2"]
    assert captured.lines() == []  # StopAsyncIteration is the end, not an error

    async def failing() -> AsyncIterator[str]:
        yield "x"
        msg = "async late"
        raise ValueError(msg)

    async def consume_failing() -> None:
        async for _ in ContextAsyncBody(failing(), request_context("r-3"), logger):
            pass

    with pytest.raises(ValueError, match="async late"):
        asyncio.run(consume_failing())
    assert captured.lines()[0] == f"r-3 {BODY_ERROR}"


async def waits(seen: list[str]) -> None:
    """Waits long; on the way out, notes the request id it sees."""
    try:
        await asyncio.sleep(60)
    finally:
        seen.append(ctxlog.get("request_id"))


def test_cancellation_reaches_the_awaitable_in_its_context(captured: Captured) -> None:
    """A task cancelled while it awaits: the awaitable sees the cancellation in
    the request's context (its clean-up lines carry the id); nothing is logged
    as an error."""
    seen: list[str] = []
    slow = functools.partial(waits, seen)

    async def awaiting() -> None:
        await InContext(request_context("r-4"), slow, captured.logger)

    async def main() -> None:
        task = asyncio.create_task(awaiting())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == ["r-4"]
    assert captured.lines() == []


def test_closing_the_awaitable_closes_what_it_runs_in_its_context() -> None:
    seen: list[str] = []

    async def main() -> None:
        steps = InContext(request_context("r-5"), functools.partial(waits, seen)).__await__()
        steps.send(None)  # to its first suspension
        steps.close()

    asyncio.run(main())
    assert seen == ["r-5"]


def test_without_a_logger_errors_pass_unlogged(captured: Captured) -> None:
    async def fails() -> None:
        msg = "plain"
        raise KeyError(msg)

    async def main() -> None:
        await InContext(request_context("r-6"), fails)

    with pytest.raises(KeyError):
        asyncio.run(main())
    assert captured.lines() == []
