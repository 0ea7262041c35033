"""Handing the context over: snapshot/Snapshot, wrap, Thread, the executors, QueueHandler."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import copy
import gc
import io
import json
import logging
import logging.config
import logging.handlers
import multiprocessing
import pickle
import queue
import sys
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ctxlog
from ctxlog import ContextError, ContextFilter, Snapshot
from ctxlog._snapshot import (
    CONTEXT_HEADER,
    MAX_HEADER_DEPTH,
    MAX_HEADER_SIZE,
    _find_unsafe,
    _general_json,
    _plain_json,
)
from ctxlog.stdlib import json_formatter
from tests.conftest import THREADS_INHERIT_CONTEXT, Captured

# Forking while another thread runs warns on 3.12+; the pools here fork before
# their own threads start, but the test process may hold idle threads of others.
FORK_WARNING = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
START_METHODS = [pytest.param("fork", marks=FORK_WARNING), "spawn"]


def fmt(captured: Captured, pattern: str = "%(request_id)s|%(message)s") -> None:
    captured.handler.setFormatter(logging.Formatter(pattern))
    captured.handler.addFilter(ContextFilter(defaults={"request_id": "-"}))


class Value:
    """A bound value that can be weak-referenced (to prove nobody keeps it)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Value({self.name})"


def collected(ref: weakref.ref[Any]) -> bool:
    for _ in range(3):
        gc.collect()
        if ref() is None:
            return True
    return False


# --------------------------------------------------------------------------
# module-level functions: process workers must be importable (spawn)
# --------------------------------------------------------------------------


def worker_log_lines(message: str) -> list[str]:
    """Log *message* in this process through a JSON handler; return the lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter())
    log = logging.getLogger("ctxlog.test.worker")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        log.info(message)
    finally:
        log.removeHandler(handler)
    return stream.getvalue().splitlines()


def worker_context(_: object = None) -> dict[str, Any]:
    return dict(ctxlog.current())


def worker_binds_and_leaves_it(_: object = None) -> dict[str, Any]:
    """A careless task: sets a value and never resets it."""
    seen = dict(ctxlog.current())
    ctxlog.set(leaked="yes")
    return seen


_initial: dict[str, Any] = {}


def worker_init() -> None:
    _initial.update(ctxlog.current(), initialized=True)


def worker_initial_context() -> dict[str, Any]:
    return dict(_initial)


def explode_on_unpickle() -> None:
    msg = "this value cannot be rebuilt here"
    raise RuntimeError(msg)


class UnpicklesBadly:
    """Pickles fine, fails to unpickle."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (explode_on_unpickle, ())


_queue_handler: logging.Handler | None = None


def worker_queue_logging(log_queue: Any) -> None:
    """Process initializer: this process logs into *log_queue* through ctxlog's handler."""
    global _queue_handler  # noqa: PLW0603 -- one handler per worker process
    handler = ctxlog.QueueHandler(log_queue)
    log = logging.getLogger("ctxlog.test.mp")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    _queue_handler = handler


def worker_log_to_queue(message: str) -> str:
    logging.getLogger("ctxlog.test.mp").info(message)
    return str(ctxlog.get("request_id"))


# --------------------------------------------------------------------------
# Snapshot
# --------------------------------------------------------------------------


