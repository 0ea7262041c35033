"""Generators and context: plain failures, isolate/aisolate, bind on generator functions."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
from collections.abc import AsyncGenerator, Generator
from typing import Any

import pytest

import ctxlog
from ctxlog import ContextError, ContextFilter
from tests.conftest import Captured


def fmt(captured: Captured) -> logging.Logger:
    captured.handler.setFormatter(logging.Formatter("%(request_id)s|%(step)s|%(message)s"))
    captured.handler.addFilter(ContextFilter(defaults={"request_id": "-", "step": "-"}))
    return captured.logger


def in_thread(fn: Any, *args: Any) -> BaseException | None:
    """Run *fn* in a plain thread; return what it raised."""
    errors: list[BaseException] = []

    def main() -> None:
        try:
            fn(*args)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    return errors[0] if errors else None


def stepper(log: logging.Logger) -> Generator[int, str | None, str]:
    """Binds across its yields, logs at every step and when closed."""
    with ctxlog.bind(step="gen"):
        try:
            received = yield 1
            log.info("got %s", received)
            yield 2
        finally:
            log.info("cleanup")
    return "finished"


async def astepper(log: logging.Logger) -> AsyncGenerator[int, str | None]:
    async with ctxlog.bind(step="agen"):
        try:
            received = yield 1
            await asyncio.sleep(0)
            log.info("got %s", received)
            yield 2
        finally:
            log.info("cleanup")


class TestPlainGenerators:
    """What goes wrong without isolate(): pinned, because README.md shows it."""

    def test_binding_leaks_to_the_consumer(self, captured: Captured) -> None:
        log = fmt(captured)
        gen = stepper(log)
        next(gen)
        log.info("consumer")  # sees the generator's binding
        gen.close()
        assert captured.lines() == ["-|gen|consumer", "-|gen|cleanup"]

    @pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
    def test_closed_from_another_thread_fails(self, captured: Captured) -> None:
        log = fmt(captured)
        gen = stepper(log)
        next(gen)
        error = in_thread(gen.close)
        assert isinstance(error, ContextError)
        assert "ctxlog.isolate()" in str(error)

    def test_async_closed_from_another_task_fails(self, captured: Captured) -> None:
        log = fmt(captured)

        async def main() -> BaseException | None:
            agen = astepper(log)
            await agen.__anext__()
            try:
                await asyncio.create_task(agen.aclose())
            except ContextError as exc:
                return exc
            return None

        error = asyncio.run(main())
        assert isinstance(error, ContextError)
        assert "ctxlog.isolate() / ctxlog.aisolate()" in str(error)


class TestIsolate:
    def test_no_leak_and_close_from_another_thread(self, captured: Captured) -> None:
        log = fmt(captured)
        with ctxlog.bind(request_id="r-1"):
            gen = ctxlog.isolate(stepper(log))
        assert next(gen) == 1
        log.info("consumer")
        assert gen.send("x") == 2
        assert in_thread(gen.close) is None
        assert captured.lines() == ["-|-|consumer", "r-1|gen|got x", "r-1|gen|cleanup"]

    def test_return_value_and_throw(self, captured: Captured) -> None:
        log = fmt(captured)
        gen = ctxlog.isolate(stepper(log))
        assert list(gen) == [1, 2]
        gen = ctxlog.isolate(stepper(log))
        next(gen)
        gen.send("y")
        with pytest.raises(StopIteration) as stop:
            next(gen)
        assert stop.value.value == "finished"
        gen = ctxlog.isolate(stepper(log))
        next(gen)
        with pytest.raises(KeyError):
            gen.throw(KeyError("k"))
        assert captured.lines()[-1] == "-|gen|cleanup"
        assert repr(gen).startswith("ctxlog.isolate(<generator object stepper")

    def test_sees_the_context_of_isolate_time(self) -> None:
        def reader() -> Generator[Any, None, None]:
            while True:
                yield ctxlog.get("request_id")

        with ctxlog.bind(request_id="at-isolate"):
            gen = ctxlog.isolate(reader())
        with ctxlog.bind(request_id="consumer"):
            assert next(gen) == "at-isolate"

    def test_abandoned_generator_is_closed_in_its_context(self, captured: Captured) -> None:
        # Without isolate() the garbage collector's close() would raise a ContextError
        # ("Exception ignored"), which pytest turns into a failure here.
        log = fmt(captured)
        with ctxlog.bind(request_id="r-gc"):
            gen = ctxlog.isolate(stepper(log))
        next(gen)
        del gen
        gc.collect()
        assert captured.lines() == ["r-gc|gen|cleanup"]
        assert dict(ctxlog.current()) == {}

    def test_yield_from_an_isolated_generator(self) -> None:
        def outer() -> Generator[Any, None, None]:
            yield ctxlog.get("step")
            yield from ctxlog.isolate(inner())
            yield ctxlog.get("step")

        def inner() -> Generator[Any, None, None]:
            with ctxlog.bind(step="inner"):
                yield ctxlog.get("step")

        assert list(outer()) == [None, "inner", None]

    def test_refuses_other_objects(self) -> None:
        with pytest.raises(ContextError, match="generator object"):
            ctxlog.isolate([1, 2])  # type: ignore[arg-type]  # misuse under test
        with pytest.raises(ContextError, match=r"async generator object, not function \(call"):
            ctxlog.aisolate(stepper)  # type: ignore[arg-type]  # misuse under test
        with pytest.raises(ContextError, match=r"not function \(call the generator function"):
            ctxlog.isolate(stepper)  # type: ignore[arg-type]  # the function, not a generator


class TestAisolate:
    def test_no_leak_and_close_from_another_task(self, captured: Captured) -> None:
        log = fmt(captured)

        async def main() -> None:
            async with ctxlog.bind(request_id="r-1"):
                agen = ctxlog.aisolate(astepper(log))
            assert await agen.__anext__() == 1
            log.info("consumer")
            assert await agen.asend("x") == 2
            await asyncio.create_task(agen.aclose())

        asyncio.run(main())
        assert captured.lines() == ["-|-|consumer", "r-1|agen|got x", "r-1|agen|cleanup"]

    def test_athrow_and_exhaustion(self, captured: Captured) -> None:
        log = fmt(captured)

        async def main() -> list[int]:
            items = [item async for item in ctxlog.aisolate(astepper(log))]
            agen = ctxlog.aisolate(astepper(log))
            await agen.__anext__()
            with pytest.raises(KeyError):
                await agen.athrow(KeyError("k"))
            assert repr(agen).startswith("ctxlog.aisolate(<async_generator object astepper")
            return items

        assert asyncio.run(main()) == [1, 2]
        assert captured.lines() == ["-|agen|got None", "-|agen|cleanup", "-|agen|cleanup"]

    def test_abandoned_generator_is_closed_in_its_context(self, captured: Captured) -> None:
        log = fmt(captured)

        async def main() -> None:
            async with ctxlog.bind(request_id="r-gc"):
                agen = ctxlog.aisolate(astepper(log))
            await agen.__anext__()
            del agen
            gc.collect()  # the loop's finalizer schedules aclose() in a task...
            for _ in range(5):
                await asyncio.sleep(0)

        asyncio.run(main())
        assert captured.lines() == ["r-gc|agen|cleanup"]  # ...which runs in the private context

    def test_open_at_loop_shutdown_is_closed_in_its_context(self, captured: Captured) -> None:
        log = fmt(captured)
        kept: list[Any] = []

        async def main() -> None:
            async with ctxlog.bind(request_id="r-shutdown"):
                agen = ctxlog.aisolate(astepper(log))
            await agen.__anext__()
            kept.append(agen)  # still open when asyncio.run() shuts the loop down

        asyncio.run(main())
        assert captured.lines() == ["r-shutdown|agen|cleanup"]

    def test_cancelled_while_awaiting_inside_the_generator(self, captured: Captured) -> None:
        log = fmt(captured)

        async def slow() -> AsyncGenerator[int, None]:
            async with ctxlog.bind(step="slow"):
                try:
                    await asyncio.sleep(10)
                    yield 1
                except asyncio.CancelledError:
                    log.info("cancelled inside")
                    raise
                finally:
                    log.info("cleanup")

        async def main() -> str:
            async with ctxlog.bind(request_id="r-1"):
                agen = ctxlog.aisolate(slow())
            consumer = asyncio.create_task(agen.__anext__())
            await asyncio.sleep(0.01)
            consumer.cancel()
            try:
                await consumer
            except asyncio.CancelledError:
                return "consumer cancelled"
            return "not cancelled"

        assert asyncio.run(main()) == "consumer cancelled"
        assert captured.lines() == ["r-1|slow|cancelled inside", "r-1|slow|cleanup"]

    def test_without_an_event_loop_hook(self) -> None:
        async def numbers() -> AsyncGenerator[Any, None]:
            with ctxlog.bind(step="inner"):
                yield ctxlog.get("step")

        agen = ctxlog.aisolate(numbers())
        step = agen.__anext__().__await__()  # driven by hand: no loop, no hooks
        with pytest.raises(StopIteration) as stop:
            step.send(None)
        assert stop.value.value == "inner"
        closing = agen.aclose().__await__()
        with pytest.raises(StopIteration):
            closing.send(None)


class TestBindOnGeneratorFunctions:
    def test_sync(self, captured: Captured) -> None:
        log = fmt(captured)

        @ctxlog.bind(step="decorated")
        def numbers() -> Generator[int, None, None]:
            try:
                yield 1
                log.info("between")
                yield 2
            finally:
                log.info("cleanup")

        with ctxlog.bind(request_id="r-1"):
            gen = numbers()
        assert next(gen) == 1
        log.info("consumer")
        assert next(gen) == 2
        assert in_thread(gen.close) is None
        assert numbers.__name__ == "numbers"
        assert captured.lines() == [
            "-|-|consumer",
            "r-1|decorated|between",
            "r-1|decorated|cleanup",
        ]

    def test_async(self, captured: Captured) -> None:
        log = fmt(captured)

        @ctxlog.bind(step="decorated")
        async def numbers() -> AsyncGenerator[int, None]:
            try:
                yield 1
                await asyncio.sleep(0)
                log.info("between")
                yield 2
            finally:
                log.info("cleanup")

        async def main() -> None:
            async with ctxlog.bind(request_id="r-1"):
                agen = numbers()
            assert await agen.__anext__() == 1
            log.info("consumer")
            assert await agen.__anext__() == 2
            await asyncio.create_task(agen.aclose())

        asyncio.run(main())
        assert captured.lines() == [
            "-|-|consumer",
            "r-1|decorated|between",
            "r-1|decorated|cleanup",
        ]

    def test_each_call_gets_its_own_context(self) -> None:
        @ctxlog.bind(step="decorated")
        def counter() -> Generator[Any, None, None]:
            var_value = ctxlog.get("n", 0)
            ctxlog.set(n=var_value + 1)
            yield ctxlog.get("n")

        assert [next(counter()), next(counter())] == [1, 1]

    def test_many_generators_consumed_across_threads(self) -> None:
        def produce(n: int) -> Generator[Any, None, None]:
            with ctxlog.bind(request_id=f"r-{n}"):
                for _ in range(3):
                    yield ctxlog.get("request_id")

        gens = [ctxlog.isolate(produce(n)) for n in range(10)]
        results: dict[int, list[Any]] = {}
        ctx_errors: list[BaseException] = []

        def consume(n: int) -> None:
            try:
                results[n] = [next(gens[n])]  # first step here...
            except BaseException as exc:
                ctx_errors.append(exc)

        for n in range(10):
            assert in_thread(consume, n) is None
        for n in range(10):
            results[n] += list(gens[n])  # ...the rest, and the close, in the main thread
        assert ctx_errors == []
        assert results == {n: [f"r-{n}"] * 3 for n in range(10)}
        assert contextvars.copy_context().run(ctxlog.get, "request_id") is None
