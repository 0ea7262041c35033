"""Units of work: ``ctxlog.scope()`` and the request-wide values of ``ctxlog.annotate()``."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog

import ctxlog
from ctxlog import ContextError
from ctxlog.structlog import merge_context
from tests.conftest import Captured


@pytest.fixture
def json_lines(captured: Captured) -> Captured:
    """The captured logger, writing each record's context fields as JSON."""

    class Fields(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            keep = {"request_id", "user_id", "tenant", "role", "n"}
            fields = {k: v for k, v in vars(record).items() if k in keep}
            return json.dumps({"message": record.getMessage(), **fields}, sort_keys=True)

    captured.handler.setFormatter(Fields())
    captured.handler.addFilter(ctxlog.ContextFilter())
    return captured


def parsed(captured: Captured) -> list[dict[str, Any]]:
    return [json.loads(line) for line in captured.lines()]


class TestScope:
    def test_binds_its_values_and_restores(self) -> None:
        with ctxlog.bind(outer=1):
            with ctxlog.scope(request_id="r-1"):
                assert dict(ctxlog.current()) == {"outer": 1, "request_id": "r-1"}
            assert dict(ctxlog.current()) == {"outer": 1}

    def test_restores_on_exceptions(self) -> None:
        with pytest.raises(KeyError), ctxlog.scope(job="j"):
            ctxlog.annotate(user_id="u")
            raise KeyError
        assert dict(ctxlog.current()) == {}
        with pytest.raises(ContextError, match="needs a unit of work"):
            ctxlog.annotate(user_id="u")

    def test_decorates_sync_and_async_functions_a_unit_per_call(self) -> None:
        units: list[object] = []

        @ctxlog.scope(job="sync")
        def job(n: int) -> dict[str, Any]:
            units.append(object())
            ctxlog.annotate(n=n)
            return dict(ctxlog.current())

        @ctxlog.scope(job="async")
        async def ajob(n: int) -> dict[str, Any]:
            await asyncio.sleep(0)
            ctxlog.annotate(n=n)
            await asyncio.sleep(0)
            return dict(ctxlog.current())

        assert job(1) == {"job": "sync", "n": 1}
        # A fresh unit per call: the first call's value is gone.
        assert job(2) == {"job": "sync", "n": 2}
        assert job.__name__ == "job"

        async def main() -> list[dict[str, Any]]:
            return await asyncio.gather(*(ajob(i) for i in range(20)))

        results = asyncio.run(main())
        assert results == [{"job": "async", "n": i} for i in range(20)]
        assert dict(ctxlog.current()) == {}

    def test_async_with(self) -> None:
        async def main() -> dict[str, Any]:
            async with ctxlog.scope(request_id="r"):
                ctxlog.annotate(user_id=1)
                return dict(ctxlog.current())

        assert asyncio.run(main()) == {"request_id": "r", "user_id": 1}

    def test_refuses_generator_functions(self) -> None:
        def gen() -> Iterator[int]:
            yield 1

        with pytest.raises(ContextError, match="cannot decorate the generator function"):
            ctxlog.scope()(gen)

    def test_empty_key(self) -> None:
        with pytest.raises(ContextError, match=r"^scope\(\)"):
            ctxlog.scope(**{"": 1})

    def test_cache_scope_is_scope(self) -> None:
        calls: list[int] = []

        @ctxlog.memoize
        def load(n: int) -> int:
            calls.append(n)
            return n

        with ctxlog.cache_scope():
            load(1)
            load(1)
        with ctxlog.scope():
            load(1)
        assert calls == [1, 1]

    def test_nested_unit_starts_with_the_outer_values(self) -> None:
        with ctxlog.scope():
            ctxlog.annotate(user_id="u", tenant="t")
            with ctxlog.scope():
                ctxlog.annotate(tenant="inner")
                assert dict(ctxlog.current()) == {"user_id": "u", "tenant": "inner"}
            # The inner unit's values never reach the outer one.
            assert dict(ctxlog.current()) == {"user_id": "u", "tenant": "t"}

    def test_repr(self) -> None:
        assert repr(ctxlog.scope(a=1)) == "ctxlog.scope(a=1)"


class TestAnnotate:
    def test_outside_any_unit(self) -> None:
        with pytest.raises(ContextError, match=r"ctxlog\.scope\(.*ctxlog\.bind\("):
            ctxlog.annotate(user_id="u")

    def test_empty_key(self) -> None:
        with ctxlog.scope(), pytest.raises(ContextError, match=r"^annotate\(\)"):
            ctxlog.annotate(**{"": 1})

    def test_bind_wins_inside_its_block_and_unbind_hides(self) -> None:
        with ctxlog.scope():
            ctxlog.annotate(user_id="annotated")
            with ctxlog.bind(user_id="bound"):
                assert ctxlog.get("user_id") == "bound"
                ctxlog.annotate(user_id="later")
                assert ctxlog.get("user_id") == "bound"
            assert ctxlog.get("user_id") == "later"
            with ctxlog.unbind("user_id"):
                assert ctxlog.get("user_id") is None
                assert "user_id" not in ctxlog.current()
            assert ctxlog.get("user_id") == "later"
        assert ctxlog.get("user_id") is None

    def test_clear_keeps_the_unit(self) -> None:
        with ctxlog.scope(request_id="r"):
            ctxlog.annotate(user_id="u")
            token = ctxlog.clear()
            assert dict(ctxlog.current()) == {"user_id": "u"}
            ctxlog.reset(token)
            assert dict(ctxlog.current()) == {"request_id": "r", "user_id": "u"}

    def test_reaches_copies_made_before_it(self) -> None:
        """Threads started earlier, executors' copies and plain copies see later values."""
        started = threading.Event()
        annotated = threading.Event()
        seen: dict[str, Any] = {}

        def worker(name: str) -> None:
            started.set()
            annotated.wait(5)
            seen[name] = ctxlog.get("user_id")

        with ctxlog.scope(request_id="r"):
            copy = contextvars.copy_context()
            thread = ctxlog.Thread(target=worker, args=("thread",))
            thread.start()
            started.wait(5)
            with ctxlog.ThreadPoolExecutor(max_workers=1) as pool:
                future = pool.submit(worker, "pool")
                ctxlog.annotate(user_id="alice")
                annotated.set()
                future.result(5)
            thread.join(5)
            assert copy.run(ctxlog.get, "user_id") == "alice"
        assert seen == {"thread": "alice", "pool": "alice"}

    def test_from_a_thread_reaches_the_unit(self) -> None:
        """What a thread-pool hop annotates (a FastAPI sync dependency) reaches the rest."""

        async def request() -> dict[str, Any]:
            async with ctxlog.scope(request_id="r"):
                await asyncio.to_thread(ctxlog.annotate, user_id="from-thread")
                return dict(ctxlog.current())

        assert asyncio.run(request()) == {"request_id": "r", "user_id": "from-thread"}

    def test_after_the_unit_ended(self) -> None:
        with ctxlog.scope():
            ctxlog.annotate(user_id="u")
            late = contextvars.copy_context()
        # The copy still shows what the unit held, but adds nothing any more.
        assert late.run(ctxlog.get, "user_id") == "u"
        with pytest.raises(ContextError, match="already ended"):
            late.run(ctxlog.annotate, role="x")

    def test_many_threads_at_once_lose_nothing(self) -> None:
        barrier = threading.Barrier(8)

        def annotate_many(t: int) -> None:
            barrier.wait(5)
            for i in range(300):
                ctxlog.annotate(**{f"k{t}_{i}": i})

        with ctxlog.scope(), ctxlog.ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(annotate_many, range(8)))
            assert len(ctxlog.current()) == 8 * 300

    def test_snapshot_and_processes_carry_annotated_values(self) -> None:
        with ctxlog.scope(request_id="r"):
            ctxlog.annotate(user_id="u")
            snap = ctxlog.snapshot()
            with ctxlog.ProcessPoolExecutor(max_workers=1) as pool:
                in_worker = pool.submit(ctxlog.snapshot).result(30)
        assert dict(snap) == {"request_id": "r", "user_id": "u"}
        assert dict(in_worker) == {"request_id": "r", "user_id": "u"}
        # A snapshot bound later is a frozen copy, outside any unit.
        assert snap.run(ctxlog.current) == {"request_id": "r", "user_id": "u"}
        with pytest.raises(ContextError, match="needs a unit of work"):
            snap.run(ctxlog.annotate, role="x")