class TestSnapshot:
    @pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
    def test_captures_bound_and_registered_values(self) -> None:
        var: contextvars.ContextVar[str] = contextvars.ContextVar("corr")
        ctxlog.register(var, "correlation_id")
        var.set("c-1")
        with ctxlog.bind(request_id="r-1"):
            snap = ctxlog.snapshot()
            with ctxlog.bind(request_id="r-2", later=1):
                pass
        assert dict(snap) == {"request_id": "r-1", "correlation_id": "c-1"}
        assert snap["request_id"] == "r-1"
        assert "later" not in snap
        assert len(snap) == 2
        assert snap == {"request_id": "r-1", "correlation_id": "c-1"}
        assert repr(snap).startswith("ctxlog.Snapshot({")

    def test_hidden_registered_names_are_left_out(self) -> None:
        var: contextvars.ContextVar[str] = contextvars.ContextVar("corr")
        ctxlog.register(var)
        var.set("c-1")
        with ctxlog.unbind("corr"):
            assert dict(ctxlog.snapshot()) == {}
            ctxlog.unregister(var)  # the marker stays in the store; snapshot still hides it
            assert dict(ctxlog.snapshot()) == {}

    def test_is_immutable(self) -> None:
        with ctxlog.bind(a=1):
            snap = ctxlog.snapshot()
        with pytest.raises(TypeError):
            snap["a"] = 2  # type: ignore[index]  # read-only on purpose
        with pytest.raises(AttributeError, match="immutable"):
            snap._data = {}
        with pytest.raises(AttributeError, match="immutable"):
            del snap._data
        assert snap["a"] == 1

    def test_constructor(self) -> None:
        assert dict(Snapshot({"request_id": "r"})) == {"request_id": "r"}
        assert dict(Snapshot()) == {}
        with pytest.raises(ContextError, match="non-empty strings"):
            Snapshot({"": 1})

    def test_run_replaces_the_bound_values_and_leaks_nothing(self) -> None:
        snap = Snapshot({"request_id": "r-1"})

        def body(extra: int, *, more: int) -> dict[str, Any]:
            ctxlog.set(careless=True)  # never reset: must not survive run()
            return {**ctxlog.current(), "extra": extra, "more": more}

        with ctxlog.bind(request_id="outer", other=1):
            assert snap.run(body, 1, more=2) == {
                "request_id": "r-1",
                "careless": True,
                "extra": 1,
                "more": 2,
            }
            assert dict(ctxlog.current()) == {"request_id": "outer", "other": 1}

    def test_run_in_a_plain_thread_logs_the_snapshot(self, captured: Captured) -> None:
        fmt(captured)
        with ctxlog.bind(request_id="r-7"):
            snap = ctxlog.snapshot()
        thread = threading.Thread(target=snap.run, args=(captured.logger.info, "in thread"))
        thread.start()
        thread.join()
        captured.logger.info("caller")
        assert captured.lines() == ["r-7|in thread", "-|caller"]

    def test_apply(self) -> None:
        snap = Snapshot({"request_id": "r-1"})
        with ctxlog.bind(request_id="outer", other=1):
            with snap.apply():
                assert dict(ctxlog.current()) == {"request_id": "r-1"}
                with ctxlog.bind(inner=1):
                    assert dict(ctxlog.current()) == {"request_id": "r-1", "inner": 1}
            assert dict(ctxlog.current()) == {"request_id": "outer", "other": 1}

    def test_apply_async_and_as_decorator(self) -> None:
        snap = Snapshot({"request_id": "r-1"})

        @snap.apply()
        async def handler() -> dict[str, Any]:
            await asyncio.sleep(0)
            return dict(ctxlog.current())

        async def main() -> list[dict[str, Any]]:
            async with snap.apply():
                await asyncio.sleep(0)
                first = dict(ctxlog.current())
            return [first, await handler(), dict(ctxlog.current())]

        assert asyncio.run(main()) == [{"request_id": "r-1"}, {"request_id": "r-1"}, {}]

    def test_pickles(self) -> None:
        with ctxlog.bind(request_id="r-1", n=3, nested={"a": [1, 2]}):
            snap = ctxlog.snapshot()
        again = pickle.loads(pickle.dumps(snap))  # noqa: S301 -- our own pickle
        assert isinstance(again, Snapshot)
        assert again == snap
        assert pickle.loads(pickle.dumps(Snapshot())) == {}  # noqa: S301 -- our own pickle

    def test_unpicklable_value_is_named(self) -> None:
        with ctxlog.bind(request_id="r-1", lock=threading.Lock()):
            snap = ctxlog.snapshot()
        with pytest.raises(ContextError, match=r"'lock' \(lock\) cannot be pickled"):
            pickle.dumps(snap)

    def test_value_that_cannot_be_unpickled(self) -> None:
        with ctxlog.bind(bad=UnpicklesBadly()):
            data = pickle.dumps(ctxlog.snapshot())
        with pytest.raises(ContextError, match="could not be unpickled"):
            pickle.loads(data)  # noqa: S301 -- our own pickle


