"""memoize / cache_scope: per-context caches shared by the tasks and threads of one scope."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import ctxlog
from ctxlog import ContextError, ContextFilter
from tests.conftest import THREADS_INHERIT_CONTEXT, Captured


class Result:
    """A cached value that can be weak-referenced."""

    def __init__(self, value: Any) -> None:
        self.value = value


def collected(ref: weakref.ref[Any]) -> bool:
    for _ in range(3):
        gc.collect()
        if ref() is None:
            return True
    return False


class Counter:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self.lock:
            self.calls.append(item)


class TestSync:
    def test_outside_a_scope_calls_through(self) -> None:
        counter = Counter()

        @ctxlog.memoize
        def square(x: int) -> int:
            counter.add(x)
            return x * x

        assert [square(2), square(2)] == [4, 4]
        assert counter.calls == [2, 2]

    def test_caches_inside_a_scope_only(self) -> None:
        counter = Counter()

        @ctxlog.memoize
        def square(x: int, *, plus: int = 0) -> int:
            counter.add((x, plus))
            return x * x + plus

        with ctxlog.cache_scope():
            assert [square(2), square(2), square(3), square(2, plus=1), square(2, plus=1)] == [
                4,
                4,
                9,
                5,
                5,
            ]
        assert counter.calls == [(2, 0), (3, 0), (2, 1)]
        with ctxlog.cache_scope():
            square(2)
        assert counter.calls[-1] == (2, 0)  # a new scope starts empty
        assert len(counter.calls) == 4

    def test_kwargs_do_not_collide_with_positional(self) -> None:
        @ctxlog.memoize
        def echo(*args: Any, **kwargs: Any) -> Any:
            return (args, kwargs)

        with ctxlog.cache_scope():
            assert echo("a", 1) == (("a", 1), {})
            assert echo(a=1) == ((), {"a": 1})
            assert echo("a", a=1) == (("a",), {"a": 1})

    def test_nested_scopes(self) -> None:
        counter = Counter()

        @ctxlog.memoize
        def load(key: str) -> str:
            counter.add(key)
            return key.upper()

        with ctxlog.cache_scope():
            load("a")
            with ctxlog.cache_scope():
                load("a")  # the inner scope hides the outer one
                load("a")
            load("a")  # the outer cache is still there
        assert counter.calls == ["a", "a"]

    def test_exceptions_are_not_cached(self) -> None:
        attempts = Counter()

        @ctxlog.memoize
        def flaky(key: str) -> str:
            attempts.add(key)
            if len(attempts.calls) == 1:
                msg = "first time fails"
                raise ValueError(msg)
            return key

        with ctxlog.cache_scope():
            with pytest.raises(ValueError, match="first time"):
                flaky("k")
            assert flaky("k") == "k"
            assert flaky("k") == "k"
        assert attempts.calls == ["k", "k"]

    def test_unhashable_arguments_name_the_function(self) -> None:
        @ctxlog.memoize
        def takes_list(items: list[int]) -> int:
            return len(items)

        assert takes_list([1]) == 1  # no scope: no key needed
        with ctxlog.cache_scope():
            with pytest.raises(TypeError, match=r"test_memo\..*takes_list\(\).*unhashable"):
                takes_list([1])
            assert takes_list((1, 2)) == 2  # type: ignore[arg-type]  # hashable: cached
            with pytest.raises(TypeError, match="takes_list"):
                takes_list([1, 2])  # the fast path (the scope has a cache now)

    def test_maxsize_keeps_the_most_recently_used(self) -> None:
        counter = Counter()

        @ctxlog.memoize(maxsize=2)
        def load(key: str) -> str:
            counter.add(key)
            return key

        assert load("outside") == "outside"  # no scope: called through
        with ctxlog.cache_scope():
            load("a")
            load("b")
            load("a")  # a is now the most recent
            load("c")  # evicts b
            load("a")
            load("b")  # called again
        assert counter.calls == ["outside", "a", "b", "c", "b"]

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
    def test_invalid_maxsize(self, bad: Any) -> None:
        with pytest.raises(ContextError, match="maxsize"):
            ctxlog.memoize(maxsize=bad)

    def test_generator_functions_are_refused(self) -> None:
        def gen() -> Iterator[int]:
            yield 1

        with pytest.raises(ContextError, match="generator"):
            ctxlog.memoize(gen)
        with pytest.raises(ContextError, match="generator"):
            ctxlog.cache_scope()(gen)

    def test_methods(self) -> None:
        counter = Counter()

        class Repo:
            def __init__(self, name: str) -> None:
                self.name = name

            @ctxlog.memoize
            def get(self, key: int) -> str:
                counter.add((self.name, key))
                return f"{self.name}:{key}"

            @classmethod
            @ctxlog.memoize
            def kind(cls) -> str:
                counter.add(cls.__name__)
                return cls.__name__

        first, second = Repo("one"), Repo("two")
        with ctxlog.cache_scope():
            assert [first.get(1), first.get(1), second.get(1), Repo.kind(), Repo.kind()] == [
                "one:1",
                "one:1",
                "two:1",
                "Repo",
                "Repo",
            ]
        assert counter.calls == [("one", 1), ("two", 1), "Repo"]
        assert Repo.get.__name__ == "get"

    def test_recursive_call_with_the_same_key_does_not_deadlock(self) -> None:
        depth = Counter()

        @ctxlog.memoize
        def settle(key: str) -> int:
            depth.add(key)
            if len(depth.calls) < 3:
                return settle(key)  # same key, same thread: called through
            return len(depth.calls)

        with ctxlog.cache_scope():
            assert settle("k") == 3
            assert settle("k") == 3  # the outermost call's result is cached
        assert depth.calls == ["k", "k", "k"]

    def test_logs_once_per_request(self, captured: Captured) -> None:
        captured.handler.setFormatter(logging.Formatter("%(request_id)s|%(message)s"))
        captured.handler.addFilter(ContextFilter())

        @ctxlog.memoize
        def user(uid: int) -> str:
            captured.logger.info("loading user %d", uid)
            return f"user-{uid}"

        for rid in ("r-1", "r-2"):
            with ctxlog.bind(request_id=rid), ctxlog.cache_scope():
                for _ in range(3):
                    user(7)
        assert captured.lines() == ["r-1|loading user 7", "r-2|loading user 7"]


class TestThreads:
    def test_threads_share_one_call_in_progress(self) -> None:
        counter = Counter()
        started = threading.Event()

        @ctxlog.memoize
        def slow(key: str) -> Result:
            counter.add(key)
            started.set()
            time.sleep(0.05)
            return Result(key)

        with ctxlog.cache_scope(), ctxlog.ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(slow, "k") for _ in range(8)]
            results = [f.result(timeout=10) for f in futures]
            assert slow("k") is results[0]
        assert counter.calls == ["k"]
        assert all(r is results[0] for r in results)

    def test_scope_reaches_thread_and_wrap(self) -> None:
        counter = Counter()

        @ctxlog.memoize
        def load(key: str) -> str:
            counter.add(key)
            return key

        with ctxlog.cache_scope():
            load("a")
            thread = ctxlog.Thread(target=load, args=("a",))
            thread.start()
            thread.join()
            ctxlog.wrap(load)("a")
            plain = threading.Thread(target=load, args=("a",))  # no handoff: no scope
            plain.start()
            plain.join()
        # A plain thread has no scope, unless it inherits the starter's context (3.14+).
        assert counter.calls == (["a"] if THREADS_INHERIT_CONTEXT else ["a", "a"])

    def test_exception_reaches_every_waiter_and_is_not_cached(self) -> None:
        counter = Counter()
        gate = threading.Event()

        @ctxlog.memoize
        def fails(key: str) -> str:
            counter.add(key)
            gate.wait(timeout=10)
            if len(counter.calls) == 1:
                msg = "boom"
                raise ValueError(msg)
            return "ok"

        errors: list[BaseException] = []
        with ctxlog.cache_scope(), ctxlog.ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(fails, "k") for _ in range(4)]
            while len(counter.calls) < 1:
                time.sleep(0.001)
            time.sleep(0.02)  # let the others join the call in progress
            gate.set()
            for future in futures:
                error = future.exception(timeout=10)
                if error is not None:
                    errors.append(error)
            assert fails("k") == "ok"
        assert len(errors) == 4
        assert all(isinstance(e, ValueError) for e in errors)
        assert counter.calls == ["k", "k"]

    def test_scope_closed_while_a_thread_still_runs(self) -> None:
        counter = Counter()
        inside = threading.Event()
        release = threading.Event()

        @ctxlog.memoize
        def load(key: str) -> str:
            counter.add(key)
            return key

        def late_worker() -> list[str]:
            load("a")
            inside.set()
            release.wait(timeout=10)
            return [load("a"), load("a")]  # the scope ended meanwhile: called through

        with ctxlog.ThreadPoolExecutor(max_workers=1) as pool:
            with ctxlog.cache_scope():
                future = pool.submit(late_worker)
                assert inside.wait(timeout=10)
            release.set()
            assert future.result(timeout=10) == ["a", "a"]
        assert counter.calls == ["a", "a", "a"]

    def test_cache_is_freed_when_the_scope_ends(self) -> None:
        @ctxlog.memoize
        def build(key: str) -> Result:
            return Result(key)

        with ctxlog.ThreadPoolExecutor(max_workers=2) as pool:
            with ctxlog.cache_scope():
                result = pool.submit(build, "k").result(timeout=10)
                ref = weakref.ref(result)
                assert build("k") is result
                del result
                assert not collected(ref)  # the scope holds it
            assert collected(ref)  # the workers, still alive, do not


class TestAsync:
    def test_tasks_share_one_call_in_progress(self) -> None:
        counter = Counter()

        @ctxlog.memoize
        async def fetch(key: str) -> str:
            counter.add((key, ctxlog.get("request_id")))
            await asyncio.sleep(0.01)
            return key.upper()

        async def main() -> list[str]:
            async with ctxlog.cache_scope(), ctxlog.bind(request_id="r-1"):
                results = await asyncio.gather(*(fetch("k") for _ in range(10)))
                return [*results, await fetch("k")]

        assert asyncio.run(main()) == ["K"] * 11
        assert counter.calls == [("k", "r-1")]

    def test_cancelled_first_caller_does_not_cancel_the_others(self) -> None:
        counter = Counter()

        @ctxlog.memoize
        async def fetch(key: str) -> str:
            counter.add(key)
            await asyncio.sleep(0.05)
            return key.upper()

        async def main() -> list[Any]:
            async with ctxlog.cache_scope():
                first = asyncio.create_task(fetch("k"))
                await asyncio.sleep(0.005)
                others = [asyncio.create_task(fetch("k")) for _ in range(3)]
                await asyncio.sleep(0.005)
                first.cancel()
                outcome = await asyncio.gather(first, *others, return_exceptions=True)
                return [type(outcome[0]).__name__, *outcome[1:], await fetch("k")]

        assert asyncio.run(main()) == ["CancelledError", "K", "K", "K", "K"]
        assert counter.calls == ["k"]

    def test_all_callers_cancelled_cancels_the_call(self) -> None:
        events: list[str] = []

        @ctxlog.memoize
        async def fetch(key: str) -> str:
            events.append("start")
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
            return key

        async def main() -> str:
            async with ctxlog.cache_scope():
                callers = [asyncio.create_task(fetch("k")) for _ in range(2)]
                await asyncio.sleep(0.01)
                for caller in callers:
                    caller.cancel()
                await asyncio.gather(*callers, return_exceptions=True)
                await asyncio.sleep(0.01)
                fresh = asyncio.create_task(fetch("k"))  # starts a new call
                await asyncio.sleep(0.01)
                fresh.cancel()
                await asyncio.gather(fresh, return_exceptions=True)
                return "done"

        assert asyncio.run(main()) == "done"
        assert events == ["start", "cancelled", "start", "cancelled"]

    def test_exception_is_shared_and_not_cached(self) -> None:
        counter = Counter()

        @ctxlog.memoize
        async def fetch(key: str) -> str:
            counter.add(key)
            await asyncio.sleep(0.01)
            if len(counter.calls) == 1:
                msg = "boom"
                raise ValueError(msg)
            return "ok"

        async def main() -> list[Any]:
            async with ctxlog.cache_scope():
                outcome = await asyncio.gather(
                    *(fetch("k") for _ in range(3)), return_exceptions=True
                )
                return [*(type(o).__name__ for o in outcome), await fetch("k"), await fetch("k")]

        assert asyncio.run(main()) == ["ValueError"] * 3 + ["ok", "ok"]
        assert counter.calls == ["k", "k"]

    def test_unhashable_maxsize_and_outside_scope(self) -> None:
        counter = Counter()

        @ctxlog.memoize(maxsize=1)
        async def fetch(key: Any) -> Any:
            counter.add(key)
            return key

        async def main() -> None:
            assert await fetch([1]) == [1]  # no scope: called through
            async with ctxlog.cache_scope():
                with pytest.raises(TypeError, match="fetch"):
                    await fetch([1])
                await fetch("a")
                with pytest.raises(TypeError, match="fetch"):
                    await fetch([1])  # the fast path
                await fetch("a")
                await fetch("b")  # evicts a
                await fetch("a")

        asyncio.run(main())
        assert counter.calls == [[1], "a", "b", "a"]

    def test_recursive_call_with_the_same_key_does_not_deadlock(self) -> None:
        depth = Counter()

        @ctxlog.memoize
        async def settle(key: str) -> int:
            depth.add(key)
            if len(depth.calls) < 3:
                return await settle(key)  # same key, inside the call in progress
            return len(depth.calls)

        async def main() -> list[int]:
            async with ctxlog.cache_scope():
                first = await asyncio.wait_for(settle("k"), timeout=10)
                return [first, await settle("k")]  # the outermost call's result is cached

        assert asyncio.run(main()) == [3, 3]
        assert depth.calls == ["k", "k", "k"]

    def test_under_an_eager_task_factory(self) -> None:
        # Python 3.12+'s eager tasks run the call's first steps inside
        # create_task(): a memoized function calling memoized functions of the
        # same scope right away must neither deadlock nor lose the cache.
        counter = Counter()

        @ctxlog.memoize
        async def fib(n: int) -> int:
            counter.add(n)
            if n < 2:
                return n
            return await fib(n - 1) + await fib(n - 2)

        async def main() -> list[int]:
            factory = getattr(asyncio, "eager_task_factory", None)  # 3.12+
            asyncio.get_running_loop().set_task_factory(factory)
            async with ctxlog.cache_scope():
                first = await asyncio.wait_for(fib(25), timeout=10)
                return [first, await fib(25), await fib(24)]

        assert asyncio.run(main()) == [75025, 75025, 46368]
        assert sorted(counter.calls) == list(range(26))  # each n computed once

    def test_a_call_that_cannot_start_leaves_nothing_pending(self) -> None:
        @ctxlog.memoize
        async def load(key: str) -> str:
            return key

        async def main() -> None:
            async with ctxlog.cache_scope():
                for _ in range(2):  # the second call fails the same way, never hangs
                    with pytest.raises(TypeError, match="positional argument"):
                        await asyncio.wait_for(load("a", "b"), timeout=10)  # type: ignore[call-arg]  # misuse
                assert await load("a") == "a"

        asyncio.run(main())

    def test_cache_scope_as_decorator(self) -> None:
        counter = Counter()

        @ctxlog.memoize
        async def fetch(key: str) -> str:
            counter.add(key)
            return key

        @ctxlog.memoize
        def load(key: str) -> str:
            counter.add(key)
            return key

        @ctxlog.cache_scope()
        async def handler() -> None:
            await fetch("a")
            await fetch("a")

        @ctxlog.cache_scope()
        def sync_handler() -> None:
            load("b")
            load("b")

        asyncio.run(handler())
        asyncio.run(handler())
        sync_handler()
        assert counter.calls == ["a", "a", "b"]

    def test_scope_shared_by_two_event_loops(self) -> None:
        counter = Counter()
        barrier = threading.Barrier(2)

        @ctxlog.memoize
        async def fetch(key: str) -> str:
            counter.add(key)
            await asyncio.sleep(0.02)
            return key.upper()

        results: list[str] = []

        def run_loop() -> None:
            async def main() -> str:
                barrier.wait(timeout=10)
                return await fetch("k")

            results.append(asyncio.run(main()))

        with ctxlog.cache_scope():
            threads = [ctxlog.Thread(target=run_loop) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert results == ["K", "K"]
        assert 1 <= len(counter.calls) <= 2  # another loop's task cannot be awaited

    def test_scope_closed_while_a_task_still_runs(self) -> None:
        counter = Counter()

        @ctxlog.memoize
        async def fetch(key: str) -> str:
            counter.add(key)
            return key

        async def main() -> list[str]:
            release = asyncio.Event()

            async def late() -> list[str]:
                await fetch("a")
                await release.wait()
                return [await fetch("a"), await fetch("b")]

            async with ctxlog.cache_scope():
                task = asyncio.create_task(late())
                await asyncio.sleep(0.01)
            release.set()
            return await task

        assert asyncio.run(main()) == ["a", "b"]
        assert counter.calls == ["a", "a", "b"]

    def test_async_cache_is_freed_when_the_scope_ends(self) -> None:
        @ctxlog.memoize
        async def build(key: str) -> Result:
            await asyncio.sleep(0)
            return Result(key)

        async def main() -> weakref.ref[Result]:
            async with ctxlog.cache_scope():
                result = await build("k")
                assert await build("k") is result
                return weakref.ref(result)

        ref = asyncio.run(main())
        assert collected(ref)


class TestRaces:
    """Paths taken when another thread or task gets there first, driven directly."""

    def test_result_stored_between_the_fast_path_and_the_lock(self) -> None:
        from ctxlog._memo import _async_miss, _FnState, _sync_miss  # noqa: PLC0415 -- internals

        def never(*args: Any) -> Any:
            raise AssertionError

        state = _FnState(None)
        results = {("k",): "stored by another thread"}
        assert _sync_miss(never, (results, state), ("k",), ("k",), {}) == results[("k",)]

        async def anever(*args: Any) -> Any:
            raise AssertionError

        async def main() -> Any:
            return await _async_miss(anever, (results, state), ("k",), ("k",), {})

        assert asyncio.run(main()) == results[("k",)]

    def test_touch_after_eviction(self) -> None:
        from ctxlog._memo import _FnState  # noqa: PLC0415 -- internals

        state = _FnState(1)
        results: dict[Any, Any] = {}
        state.store(results, "a", 1)
        state.store(results, "b", 2)  # evicts a
        state.touch("a")  # a reader that found "a" just before: no error
        assert results == {"b": 2}
        assert list(state.order) == ["b"]

    def test_bounded_cache_after_the_scope_closed_and_unhashable(self) -> None:
        counter = Counter()

        @ctxlog.memoize(maxsize=4)
        def load(key: Any) -> Any:
            counter.add(key)
            return key

        release = threading.Event()

        def late() -> list[Any]:
            load("a")
            release.wait(timeout=10)
            return [load("a"), load("a")]

        with ctxlog.ThreadPoolExecutor(1) as pool:
            with ctxlog.cache_scope():
                future = pool.submit(late)
                while not counter.calls:
                    time.sleep(0.001)
                with pytest.raises(TypeError, match="load"):
                    load(["unhashable"])
            release.set()
            assert future.result(timeout=10) == ["a", "a"]
        assert counter.calls == ["a", "a", "a"]


class TestCacheScope:
    def test_left_in_another_context(self) -> None:
        scope = ctxlog.cache_scope()

        async def main() -> None:
            scope.__enter__()

            async def other() -> None:
                scope.__exit__(None, None, None)

            with pytest.raises(ContextError, match="different context"):
                await asyncio.create_task(other())

        asyncio.run(main())

    def test_one_object_shared_by_tasks_leaving_in_any_order(self) -> None:
        # A module-level scope object used as `async with` by many requests at
        # once: each leaves its own scope, whatever order they leave in.
        request_scope = ctxlog.cache_scope()
        counter = Counter()

        @ctxlog.memoize
        async def load(key: str) -> str:
            counter.add(key)
            return key

        async def request(n: int) -> None:
            async with request_scope:
                assert await load("k") == "k"
                await asyncio.sleep(0.001 * n)
                assert await load("k") == "k"
            assert await load("k") == "k"

        async def main() -> None:
            await asyncio.gather(*(request(n) for n in range(10)))

        asyncio.run(main())
        # Once per request inside its scope, once per request after leaving it.
        assert counter.calls == ["k"] * 20
        assert request_scope._entries == []

    def test_repr(self) -> None:
        # One concept: cache_scope is scope.
        assert ctxlog.cache_scope is ctxlog.scope
        assert repr(ctxlog.cache_scope()) == "ctxlog.scope()"
        assert repr(ctxlog.scope(job="j")) == "ctxlog.scope(job='j')"