class TestOnTheLines:
    def test_the_filter_shows_each_new_value(self, json_lines: Captured) -> None:
        log = json_lines.logger
        with ctxlog.scope(request_id="r"):
            log.info("before")
            ctxlog.annotate(user_id="u")
            log.info("after")
            ctxlog.annotate(role="admin")
            log.info("again")
        log.info("outside")
        assert parsed(json_lines) == [
            {"message": "before", "request_id": "r"},
            {"message": "after", "request_id": "r", "user_id": "u"},
            {"message": "again", "request_id": "r", "role": "admin", "user_id": "u"},
            {"message": "outside"},
        ]

    def test_record_factory_and_structlog(self) -> None:
        ctxlog.install_record_factory()
        events: list[dict[str, Any]] = []

        def keep(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> str:
            events.append(dict(event_dict))
            return ""

        structlog.configure(
            processors=[merge_context, keep], logger_factory=structlog.ReturnLoggerFactory()
        )
        try:
            with ctxlog.scope(request_id="r"):
                ctxlog.annotate(user_id="u")
                record = logging.getLogger("ctxlog.test.scope").makeRecord(
                    "x", logging.INFO, __file__, 1, "m", (), None
                )
                structlog.get_logger().info("event")
                ctxlog.annotate(user_id="v")
                structlog.get_logger().info("event")
        finally:
            structlog.reset_defaults()
        assert (record.__dict__["request_id"], record.__dict__["user_id"]) == ("r", "u")
        assert events == [
            {"event": "event", "request_id": "r", "user_id": "u"},
            {"event": "event", "request_id": "r", "user_id": "v"},
        ]

    def test_200_units_each_annotating_from_a_thread(self, json_lines: Captured) -> None:
        """Units never share their values, whatever the interleaving."""
        log = json_lines.logger

        async def request(n: int) -> None:
            async with ctxlog.scope(request_id=f"r{n}"):
                await asyncio.to_thread(ctxlog.annotate, user_id=f"u{n}")
                await asyncio.sleep(0)
                log.info("in task n=%s", n, extra={"n": n})
                await asyncio.to_thread(log.info, "in thread n=%s", n, extra={"n": n})

        async def main() -> None:
            await asyncio.gather(*(request(n) for n in range(200)))

        asyncio.run(main())
        lines = parsed(json_lines)
        assert len(lines) == 400
        for line in lines:
            assert line["request_id"] == f"r{line['n']}"
            assert line["user_id"] == f"u{line['n']}"