class TestHeaders:
    def test_round_trip(self) -> None:
        with ctxlog.bind(request_id="r-1", user_id=7, ratio=0.5, ok=True, none=None):
            headers = ctxlog.snapshot().to_headers()
        assert list(headers) == [CONTEXT_HEADER] == [Snapshot.HEADER]
        assert headers[CONTEXT_HEADER].isascii()
        snap = Snapshot.from_headers(headers)
        assert dict(snap) == {
            "request_id": "r-1",
            "user_id": 7,
            "ratio": 0.5,
            "ok": True,
            "none": None,
        }

    def test_empty_snapshot_writes_no_header(self) -> None:
        assert Snapshot().to_headers() == {}
        assert dict(Snapshot.from_headers({})) == {}
        assert dict(Snapshot.from_headers({"Other": "x"})) == {}

    def test_json_rule_for_other_values(self) -> None:
        deep: list[Any] = []
        inner = deep
        for _ in range(MAX_HEADER_DEPTH + 3):
            inner.append([])
            inner = inner[0]
        snap = Snapshot(
            {
                "tuple": (1, "a"),
                "obj": Value("x"),
                "keys": {1: "one"},
                "nan": float("nan"),
                "inf": float("-inf"),
                "set": frozenset({1}),
                "unicode": "héllo ✓",
                "deep": deep,
            }
        )
        back = dict(Snapshot.from_headers(snap.to_headers()))
        assert back["tuple"] == [1, "a"]
        assert back["obj"] == "Value(x)"
        assert back["keys"] == {"1": "one"}
        assert back["nan"] == "nan"
        assert back["inf"] == "-inf"
        assert back["set"] == "frozenset({1})"
        assert back["unicode"] == "héllo ✓"
        depth, node = 0, back["deep"]
        while isinstance(node, list):
            depth, node = depth + 1, node[0]
        assert depth == MAX_HEADER_DEPTH - 1  # the outer object is one level
        assert isinstance(node, str)

    def test_broken_str_is_survived(self) -> None:
        class Broken:
            def __str__(self) -> str:
                raise ValueError

        headers = Snapshot({"b": Broken()}).to_headers()
        assert Snapshot.from_headers(headers)["b"] == "<unrepresentable Broken>"

    def test_to_headers_refuses_what_the_receiver_would(self) -> None:
        with pytest.raises(ContextError, match="control character"):
            Snapshot({"ua": "a\nb"}).to_headers()
        with pytest.raises(ContextError, match="control character"):
            Snapshot({"a\tb": "x"}).to_headers()
        with pytest.raises(ContextError, match="control character"):
            Snapshot({"nested": {"k": ["ok", "\x1b[31m"]}}).to_headers()
        with pytest.raises(ContextError, match=f"over the {MAX_HEADER_SIZE}"):
            Snapshot({"big": "x" * MAX_HEADER_SIZE}).to_headers()

    def test_to_headers_int_too_long_to_print(self) -> None:
        if not hasattr(sys, "set_int_max_str_digits"):  # 3.10 prints any int
            assert Snapshot({"n": 10**5000}).to_headers()
            return
        with pytest.raises(ContextError, match="cannot be written as JSON"):
            Snapshot({"n": 10**5000}).to_headers()

    def test_header_forms(self) -> None:
        text = '{"request_id":"r-1"}'
        expected = {"request_id": "r-1"}
        assert dict(Snapshot.from_headers({"x-ctxlog-context": text})) == expected
        assert dict(Snapshot.from_headers([("X-CTXLOG-CONTEXT", text)])) == expected
        assert dict(Snapshot.from_headers([(b"x-ctxlog-context", text.encode())])) == expected
        assert dict(Snapshot.from_headers({b"X-Ctxlog-Context": text.encode()})) == expected

    def test_over_a_real_http_hop(self) -> None:
        import http.server  # noqa: PLC0415 -- only this test needs a server
        import urllib.request  # noqa: PLC0415

        seen: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with Snapshot.from_headers(self.headers).apply():
                    seen.append(dict(ctxlog.current()))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- stdlib name
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            with ctxlog.bind(request_id="r-http", user_id=3):
                headers = ctxlog.snapshot().to_headers()
            url = f"http://127.0.0.1:{server.server_address[1]}/"
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=10
            ) as response:
                assert response.status == 204
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
        assert seen == [{"request_id": "r-http", "user_id": 3}]

    @pytest.mark.parametrize(
        ("value", "why"),
        [
            ("not json", "not valid JSON"),
            ("[1, 2]", "not a JSON object"),
            ('"text"', "not a JSON object"),
            ("12", "not a JSON object"),
            ("", "not valid JSON"),
            ('{"": 1}', "empty key"),
            ('{"a": "x\\ny"}', "control character"),
            ('{"a\\u0000": 1}', "control character"),
            ('{"a": ["\\u009b"]}', "control character"),
            ('{"a": "\\ud800"}', "lone surrogate"),
            ('{"a": "é"}', "not ASCII"),
            ('{"a": NaN}', None),
            ('{"a": 1' + "0" * 5000 + "}", "not valid JSON"),
            ("[" * 1_000_000, "longer than"),
            ("x" * (MAX_HEADER_SIZE + 1), "longer than"),
            ("[" * (MAX_HEADER_DEPTH + 1) + "]" * (MAX_HEADER_DEPTH + 1), "deeper"),
            ('{"a":' + "[" * MAX_HEADER_DEPTH + "]" * MAX_HEADER_DEPTH + "}", "deeper"),
        ],
    )
    def test_hostile_values_raise_context_error(self, value: str, why: str | None) -> None:
        started = time.perf_counter()
        if why is None:  # accepted by Python's json; a float, harmless
            assert Snapshot.from_headers({CONTEXT_HEADER: value})["a"] != 0
            return
        with pytest.raises(ContextError, match=why):
            Snapshot.from_headers({CONTEXT_HEADER: value})
        with pytest.raises(ContextError, match=why):
            Snapshot.from_headers([(CONTEXT_HEADER.encode(), value.encode("utf-8", "replace"))])
        assert time.perf_counter() - started < 5  # never hangs (a generous bound)

    def test_depth_within_the_cap_and_brackets_inside_strings(self) -> None:
        nested = "[" * (MAX_HEADER_DEPTH - 1) + "]" * (MAX_HEADER_DEPTH - 1)
        assert Snapshot.from_headers({CONTEXT_HEADER: '{"a":' + nested + "}"})["a"] is not None
        brackets = '{"a": "' + "[{" * 50 + '\\"[{"}'
        assert Snapshot.from_headers({CONTEXT_HEADER: brackets})["a"].startswith("[{")

    def test_duplicate_header_is_refused(self) -> None:
        pairs = [(CONTEXT_HEADER, '{"a":1}'), ("x-ctxlog-context", '{"a":2}')]
        with pytest.raises(ContextError, match="more than once"):
            Snapshot.from_headers(pairs)

    def test_malformed_containers(self) -> None:
        with pytest.raises(ContextError, match="mapping or"):
            Snapshot.from_headers(["x-ctxlog-context"])  # type: ignore[list-item]  # misuse under test
        with pytest.raises(ContextError, match="str or bytes"):
            Snapshot.from_headers({CONTEXT_HEADER: 12})

    @given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
    def test_any_text_gives_a_snapshot_or_context_error(self, value: str) -> None:
        try:
            snap = Snapshot.from_headers({CONTEXT_HEADER: value})
        except ContextError:
            return
        assert all(isinstance(key, str) and key for key in snap)

    @given(
        st.dictionaries(
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1),
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(st.characters(blacklist_categories=("Cc", "Cs"))),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(
                        st.text(max_size=5).filter(str.isprintable), inner, max_size=3
                    )
                ),
                max_leaves=8,
            ),
            max_size=5,
        )
    )
    def test_round_trip_property(self, values: dict[str, Any]) -> None:
        snap = Snapshot(values)
        if len(json.dumps(values)) > MAX_HEADER_SIZE // 2:  # escapes may double it
            return
        assert dict(Snapshot.from_headers(snap.to_headers())) == values


# --------------------------------------------------------------------------
# wrap
# --------------------------------------------------------------------------


class TestWrap:
    def test_runs_in_the_context_of_wrap_time(self, captured: Captured) -> None:
        fmt(captured)
        with ctxlog.bind(request_id="r-1"):
            log = ctxlog.wrap(captured.logger.info)
        with ctxlog.bind(request_id="r-2"):
            log("called later")
        log("called outside")
        assert captured.lines() == ["r-1|called later", "r-1|called outside"]

    def test_each_call_gets_a_fresh_copy(self) -> None:
        counter = contextvars.ContextVar("counter", default=0)

        def bump() -> tuple[int, Any]:
            seen = (counter.get(), ctxlog.get("careless"))
            counter.set(counter.get() + 1)
            ctxlog.set(careless=True)
            return seen

        wrapped = ctxlog.wrap(bump)
        assert [wrapped(), wrapped(), wrapped()] == [(0, None)] * 3

    def test_one_wrapped_function_from_many_threads_at_once(self, captured: Captured) -> None:
        fmt(captured, "%(request_id)s|%(worker)s|%(message)s")
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            barrier.wait(timeout=10)
            with ctxlog.bind(worker=n):
                time.sleep(0.001)
                captured.logger.info("step")

        with ctxlog.bind(request_id="r-shared"):
            wrapped = ctxlog.wrap(work)

        def thread_main(n: int) -> None:
            try:
                for _ in range(20):
                    wrapped(n)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=thread_main, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        lines = captured.lines()
        assert len(lines) == 160
        assert sorted(lines) == sorted(f"r-shared|{n}|step" for n in range(8) for _ in range(20))

    def test_keeps_name_and_signature(self) -> None:
        def documented(a: int, b: str = "x") -> str:
            """Doc."""
            return f"{a}{b}"

        wrapped = ctxlog.wrap(documented)
        assert wrapped.__name__ == "documented"
        assert wrapped.__doc__ == "Doc."
        assert wrapped(1, b="y") == "1y"

    def test_async_function(self) -> None:
        async def handler(tag: str) -> list[Any]:
            seen = [ctxlog.get("request_id")]
            ctxlog.set(careless=tag)  # stays inside this call's copy
            await asyncio.sleep(0.001)
            seen.append(ctxlog.get("careless"))
            return seen

        with ctxlog.bind(request_id="r-1"):
            wrapped = ctxlog.wrap(handler)

        async def main() -> list[Any]:
            async with ctxlog.bind(request_id="caller"):
                results = await asyncio.gather(wrapped("a"), wrapped("b"))
                return [*results, ctxlog.get("request_id"), ctxlog.get("careless")]

        assert asyncio.run(main()) == [["r-1", "a"], ["r-1", "b"], "caller", None]

    def test_generator_functions(self) -> None:
        def numbers() -> Iterator[Any]:
            with ctxlog.bind(step="inside"):
                yield ctxlog.get("request_id"), ctxlog.get("step")
                yield ctxlog.get("request_id"), ctxlog.get("step")

        async def anumbers() -> AsyncIterator[Any]:
            async with ctxlog.bind(step="inside"):
                yield ctxlog.get("request_id"), ctxlog.get("step")
                await asyncio.sleep(0)
                yield ctxlog.get("request_id"), ctxlog.get("step")

        with ctxlog.bind(request_id="r-1"):
            gen_fn = ctxlog.wrap(numbers)
            agen_fn = ctxlog.wrap(anumbers)
        gen = gen_fn()
        assert next(gen) == ("r-1", "inside")
        assert ctxlog.get("step") is None
        assert list(gen) == [("r-1", "inside")]

        async def main() -> list[Any]:
            return [item async for item in agen_fn()] + [ctxlog.get("step")]

        assert asyncio.run(main()) == [("r-1", "inside"), ("r-1", "inside"), None]


# --------------------------------------------------------------------------
# Thread
# --------------------------------------------------------------------------


class TestThread:
    def test_copies_the_context_at_start(self, captured: Captured) -> None:
        fmt(captured)
        with ctxlog.bind(request_id="at-init"):
            thread = ctxlog.Thread(target=captured.logger.info, args=("in thread",))
        with ctxlog.bind(request_id="at-start"):
            thread.start()
        thread.join()
        assert captured.lines() == ["at-start|in thread"]

    def test_plain_thread_loses_the_context(self, captured: Captured) -> None:
        # What ctxlog.Thread fixes (unless Python 3.14+ runs with thread inheritance on).
        fmt(captured)
        with ctxlog.bind(request_id="r-1"):
            thread = threading.Thread(target=captured.logger.info, args=("plain",))
            thread.start()
        thread.join()
        assert captured.lines() == ["r-1|plain" if THREADS_INHERIT_CONTEXT else "-|plain"]

    def test_subclass_overriding_run(self) -> None:
        class Worker(ctxlog.Thread):
            seen: ClassVar[dict[str, Any]] = {}

            def run(self) -> None:
                Worker.seen = dict(ctxlog.current())

        with ctxlog.bind(request_id="r-sub"):
            worker = Worker()
            worker.start()
        worker.join()
        assert Worker.seen == {"request_id": "r-sub"}
        assert "run" not in vars(worker)  # the stand-in is gone once the thread ran

    def test_threads_and_caller_are_isolated(self) -> None:
        results: dict[int, list[Any]] = {}
        barrier = threading.Barrier(4)

        def work(n: int) -> None:
            before = ctxlog.get("request_id")
            barrier.wait(timeout=10)
            with ctxlog.bind(request_id=f"own-{n}"):
                barrier.wait(timeout=10)
                inside = ctxlog.get("request_id")
            ctxlog.set(careless=n)
            results[n] = [before, inside]

        with ctxlog.bind(request_id="parent"):
            threads = [ctxlog.Thread(target=work, args=(n,)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert dict(ctxlog.current()) == {"request_id": "parent"}
        assert results == {n: ["parent", f"own-{n}"] for n in range(4)}

    def test_explicit_context(self) -> None:
        ctx = contextvars.copy_context()
        ctx.run(ctxlog.set, request_id="given")
        seen: list[Any] = []
        with ctxlog.bind(request_id="caller"):
            thread = ctxlog.Thread(
                target=lambda: seen.append(ctxlog.get("request_id")), context=ctx
            )
            thread.start()
        thread.join()
        assert seen == ["given"]

    def test_start_twice(self) -> None:
        thread = ctxlog.Thread(target=lambda: None, daemon=True)
        thread.start()
        with pytest.raises(RuntimeError, match="only be started once"):
            thread.start()
        thread.join()
        assert thread.daemon

    def test_failed_start_leaves_no_stand_in(self) -> None:
        thread = ctxlog.Thread(target=lambda: None)
        thread._started.set()  # type: ignore[attr-defined]  # makes threading refuse start()
        with pytest.raises(RuntimeError):
            thread.start()
        assert "run" not in vars(thread)

    def test_stand_in_runs_once(self) -> None:
        from ctxlog._handoff import _RunIn  # noqa: PLC0415 -- the private stand-in

        thread = ctxlog.Thread()
        stand_in = _RunIn(thread, contextvars.copy_context(), thread.run)
        stand_in()
        with pytest.raises(RuntimeError, match="already handed over"):
            stand_in()

    @pytest.mark.needs_python((3, 14))
    def test_runs_in_the_context_threading_enters(self) -> None:
        """On 3.14+ the copy is threading.Thread's own context=, entered by threading."""
        seen: list[object] = []

        def target() -> None:
            native = vars(threading.current_thread())["_context"]
            seen.append(ctxlog.get("request_id"))
            with pytest.raises(RuntimeError, match="already entered"):
                native.run(ctxlog.get, "request_id")
            seen.append("entered")

        with ctxlog.bind(request_id="r-1"):
            thread = ctxlog.Thread(target=target)
            thread.start()
        thread.join()
        assert seen == ["r-1", "entered"]

    def test_finished_thread_keeps_no_value(self) -> None:
        value = Value("request")
        ref = weakref.ref(value)
        with ctxlog.bind(request_id=value):
            thread = ctxlog.Thread(target=lambda: ctxlog.get("request_id"))
            thread.start()
        thread.join()
        del value
        assert collected(ref)
        assert not thread.is_alive()


# --------------------------------------------------------------------------
# ThreadPoolExecutor
# --------------------------------------------------------------------------


class TestThreadPoolExecutor:
    def test_submit_and_map_carry_the_submitters_context(self, captured: Captured) -> None:
        fmt(captured)
        with ctxlog.ThreadPoolExecutor(max_workers=3) as pool:
            futures = []
            for n in range(30):
                with ctxlog.bind(request_id=f"r-{n}"):
                    futures.append(pool.submit(captured.logger.info, "submitted %d", n))
            for future in futures:
                future.result(timeout=10)
            with ctxlog.bind(request_id="mapped"):
                list(pool.map(captured.logger.info, ["map 1", "map 2"], timeout=10))
        lines = captured.lines()
        assert sorted(lines[:30]) == sorted(f"r-{n}|submitted {n}" for n in range(30))
        assert sorted(lines[30:]) == ["mapped|map 1", "mapped|map 2"]

    def test_a_worker_never_keeps_a_tasks_context(self) -> None:
        with ctxlog.ThreadPoolExecutor(max_workers=1) as pool:
            with ctxlog.bind(request_id="first"):
                first = pool.submit(worker_binds_and_leaves_it).result(timeout=10)
            second = pool.submit(worker_context).result(timeout=10)
        assert first == {"request_id": "first"}
        assert second == {}

    def test_worker_threads_start_empty(self) -> None:
        with ctxlog.bind(request_id="submitter"):
            pool = ctxlog.ThreadPoolExecutor(max_workers=1, initializer=worker_init)
            with pool:
                assert pool.submit(worker_context).result(timeout=10) == {"request_id": "submitter"}
        assert dict(_initial) == {"initialized": True}

    def test_workers_keep_no_reference_to_finished_values(self) -> None:
        values = [Value(f"r-{n}") for n in range(5)]
        refs = [weakref.ref(v) for v in values]
        with ctxlog.ThreadPoolExecutor(max_workers=2) as pool:
            for value in values:
                with ctxlog.bind(request_id=value):
                    pool.submit(ctxlog.get, "request_id").result(timeout=10)
            del values, value
            assert all(collected(ref) for ref in refs)  # the workers are still alive here

    def test_as_the_event_loops_default_executor(self, captured: Captured) -> None:
        fmt(captured)

        async def request(n: int) -> None:
            async with ctxlog.bind(request_id=f"r-{n}"):
                loop = asyncio.get_running_loop()
                await asyncio.sleep(0.001 * (n % 3))
                await loop.run_in_executor(None, captured.logger.info, f"executor {n}")
                await asyncio.to_thread(captured.logger.info, f"to_thread {n}")

        async def main() -> None:
            asyncio.get_running_loop().set_default_executor(ctxlog.ThreadPoolExecutor(4))
            await asyncio.gather(*(request(n) for n in range(40)))

        asyncio.run(main())
        lines = captured.lines()
        assert len(lines) == 80
        for line in lines:
            rid, message = line.split("|")
            assert rid == f"r-{message.split()[1]}", line

    def test_plain_run_in_executor_loses_the_context(self, captured: Captured) -> None:
        # The failure the recipe above fixes: run_in_executor copies nothing.
        fmt(captured)

        async def main() -> None:
            async with ctxlog.bind(request_id="r-1"):
                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    await asyncio.get_running_loop().run_in_executor(
                        pool, captured.logger.info, "plain"
                    )

        asyncio.run(main())
        assert captured.lines() == ["r-1|plain" if THREADS_INHERIT_CONTEXT else "-|plain"]


# --------------------------------------------------------------------------
# ProcessPoolExecutor
# --------------------------------------------------------------------------


class TestProcessPoolExecutor:
    @pytest.mark.parametrize("method", START_METHODS)
    @pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
    def test_submit_and_map_carry_the_context(self, method: str) -> None:
        var: contextvars.ContextVar[str] = contextvars.ContextVar("corr")
        ctxlog.register(var, "correlation_id")
        var.set("c-1")
        mp = multiprocessing.get_context(method)
        with ctxlog.ProcessPoolExecutor(max_workers=2, mp_context=mp) as pool:
            with ctxlog.bind(request_id="r-sub", user_id=5):
                submitted = pool.submit(worker_log_lines, "from submit")
            with ctxlog.bind(request_id="r-map"):
                mapped = list(pool.map(worker_log_lines, ["map a", "map b", "map c"], chunksize=2))
            lines = submitted.result(timeout=60) + [line for chunk in mapped for line in chunk]
        records = [json.loads(line) for line in lines]
        assert [(r["message"], r["request_id"]) for r in records] == [
            ("from submit", "r-sub"),
            ("map a", "r-map"),
            ("map b", "r-map"),
            ("map c", "r-map"),
        ]
        assert records[0]["user_id"] == 5
        assert all(r["correlation_id"] == "c-1" for r in records)

    @pytest.mark.parametrize("method", START_METHODS)
    def test_a_worker_never_keeps_a_tasks_context(self, method: str) -> None:
        mp = multiprocessing.get_context(method)
        with ctxlog.bind(request_id="first-submitter"):
            pool = ctxlog.ProcessPoolExecutor(1, mp_context=mp, initializer=worker_init)
        with pool:
            with ctxlog.bind(request_id="first"):
                first = pool.submit(worker_binds_and_leaves_it).result(timeout=60)
            second = pool.submit(worker_context).result(timeout=60)
            initial = pool.submit(worker_initial_context).result(timeout=60)
            value = Value("submitted")
            ref = weakref.ref(value)
            with ctxlog.bind(request_id=value):
                assert pool.submit(worker_context).result(timeout=60)["request_id"].name == (
                    "submitted"
                )
            del value
            assert collected(ref)  # the submitting side keeps nothing either
        assert first == {"request_id": "first"}
        assert second == {}
        # A forked worker does not start with the submitter's values either.
        assert initial == {"initialized": True}

    def test_unpicklable_value_raises_in_submit(self) -> None:
        with (
            ctxlog.ProcessPoolExecutor(1) as pool,
            ctxlog.bind(lock=threading.Lock()),
            pytest.raises(ContextError, match=r"'lock' \(lock\) cannot be pickled"),
        ):
            pool.submit(worker_context)

    @pytest.mark.parametrize("method", START_METHODS)
    def test_unpicklable_value_as_str(self, method: str) -> None:
        mp = multiprocessing.get_context(method)
        lock = threading.Lock()
        with (
            ctxlog.ProcessPoolExecutor(1, mp_context=mp, on_unpicklable="str") as pool,
            ctxlog.bind(request_id="r-1", lock=lock),
        ):
            seen = pool.submit(worker_context).result(timeout=60)
        assert seen == {"request_id": "r-1", "lock": str(lock)}

    def test_invalid_policy(self) -> None:
        with pytest.raises(ContextError, match="on_unpicklable"):
            ctxlog.ProcessPoolExecutor(1, on_unpicklable="drop")  # type: ignore[arg-type]  # misuse under test

    @pytest.mark.parametrize("method", START_METHODS)
    def test_value_that_fails_to_unpickle_fails_the_call_not_the_pool(self, method: str) -> None:
        mp = multiprocessing.get_context(method)
        with ctxlog.ProcessPoolExecutor(1, mp_context=mp) as pool:
            with ctxlog.bind(bad=UnpicklesBadly()):
                future = pool.submit(worker_context)
            with pytest.raises(ContextError, match="could not be unpickled"):
                future.result(timeout=60)
            with ctxlog.bind(request_id="after"):
                assert pool.submit(worker_context).result(timeout=60) == {"request_id": "after"}


# --------------------------------------------------------------------------
# queue handlers
# --------------------------------------------------------------------------


def json_handler(stream: io.StringIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    return handler


class TestQueueHandler:
    def test_thread_queue_recipe(self) -> None:
        stream = io.StringIO()
        log_queue: queue.Queue[logging.LogRecord] = queue.Queue()
        handler = ctxlog.QueueHandler(log_queue)
        assert handler.picklable is False
        listener = logging.handlers.QueueListener(log_queue, json_handler(stream))
        log = logging.getLogger("ctxlog.test.queue")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.addHandler(handler)
        listener.start()
        try:

            def work(n: int) -> None:
                with ctxlog.bind(request_id=f"r-{n}"):
                    for step in range(5):
                        log.info("n=%d step=%d", n, step)

            threads = [ctxlog.Thread(target=work, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            listener.stop()
            log.removeHandler(handler)
        records = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert len(records) == 40
        for record in records:
            assert record["request_id"] == "r-" + record["message"].split()[0][2:]

    def test_plain_queue_handler_with_the_filter_on_it(self) -> None:
        # The recipe without the helper: the filter on the QueueHandler runs on the
        # logging thread.  On the listener's handler it would see the listener's context.
        stream = io.StringIO()
        wrong_stream = io.StringIO()
        log_queue: queue.Queue[logging.LogRecord] = queue.Queue()
        handler = logging.handlers.QueueHandler(log_queue)
        handler.addFilter(ContextFilter())
        wrong = json_handler(wrong_stream)
        wrong.addFilter(ContextFilter(nest_under="seen_by_listener"))
        listener = logging.handlers.QueueListener(log_queue, json_handler(stream), wrong)
        log = logging.getLogger("ctxlog.test.queue.plain")
        log.propagate = False
        log.addHandler(handler)
        listener.start()
        try:
            with ctxlog.bind(request_id="r-1"):
                log.warning("hello")
        finally:
            listener.stop()
            log.removeHandler(handler)
        assert json.loads(stream.getvalue())["request_id"] == "r-1"
        assert json.loads(wrong_stream.getvalue())["seen_by_listener"] == {}

    def test_unpicklable_value_does_not_make_the_record_vanish(self) -> None:
        stream = io.StringIO()
        mp = multiprocessing.get_context("spawn")
        log_queue = mp.Queue()
        handler = ctxlog.QueueHandler(log_queue, nest_under="context")
        assert handler.picklable is True
        listener = logging.handlers.QueueListener(log_queue, json_handler(stream))
        log = logging.getLogger("ctxlog.test.queue.mp")
        log.propagate = False
        log.addHandler(handler)
        listener.start()
        lock = threading.Lock()
        try:
            with ctxlog.bind(request_id="r-1", lock=lock):
                log.warning("with a lock bound", extra={"conn": lock})
            log.warning("after")
        finally:
            listener.stop()
            log.removeHandler(handler)
            log_queue.close()
            log_queue.join_thread()
        first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert first["message"] == "with a lock bound"
        assert first["context"] == {"request_id": "r-1", "lock": str(lock)}
        assert first["conn"] == str(lock)
        assert second["message"] == "after"

    def test_picklable_can_be_forced(self) -> None:
        assert ctxlog.QueueHandler(queue.SimpleQueue(), picklable=True).picklable is True
        assert (
            ctxlog.QueueHandler(
                multiprocessing.get_context("spawn").SimpleQueue(), picklable=False
            ).picklable
            is False
        )

    def test_prepare_keeps_the_original_record_intact(self) -> None:
        handler = ctxlog.QueueHandler(queue.SimpleQueue(), picklable=True)
        lock = threading.Lock()
        record = logging.LogRecord("n", logging.INFO, __file__, 1, "m %s", ("a",), None)
        record.__dict__["lock"] = lock
        prepared = handler.prepare(record)
        assert prepared.__dict__["lock"] == str(lock)
        assert record.__dict__["lock"] is lock
        assert prepared.msg == "m a"

    def test_from_dict_config(self) -> None:
        stream = io.StringIO()
        handlers: dict[str, Any] = {
            "out": {"class": "logging.StreamHandler", "stream": stream, "formatter": "plain"}
        }
        if sys.version_info >= (3, 12):  # dictConfig builds the listener (handler.listener)
            handlers["q"] = {"class": "ctxlog.QueueHandler", "handlers": ["out"]}
        else:
            log_queue: queue.Queue[logging.LogRecord] = queue.Queue()
            handlers["q"] = {"class": "ctxlog.QueueHandler", "queue": log_queue}
        # Python 3.12 passes only the queue to a QueueHandler class it builds, so
        # filter options go in a filter of their own.
        handlers["q"]["filters"] = ["defaults"]
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "filters": {
                    "defaults": {"()": "ctxlog.ContextFilter", "defaults": {"request_id": "-"}}
                },
                "formatters": {"plain": {"format": "[%(request_id)s] %(message)s"}},
                "handlers": handlers,
                "loggers": {"ctxlog.test.dictconfig": {"handlers": ["q"], "propagate": False}},
            }
        )
        log = logging.getLogger("ctxlog.test.dictconfig")
        (handler,) = log.handlers
        assert isinstance(handler, ctxlog.QueueHandler)
        listener = getattr(handler, "listener", None)
        if listener is None:  # before 3.12 the listener is the application's own
            out = logging.StreamHandler(stream)
            out.setFormatter(logging.Formatter("[%(request_id)s] %(message)s"))
            listener = logging.handlers.QueueListener(handler.queue, out)
        listener.start()
        try:
            with ctxlog.bind(request_id="r-1"):
                log.warning("configured")
            log.warning("outside")
        finally:
            listener.stop()
            log.removeHandler(handler)
            handler.close()
        assert stream.getvalue().splitlines() == ["[r-1] configured", "[-] outside"]

    @pytest.mark.parametrize("method", START_METHODS)
    def test_across_processes(self, method: str) -> None:
        stream = io.StringIO()
        mp = multiprocessing.get_context(method)
        log_queue = mp.Queue()
        listener = logging.handlers.QueueListener(log_queue, json_handler(stream))
        listener.start()
        try:
            with ctxlog.ProcessPoolExecutor(
                2, mp_context=mp, initializer=worker_queue_logging, initargs=(log_queue,)
            ) as pool:
                futures = []
                for n in range(12):
                    with ctxlog.bind(request_id=f"r-{n}"):
                        futures.append(pool.submit(worker_log_to_queue, f"n={n}"))
                assert [f.result(timeout=60) for f in futures] == [f"r-{n}" for n in range(12)]
        finally:
            listener.stop()
            log_queue.close()
            log_queue.join_thread()
        records = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert len(records) == 12
        for record in records:
            assert record["request_id"] == "r-" + record["message"][2:]


class TestEdges:
    @pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u202e", "\u2066", "\x85"])
    def test_from_headers_refuses_separators_and_bidi_controls(self, char: str) -> None:
        text = json.dumps({"note": f"a{char}b"}, ensure_ascii=True)
        with pytest.raises(ContextError, match="control character"):
            Snapshot.from_headers({CONTEXT_HEADER: text})
        with pytest.raises(ContextError, match="control character"):
            Snapshot({"note": f"a{char}b"}).to_headers()

    @pytest.mark.parametrize("headers", [None, 5, "X-Ctxlog-Context: {}", b"raw"])
    def test_from_headers_of_no_headers(self, headers: Any) -> None:
        with pytest.raises(ContextError, match="takes a mapping or"):
            Snapshot.from_headers(headers)

    def test_copies_of_a_snapshot_are_itself(self) -> None:
        with ctxlog.bind(lock=threading.Lock()):
            snap = ctxlog.snapshot()
        assert copy.copy(snap) is snap
        assert copy.deepcopy(snap) is snap

    def test_wrap_and_thread_check_their_arguments(self) -> None:
        with pytest.raises(ContextError, match="wrap\\(\\) takes a function"):
            ctxlog.wrap(42)  # type: ignore[arg-type]  # the misuse under test
        with pytest.raises(ContextError, match=r"takes a contextvars\.Context, not str"):
            ctxlog.Thread(target=print, context="x")  # type: ignore[arg-type]  # same


# -- the header codec's fast paths agree with the general one ------------------------

_any_text = st.text(st.characters(exclude_categories=()), max_size=12)
_plain_values = st.one_of(_any_text, st.integers(), st.booleans(), st.none())


@given(st.dictionaries(_any_text.filter(bool), _plain_values, min_size=1, max_size=5))
def test_to_headers_fast_path_agrees_with_the_general_one(values: dict[str, Any]) -> None:

    fast = _plain_json(values)
    try:
        general: str | None = _general_json(values)
    except ctxlog.ContextError:
        general = None
    if fast is not None:
        assert fast == general
    elif general is not None:
        # Not taken by the fast path, yet writable: only escapes that are safe.
        assert ctxlog.Snapshot.from_headers({"x-ctxlog-context": general}) == values


@given(st.dictionaries(_any_text.filter(bool), _plain_values, min_size=1, max_size=5))
def test_from_headers_refuses_exactly_what_the_full_scan_refuses(values: dict[str, Any]) -> None:

    text = json.dumps(values, ensure_ascii=True)
    unsafe = _find_unsafe(values) is not None
    try:
        got = ctxlog.Snapshot.from_headers({"X-Ctxlog-Context": text})
    except ctxlog.ContextError:
        assert unsafe
    else:
        assert not unsafe
        assert dict(got) == values
