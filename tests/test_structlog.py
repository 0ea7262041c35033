"""ctxlog.structlog: the processor, the drop-in for structlog.contextvars, one context
for structlog and stdlib, and the config files that put both in one JSON stream."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import io
import json
import logging
import logging.handlers
import queue
import re
import subprocess
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.contextvars as sl_contextvars
from hypothesis import given
from hypothesis import strategies as st

import ctxlog
from ctxlog import structlog as cs
from tests.conftest import Captured

CONFIG = Path(__file__).resolve().parent.parent / "config"

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def slog() -> Iterator[Lines]:
    """structlog writing JSON lines through ``merge_context`` into memory."""
    sio = io.StringIO()
    structlog.configure(
        processors=[cs.merge_context, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(sio),
        cache_logger_on_first_use=False,
    )
    yield lambda: [json.loads(line) for line in sio.getvalue().splitlines()]
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _migrated_chain() -> Iterator[None]:
    """structlog's chain as a migrated application has it: ctxlog's merge in it.

    Binding through the drop-in under a chain that merges structlog's own
    variables only warns (``UnmergedContextWarning``); the tests of that
    warning, and of the default chain, set up their own chain.
    """
    structlog.configure(processors=[cs.merge_context, *structlog.get_config()["processors"]])
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _clear_structlog_contextvars() -> Iterator[None]:
    """Values bound with the real structlog.contextvars never outlive a test."""
    yield
    sl_contextvars.clear_contextvars()


# --------------------------------------------------------------------------
# the processor
# --------------------------------------------------------------------------


def test_processor_adds_the_bound_context(slog: Lines) -> None:
    log = structlog.get_logger()
    log.info("outside")
    with ctxlog.bind(request_id="r-1", user_id=7):
        log.info("inside", order=12)
    assert slog() == [
        {"event": "outside"},
        {"order": 12, "event": "inside", "request_id": "r-1", "user_id": 7},
    ]


def test_event_keys_win_and_keep_their_place(slog: Lines) -> None:
    log = structlog.get_logger().bind(user_id="from-logger")
    with ctxlog.bind(request_id="r-1", user_id="from-context", tenant="acme"):
        log.info("call", request_id="from-call")
    (line,) = slog()
    assert line == {
        "user_id": "from-logger",
        "request_id": "from-call",
        "event": "call",
        "tenant": "acme",
    }
    # structlog's order: the event's own keys first, then the context.
    assert list(line) == ["user_id", "request_id", "event", "tenant"]


def test_processor_updates_the_event_dict_in_place() -> None:
    event_dict: dict[str, Any] = {"event": "x", "a": 1}
    with ctxlog.bind(a=0, b=2):
        out = cs.merge_context(None, "info", event_dict)
    assert out is event_dict
    assert event_dict == {"event": "x", "a": 1, "b": 2}
    assert cs.merge_context(None, "info", {"event": "y"}) == {"event": "y"}
    assert cs.merge_contextvars is cs.merge_context


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_processor_merges_registered_contextvars(slog: Lines) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")
    ctxlog.register(request_id)
    ctxlog.register(tenant, "org")
    log = structlog.get_logger()
    log.info("unset")
    token = request_id.set("r-9")
    log.info("set")
    with ctxlog.bind(request_id="bound"):
        log.info("bound wins")
    with ctxlog.unbind("org"):
        log.info("hidden")
    assert cs.merge_context(fields=["org"])(None, "info", {}) == {"org": "none"}
    request_id.reset(token)
    assert slog() == [
        {"event": "unset", "org": "none"},
        {"event": "set", "request_id": "r-9", "org": "none"},
        {"event": "bound wins", "request_id": "bound", "org": "none"},
        {"event": "hidden", "request_id": "r-9"},
    ]


def test_processor_options_fields_and_defaults() -> None:
    assert cs.merge_context() is cs.merge_context
    only = cs.merge_context(fields=["request_id", "user_id"], defaults={"request_id": "-"})
    filled = cs.merge_context(defaults={"request_id": "-", "tenant": "none"})
    assert only(None, "info", {"event": "x"}) == {"event": "x", "request_id": "-"}
    with ctxlog.bind(request_id="r-1", user_id=3, secret="s"):
        assert only(None, "info", {"event": "x"}) == {
            "event": "x",
            "request_id": "r-1",
            "user_id": 3,
        }
        assert only(None, "info", {"event": "x", "user_id": 4}) == {
            "event": "x",
            "user_id": 4,
            "request_id": "r-1",
        }
        assert filled(None, "info", {"event": "x"}) == {
            "event": "x",
            "request_id": "r-1",
            "user_id": 3,
            "secret": "s",
            "tenant": "none",
        }
    # A default applies to its key also outside the allow-list: the field is
    # always there.
    narrow = cs.merge_context(fields=["user_id"], defaults={"request_id": "-"})
    assert narrow(None, "info", {"event": "x"}) == {"event": "x", "request_id": "-"}
    with ctxlog.bind(user_id=5):
        # The second call reuses what the first prepared for this context.
        assert narrow(None, "info", {"event": "x"}) == narrow(None, "info", {"event": "x"})
    assert "fields=('user_id',)" in repr(narrow)


@pytest.mark.parametrize(
    "options",
    [{"fields": "request_id"}, {"fields": [""]}, {"defaults": {"": 1}}, {"fields": [3]}],
)
def test_processor_rejects_bad_options(options: dict[str, Any]) -> None:
    with pytest.raises(ctxlog.ContextError):
        cs.merge_context(**options)


def test_processor_ignores_unrelated_contextvars(slog: Lines) -> None:
    # 1,000 unrelated variables set in the context change nothing (and cost
    # nothing: see benchmarks/bench_structlog.py).
    unrelated: list[contextvars.ContextVar[int]] = [
        contextvars.ContextVar(f"unrelated_{i}") for i in range(1_000)
    ]

    def run() -> None:
        for i, var in enumerate(unrelated):
            var.set(i)
        with ctxlog.bind(request_id="r-1"):
            structlog.get_logger().info("x")

    contextvars.copy_context().run(run)
    assert slog() == [{"event": "x", "request_id": "r-1"}]


def test_asyncio_tasks_each_log_their_own_context(slog: Lines) -> None:
    log = structlog.get_logger()

    async def request(n: int) -> None:
        if n % 2:
            cs.bind_contextvars(request_id=f"r-{n}")
        else:
            ctxlog.set(request_id=f"r-{n}")
        for step in range(3):
            await asyncio.sleep(0)
            log.info("step", n=n, step=step)

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(200)))

    asyncio.run(main())
    lines = slog()
    assert len(lines) == 600
    for line in lines:
        assert line["request_id"] == f"r-{line['n']}"
    assert cs.get_contextvars() == {}


def test_threads_each_log_their_own_context(slog: Lines) -> None:
    log = structlog.get_logger()
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with cs.bound_contextvars(request_id=f"t-{n}"):
                barrier.wait(timeout=10)
                for step in range(20):
                    log.info("step", n=n, step=step)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    lines = slog()
    assert len(lines) == 16 * 20
    assert all(line["request_id"] == f"t-{line['n']}" for line in lines)


# --------------------------------------------------------------------------
# one context for structlog and stdlib
# --------------------------------------------------------------------------


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_one_context_for_both_stacks(slog: Lines, captured: Captured) -> None:
    captured.handler.addFilter(ctxlog.ContextFilter())
    captured.handler.setFormatter(logging.Formatter("%(request_id)s %(user_id)s %(message)s"))
    log = structlog.get_logger()
    cs.bind_contextvars(request_id="r-1")
    with ctxlog.bind(user_id="u-2"):
        log.info("structlog")
        captured.logger.info("stdlib")
        assert ctxlog.get("request_id") == "r-1"
        assert cs.get_contextvars() == {"request_id": "r-1", "user_id": "u-2"}
    assert slog() == [{"event": "structlog", "request_id": "r-1", "user_id": "u-2"}]
    assert captured.lines() == ["r-1 u-2 stdlib"]


# --------------------------------------------------------------------------
# the drop-in API
# --------------------------------------------------------------------------


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_bind_and_reset_restore_each_key() -> None:
    cs.bind_contextvars(a=1, keep="k")
    tokens = cs.bind_contextvars(a=2, b=3)
    assert set(tokens) == {"a", "b"}
    assert cs.get_contextvars() == {"a": 2, "b": 3, "keep": "k"}
    cs.reset_contextvars(**tokens)
    assert cs.get_contextvars() == {"a": 1, "keep": "k"}
    assert cs.bind_contextvars() == {}
    cs.reset_contextvars()


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_reset_keeps_what_was_bound_since() -> None:
    tokens = cs.bind_contextvars(a=1, b=2)
    cs.bind_contextvars(c=3)
    cs.reset_contextvars(a=tokens["a"])
    assert cs.get_contextvars() == {"b": 2, "c": 3}
    cs.reset_contextvars(b=tokens["b"])
    assert cs.get_contextvars() == {"c": 3}


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_reset_after_clear_brings_back_the_old_values() -> None:
    cs.bind_contextvars(a=1)
    tokens = cs.bind_contextvars(a=2, b=2)
    cs.clear_contextvars()
    cs.reset_contextvars(**tokens)
    assert cs.get_contextvars() == {"a": 1}


def test_reset_tokens_of_several_binds_at_once() -> None:
    first = cs.bind_contextvars(a=1, b=1)
    second = cs.bind_contextvars(c=2, d=2)
    cs.reset_contextvars(a=first["a"], c=second["c"])
    assert cs.get_contextvars() == {"b": 1, "d": 2}
    cs.reset_contextvars(b=first["b"], d=second["d"])
    assert cs.get_contextvars() == {}


def test_reset_twice_raises() -> None:
    tokens = cs.bind_contextvars(a=1)
    cs.reset_contextvars(**tokens)
    with pytest.raises(RuntimeError, match="already used") as info:
        cs.reset_contextvars(**tokens)
    assert isinstance(info.value, ctxlog.ContextError)


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_reset_with_the_token_of_another_key_raises() -> None:
    tokens = cs.bind_contextvars(a=1)
    with pytest.raises(ValueError, match="not for 'b'") as info:
        cs.reset_contextvars(b=tokens["a"])
    assert isinstance(info.value, ctxlog.ContextError)
    with pytest.raises(ctxlog.ContextError, match="not str"):
        cs.reset_contextvars(a="nope")  # type: ignore[arg-type]  # the misuse under test
    assert "ContextVarsToken a>" in repr(tokens["a"])


def test_reset_in_another_context_raises() -> None:
    mine = cs.bind_contextvars(a=1)
    foreign = contextvars.copy_context().run(cs.bind_contextvars, b=2)
    with pytest.raises(ValueError, match="different context") as info:
        cs.reset_contextvars(**foreign)
    assert isinstance(info.value, ctxlog.ContextError)
    assert cs.get_contextvars() == {"a": 1}
    # Key by key, as structlog: a foreign token first changes nothing ...
    with pytest.raises(ValueError, match="different context"):
        cs.reset_contextvars(b=foreign["b"], a=mine["a"])
    assert cs.get_contextvars() == {"a": 1}
    # ... and after a good one, the good one is reset (once).
    with pytest.raises(ValueError, match="different context"):
        cs.reset_contextvars(a=mine["a"], b=foreign["b"])
    assert cs.get_contextvars() == {}
    with pytest.raises(RuntimeError, match="already used"):
        cs.reset_contextvars(**mine)


def test_a_bad_token_stops_the_reset_where_it_is() -> None:
    first = cs.bind_contextvars(a=1, b=1)
    second = cs.bind_contextvars(c=2)
    with pytest.raises(ctxlog.ContextError):
        cs.reset_contextvars(a=first["a"], c=second["c"], b="nope")  # type: ignore[arg-type]  # the misuse under test
    assert cs.get_contextvars() == {"b": 1}
    cs.reset_contextvars(b=first["b"])
    assert cs.get_contextvars() == {}
    with pytest.raises(TypeError, match="come from bind_contextvars"):
        cs.ContextVarsToken()


def test_reset_in_another_task_raises() -> None:
    async def main() -> None:
        tokens = cs.bind_contextvars(a=1)

        async def other() -> None:
            cs.reset_contextvars(**tokens)

        with pytest.raises(ValueError, match="different context"):
            await asyncio.create_task(other())
        cs.reset_contextvars(**tokens)
        assert cs.get_contextvars() == {}

    asyncio.run(main())


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_unbind_and_clear() -> None:
    cs.bind_contextvars(a=1, b=2)
    cs.unbind_contextvars("a", "never-bound")
    assert cs.get_contextvars() == {"b": 2}
    cs.unbind_contextvars("never-bound")
    cs.unbind_contextvars()
    with pytest.raises(ctxlog.ContextError):
        cs.unbind_contextvars("")
    with ctxlog.bind(c=3):
        cs.clear_contextvars()
        assert cs.get_contextvars() == {}
    # Leaving the ctxlog.bind block restores what was there before it.
    assert cs.get_contextvars() == {"b": 2}


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_unbind_hides_a_registered_contextvar() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="r-0")
    ctxlog.register(var)
    assert cs.get_contextvars() == {"request_id": "r-0"}
    cs.unbind_contextvars("request_id")
    assert cs.get_contextvars() == {}
    cs.clear_contextvars()
    assert cs.get_contextvars() == {"request_id": "r-0"}


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_get_merged_contextvars() -> None:
    cs.bind_contextvars(x=1, y=1)
    log = structlog.get_logger().bind(y=2)
    assert cs.get_merged_contextvars(log) == {"x": 1, "y": 2}


def test_empty_keys_are_rejected() -> None:
    with pytest.raises(ctxlog.ContextError):
        cs.bind_contextvars(**{"": 1})
    with pytest.raises(ctxlog.ContextError):
        cs.bound_contextvars(**{"": 1})


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_bound_contextvars_restores_only_its_keys() -> None:
    cs.bind_contextvars(x="original", z="unrelated")
    with cs.bound_contextvars(x=42, y="foo"):
        assert cs.get_contextvars() == {"x": 42, "y": "foo", "z": "unrelated"}
        cs.bind_contextvars(inner=1)
    assert cs.get_contextvars() == {"x": "original", "z": "unrelated", "inner": 1}
    with pytest.raises(KeyError), cs.bound_contextvars(x=1):
        raise KeyError
    assert cs.get_contextvars()["x"] == "original"
    assert repr(cs.bound_contextvars(x=1)) == "ctxlog.structlog.bound_contextvars(x=1)"


def test_bound_contextvars_is_reusable_and_nests() -> None:
    outer = cs.bound_contextvars(level=1)
    with outer:
        with outer, cs.bound_contextvars(level=2):
            assert cs.get_contextvars() == {"level": 2}
        assert cs.get_contextvars() == {"level": 1}
    assert cs.get_contextvars() == {}


def test_one_bound_contextvars_shared_by_many_tasks_and_threads(slog: Lines) -> None:
    """A module-level ``bound_contextvars`` object used by concurrent requests: each
    leaves its own entry, so none gets another's values back."""
    shared = cs.bound_contextvars(tenant="acme")
    log = structlog.get_logger()

    def steps(n: int) -> None:
        log.info("inside", n=n)

    async def request(n: int) -> None:
        with ctxlog.bind(request_id=f"r-{n}", tenant=f"own-{n}"):
            async with shared:
                await asyncio.sleep(0.001 * (n % 4))
                steps(n)
            log.info("after", n=n)

    async def main() -> None:
        await asyncio.gather(*(request(n) for n in range(20)))

    asyncio.run(main())
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with ctxlog.bind(request_id=f"r-{n}", tenant=f"own-{n}"):
                with shared:
                    barrier.wait(timeout=10)
                    steps(n)
                    barrier.wait(timeout=10)
                log.info("after", n=n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20, 28)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    lines = slog()
    assert len(lines) == 2 * 28
    for line in lines:
        n = line["n"]
        tenant = "acme" if line["event"] == "inside" else f"own-{n}"
        assert line == {"event": line["event"], "n": n, "request_id": f"r-{n}", "tenant": tenant}
    assert shared._entries == []


def test_bound_contextvars_left_in_another_context() -> None:
    block = cs.bound_contextvars(x=1)
    block.__enter__()
    copy = contextvars.copy_context()
    copy.run(block.__exit__, None, None, None)
    # The copy got the key restored; this context keeps it until its own exit.
    assert copy.run(cs.get_contextvars) == {}
    assert cs.get_contextvars() == {"x": 1}
    cs.unbind_contextvars("x")


@pytest.mark.ctxlog_leaks("ignore")  # relies on the isolation
def test_bound_contextvars_as_a_decorator_keeps_the_signature() -> None:
    @cs.bound_contextvars(x=42)
    def wrapped(arg1: int) -> dict[str, Any]:
        """Wrapped documentation"""
        cs.bind_contextvars(y=arg1)
        return cs.get_contextvars()

    assert wrapped(23) == {"x": 42, "y": 23}
    assert cs.get_contextvars() == {"y": 23}
    assert wrapped.__name__ == "wrapped"
    assert str(inspect.signature(wrapped)) == "(arg1: 'int') -> 'dict[str, Any]'"
    assert wrapped.__doc__ == "Wrapped documentation"


def test_bound_contextvars_on_async_def_binds_around_the_await() -> None:
    @cs.bound_contextvars(request_id="ours")
    async def ours(n: int) -> tuple[Any, Any]:
        before = cs.get_contextvars().get("request_id")
        await asyncio.sleep(0)
        return before, cs.get_contextvars().get("request_id")

    @sl_contextvars.bound_contextvars(request_id="structlog's")
    async def theirs() -> Any:
        return sl_contextvars.get_contextvars().get("request_id")

    async def main() -> None:
        assert await asyncio.gather(*(ours(n) for n in range(5))) == [("ours", "ours")] * 5
        assert cs.get_contextvars() == {}
        # structlog's own decorator is a contextlib.contextmanager: it binds around
        # creating the coroutine only, until Python 3.15's ContextDecorator holds it
        # across the await (gh-125862).
        assert await theirs() == ("structlog's" if sys.version_info >= (3, 15) else None)

    asyncio.run(main())
    assert inspect.iscoroutinefunction(ours)


def test_bound_contextvars_on_a_coroutine_resumed_in_another_context() -> None:
    """A coroutine stepped by hand, its last step in a copy of the first step's context:
    the keys are restored there all the same."""

    class Pause:
        def __await__(self) -> Generator[None, None, None]:
            yield

    @cs.bound_contextvars(x=1)
    async def step() -> dict[str, Any]:
        await Pause()
        return cs.get_contextvars()

    coro = step()
    first = contextvars.copy_context()
    first.run(coro.send, None)
    assert first.run(cs.get_contextvars) == {"x": 1}
    second = first.copy()
    with pytest.raises(StopIteration) as stop:
        second.run(coro.send, None)
    assert stop.value.value == {"x": 1}
    assert second.run(cs.get_contextvars) == {}


def test_bound_contextvars_async_with() -> None:
    async def main() -> None:
        async with cs.bound_contextvars(request_id="r-1"):
            await asyncio.sleep(0)
            assert ctxlog.get("request_id") == "r-1"
        assert ctxlog.get("request_id") is None

    asyncio.run(main())


def test_bound_contextvars_on_generators() -> None:
    @cs.bound_contextvars(job="j-1")
    def numbers() -> Iterator[Any]:
        cs.bind_contextvars(inside=True)
        yield cs.get_contextvars()
        yield ctxlog.get("job")

    @cs.bound_contextvars(job="j-2")
    async def anumbers() -> AsyncIterator[Any]:
        await asyncio.sleep(0)
        yield ctxlog.get("job")

    gen = numbers()
    assert next(gen) == {"job": "j-1", "inside": True}
    # Between steps the consumer's context is untouched.
    assert cs.get_contextvars() == {}
    assert list(gen) == ["j-1"]

    async def consume() -> list[Any]:
        return [item async for item in anumbers()]

    assert asyncio.run(consume()) == ["j-2"]


# --------------------------------------------------------------------------
# the drop-in against structlog itself, on random sequences of calls
# --------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c"])
OPS = st.one_of(
    st.tuples(st.just("bind"), st.dictionaries(KEYS, st.integers(0, 9), max_size=3)),
    # Each key reset with the token of one of the earlier binds (maybe several).
    st.tuples(st.just("reset"), st.lists(st.tuples(st.integers(0, 20), KEYS), max_size=4)),
    st.tuples(st.just("unbind"), st.lists(KEYS, max_size=3)),
    st.tuples(st.just("clear")),
    st.tuples(st.just("enter"), st.dictionaries(KEYS, st.integers(0, 9), max_size=3)),
    st.tuples(st.just("exit")),
)


def _outcome(reset: Callable[..., None], tokens: dict[str, Any]) -> str:
    try:
        reset(**tokens)
    except RuntimeError:  # a double reset: RuntimeError from both
        return "RuntimeError"
    return "ok"


@given(st.lists(OPS, max_size=25))
def test_drop_in_behaves_like_structlog(ops: list[tuple[Any, ...]]) -> None:
    def scenario() -> None:
        binds: list[tuple[Any, Any]] = []
        blocks: list[tuple[Any, Any]] = []
        for op in ops:
            kind = op[0]
            if kind == "bind":
                binds.append(
                    (sl_contextvars.bind_contextvars(**op[1]), cs.bind_contextvars(**op[1]))
                )
            elif kind == "reset" and binds:
                theirs: dict[str, Any] = {}
                ours: dict[str, Any] = {}
                for index, key in op[1]:
                    sl_tokens, cs_tokens = binds[index % len(binds)]
                    if key in sl_tokens and key not in theirs:
                        theirs[key], ours[key] = sl_tokens[key], cs_tokens[key]
                assert _outcome(sl_contextvars.reset_contextvars, theirs) == _outcome(
                    cs.reset_contextvars, ours
                )
            elif kind == "unbind":
                sl_contextvars.unbind_contextvars(*op[1])
                cs.unbind_contextvars(*op[1])
            elif kind == "clear":
                sl_contextvars.clear_contextvars()
                cs.clear_contextvars()
            elif kind == "enter":
                block = (sl_contextvars.bound_contextvars(**op[1]), cs.bound_contextvars(**op[1]))
                for cm in block:
                    cm.__enter__()
                blocks.append(block)
            elif kind == "exit" and blocks:
                for cm in blocks.pop():
                    cm.__exit__(None, None, None)
            assert cs.get_contextvars() == sl_contextvars.get_contextvars(), op

    # A fresh, empty context per example: nothing of structlog's or ours leaks in.
    contextvars.Context().run(scenario)


# --------------------------------------------------------------------------
# opt-in: values bound with the real structlog.contextvars
# --------------------------------------------------------------------------


def test_merging_values_bound_with_structlog_itself() -> None:
    both = cs.merge_context(structlog_contextvars=True)
    assert both(None, "info", {"event": "x"}) == {"event": "x"}
    sl_contextvars.bind_contextvars(legacy="old", shared="structlog")
    sl_contextvars.bind_contextvars(gone=1)
    sl_contextvars.unbind_contextvars("gone")
    assert cs.merge_context(None, "info", {"event": "x"}) == {"event": "x"}
    with ctxlog.bind(request_id="r-1", shared="ctxlog"):
        assert both(None, "info", {"event": "x", "legacy": "explicit"}) == {
            "event": "x",
            "legacy": "explicit",
            "shared": "ctxlog",
            "request_id": "r-1",
        }
    assert both(None, "info", {"event": "x"}) == {
        "event": "x",
        "legacy": "old",
        "shared": "structlog",
    }
    assert "structlog_contextvars=True" in repr(both)


def test_both_ways_of_reading_structlog_agree() -> None:
    registry_reader = cs._pick_structlog_reader(sl_contextvars._CONTEXT_VARS)
    assert cs._pick_structlog_reader(None) is cs._structlog_values_by_scan

    def check() -> None:
        assert registry_reader() == cs._structlog_values_by_scan() == {}
        sl_contextvars.bind_contextvars(a=1, b=None)
        sl_contextvars.unbind_contextvars("a")
        sl_contextvars.bind_contextvars(c=[3])
        assert registry_reader() == cs._structlog_values_by_scan() == {"b": None, "c": [3]}

    contextvars.Context().run(check)
    # Anything else in the registry (not a ContextVar, not structlog's prefix) is skipped.
    var: contextvars.ContextVar[int] = contextvars.ContextVar("structlog_z", default=...)  # type: ignore[arg-type]  # structlog's sentinel
    odd = cs._pick_structlog_reader({"structlog_y": "not a var", "z": var, "structlog_z": var})
    assert contextvars.Context().run(odd) == {}
    var.set(1)
    assert odd() == {"z": 1}


# --------------------------------------------------------------------------
# stdlib records and structlog events in one JSON stream (config/)
# --------------------------------------------------------------------------

# Loads a config file, configures structlog as the file says, and logs from
# structlog, from the application's stdlib logger, from a third-party library
# (httpx, calling a server on loopback) and from a worker thread -- first
# straight to stderr, then through a QueueHandler whose listener writes.
CONFIG_SCRIPT = """
import http.server, json, logging, logging.config, logging.handlers, queue, sys, threading
import httpx, structlog, yaml
import ctxlog
from ctxlog.structlog import SHARED_PROCESSORS, bound_contextvars

path = sys.argv[1]
with open(path, encoding="utf-8") as fh:
    config = yaml.safe_load(fh) if path.endswith(".yaml") else json.load(fh)
logging.config.dictConfig(config)
structlog.configure(
    processors=[
        structlog.stdlib.filter_by_level,
        *SHARED_PROCESSORS,
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)

class Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}/"
log = structlog.get_logger("app.structlog")
std = logging.getLogger("app.stdlib")

def run(mode):
    with ctxlog.bind(request_id=f"r-{mode}"), bound_contextvars(user_id="u-1"):
        log.info("structlog event", mode=mode)
        std.info("stdlib record %s", mode)
        std.info("with extra", extra={"order_id": 7, "user_id": "explicit", "event": "kept"})
        httpx.get(url)
        worker = ctxlog.Thread(target=std.warning, args=("from a thread",))
        worker.start()
        worker.join()
        try:
            1 / 0
        except ZeroDivisionError:
            std.exception("failed")
    std.info("outside")

run("direct")
root = logging.getLogger()
(stderr,) = root.handlers
q = queue.SimpleQueue()
queue_handler = logging.handlers.QueueHandler(q)
queue_handler.setFormatter(stderr.formatter)
stderr.setFormatter(logging.Formatter("%(message)s"))
root.removeHandler(stderr)
root.addHandler(queue_handler)
listener = logging.handlers.QueueListener(q, stderr)
listener.start()
run("queued")
listener.stop()
server.shutdown()
"""


@pytest.mark.parametrize("name", ["structlog-json.yaml", "structlog-json.json"])
def test_config_one_json_stream(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CONFIG_SCRIPT, str(CONFIG / name)],
        capture_output=True,
        text=True,
        check=True,
        cwd=CONFIG,
        timeout=60,
    )
    assert result.stdout == ""
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert len(lines) == 14
    for mode, chunk in (("direct", lines[:7]), ("queued", lines[7:])):
        *inside, outside = chunk
        # The names and the values of the stdlib JSON line (json_formatter()).
        assert [(line["logger"], line["level"]) for line in inside] == [
            ("app.structlog", "INFO"),
            ("app.stdlib", "INFO"),
            ("app.stdlib", "INFO"),
            ("httpx", "INFO"),
            ("app.stdlib", "WARNING"),
            ("app.stdlib", "ERROR"),
        ]
        # A stdlib record's extra= values are in its line and win over the context,
        # as a structlog call's keywords do; its message stays the event.
        extra = inside.pop(2)
        assert extra["message"] == "with extra"
        assert (extra["order_id"], extra["user_id"]) == (7, "explicit")
        assert extra["request_id"] == f"r-{mode}"
        events = [line["message"] for line in inside]
        assert events[:2] == ["structlog event", f"stdlib record {mode}"]
        assert re.fullmatch(
            r'HTTP Request: GET http://127\.0\.0\.1:\d+/ "HTTP/1\.\d 204 .*"', events[2]
        )
        assert events[3:] == ["from a thread", "failed"]
        for line in inside:
            assert line["request_id"] == f"r-{mode}", line
            assert line["user_id"] == "u-1", line
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", line["time"])
            assert list(line)[:4] == ["time", "level", "logger", "message"]
            # Only the fields a line should have: no LogRecord attribute leaks in.
            assert set(line) <= {
                "message",
                "request_id",
                "user_id",
                "level",
                "logger",
                "time",
                "mode",
                "exception",
            }, line
        assert inside[0]["mode"] == mode
        assert "ZeroDivisionError" in inside[4]["exception"]
        assert outside["message"] == "outside"
        assert "request_id" not in outside


def test_listener_side_rendering_of_records_from_ctxlog_queue_handler() -> None:
    """With ``ctxlog.QueueHandler`` the record carries the logging thread's context as
    attributes, so a ``ProcessorFormatter`` on the listener's handler (another thread,
    no context there) still writes it."""
    out = io.StringIO()
    target = logging.StreamHandler(out)
    target.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=cs.SHARED_PROCESSORS, processors=cs.JSON_RENDERING
        )
    )
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    logger = logging.getLogger(f"ctxlog.test.queued.{id(out)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = ctxlog.QueueHandler(records)
    logger.addHandler(handler)
    listener = logging.handlers.QueueListener(records, target)
    listener.start()
    try:
        with ctxlog.bind(request_id="r-1", user_id="u-1"):
            logger.info("queued %s", "record", extra={"user_id": "explicit"})
        logger.info("outside")
    finally:
        listener.stop()
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "queued record"
    assert (first["request_id"], first["user_id"]) == ("r-1", "explicit")
    assert second["message"] == "outside"
    assert "request_id" not in second


def test_record_extras_only_from_stdlib_records() -> None:
    """The first of SHARED_PROCESSORS copies a stdlib record's extras; a structlog
    event, even one handed to it with its record, keeps only its own keys."""
    extras = cs.SHARED_PROCESSORS[0]
    record = logging.LogRecord("lib", logging.INFO, __file__, 1, "msg", (), None)
    record.__dict__.update(order_id=7, event="not the message", message="formatted")
    foreign = {"event": "msg", "_record": record, "_from_structlog": False}
    assert extras(None, "info", foreign) == {**foreign, "order_id": 7}
    record.__dict__.update(_logger=object(), _name="info")
    own = {"event": "x", "_record": record, "_from_structlog": True}
    assert extras(None, "info", dict(own)) == own
    assert extras(None, "info", {"event": "x"}) == {"event": "x"}


def test_missing_structlog_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['structlog'] = None\n"
        "try:\n"
        "    import ctxlog.structlog\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "pip install 'ctxlog-correlation[structlog]'" in out


# --------------------------------------------------------------------------
# structlog's default chain: install()
# --------------------------------------------------------------------------


@pytest.fixture
def default_chain() -> Iterator[io.StringIO]:
    """structlog on its default processors, printing into memory; install() undone."""
    sio = io.StringIO()
    structlog.reset_defaults()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sio))  # processors stay
    yield sio
    cs.uninstall()
    structlog.reset_defaults()


def test_default_chain_misses_the_drop_in_without_install(default_chain: io.StringIO) -> None:
    """Why install() exists: structlog's default chain holds its own merge_contextvars."""
    with (
        pytest.warns(cs.UnmergedContextWarning, match=r"ctxlog\.structlog\.install\(\)"),
        cs.bound_contextvars(request_id="r-1"),
    ):
        structlog.get_logger().info("hello")
    assert "request_id" not in default_chain.getvalue()


def _warned(do: Callable[[], object]) -> list[warnings.WarningMessage]:
    """The UnmergedContextWarnings *do* issues, each one (no registry dedup)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        do()
    return [w for w in caught if issubclass(w.category, cs.UnmergedContextWarning)]


def _bind_and_log() -> None:
    tokens = cs.bind_contextvars(request_id="r-w")
    with cs.bound_contextvars(user_id=5):
        structlog.get_logger().info("hello")
    cs.reset_contextvars(**tokens)


def test_binding_where_structlog_cannot_see_it_warns_once(default_chain: io.StringIO) -> None:
    (warning,) = _warned(_bind_and_log)
    assert warning.filename == __file__  # the line of the bind
    text = str(warning.message)
    assert "missing from structlog's lines" in text
    assert "Add ctxlog.structlog.install() once at start-up" in text
    assert "request_id" not in default_chain.getvalue()  # what it warns about
    assert _warned(_bind_and_log) == []  # once for this configuration
    cs.install()  # the line it names
    assert _warned(_bind_and_log) == []
    assert "request_id=r-w" in default_chain.getvalue().splitlines()[-1]


def test_each_new_chain_is_checked_once(default_chain: io.StringIO) -> None:
    renderer = structlog.processors.KeyValueRenderer()
    factory = structlog.PrintLoggerFactory(default_chain)
    structlog.configure(processors=[sl_contextvars.merge_contextvars, renderer])
    assert len(_warned(_bind_and_log)) == 1
    cs.install()  # after configure(): that chain reads the store now
    assert _warned(_bind_and_log) == []
    assert "request_id='r-w'" in default_chain.getvalue().splitlines()[-1]
    # A tuple cannot be changed in place: the warning says what to write instead.
    structlog.configure(processors=(sl_contextvars.merge_contextvars, renderer))
    (warning,) = _warned(_bind_and_log)
    assert "Put ctxlog.structlog.merge_context in place of" in str(warning.message)
    # Chains that merge ctxlog's context, or no context at all, say nothing.
    chains: list[list[Any]] = [
        [cs.merge_context, renderer],
        [cs.merge_context(fields=["request_id"]), sl_contextvars.merge_contextvars, renderer],
        [renderer],
    ]
    for chain in chains:
        structlog.configure(processors=chain, logger_factory=factory)
        assert _warned(_bind_and_log) == []
    assert not _warned(cs.bind_contextvars)  # nothing bound, nothing checked


def test_install_puts_the_store_in_the_default_chain(default_chain: io.StringIO) -> None:
    cs.install()
    assert cs.installed()
    with cs.bound_contextvars(request_id="r-1"), ctxlog.bind(user_id=7):
        structlog.get_logger().info("hello")
    sl_contextvars.bind_contextvars(legacy="kept")  # the real structlog.contextvars
    structlog.get_logger().info("legacy")
    first, second = default_chain.getvalue().splitlines()
    assert "request_id=r-1" in first
    assert "user_id=7" in first
    assert "legacy=kept" in second  # nothing structlog bound itself is lost


def test_install_survives_reset_and_recreate_defaults(default_chain: io.StringIO) -> None:
    cs.install()
    cs.install()  # idempotent
    structlog.reset_defaults()
    assert structlog.get_config()["processors"][0] is not sl_contextvars.merge_contextvars
    structlog.stdlib.recreate_defaults(log_level=None)
    chain = structlog.get_config()["processors"]
    assert sl_contextvars.merge_contextvars not in chain
    # recreate_defaults() logs through stdlib logging.
    sio = io.StringIO()
    handler = logging.StreamHandler(sio)
    stdlib_logger = logging.getLogger("recreated")
    stdlib_logger.addHandler(handler)
    stdlib_logger.setLevel(logging.INFO)
    stdlib_logger.propagate = False
    try:
        with ctxlog.bind(request_id="r-2"):
            structlog.get_logger("recreated").info("after recreate_defaults")
    finally:
        stdlib_logger.removeHandler(handler)
    assert "request_id=r-2" in sio.getvalue()


def test_uninstall_restores_structlog(default_chain: io.StringIO) -> None:
    cs.install()
    structlog.reset_defaults()  # a copy made while installed is restored too
    cs.uninstall()
    cs.uninstall()  # a no-op the second time
    assert not cs.installed()
    assert structlog.get_config()["processors"][0] is sl_contextvars.merge_contextvars
    assert structlog.stdlib.merge_contextvars is sl_contextvars.merge_contextvars  # type: ignore[attr-defined]
    structlog.reset_defaults()
    assert structlog.get_config()["processors"][0] is sl_contextvars.merge_contextvars


def test_the_chain_in_effect_is_changed_a_later_one_is_not(default_chain: io.StringIO) -> None:
    structlog.configure(
        processors=[sl_contextvars.merge_contextvars, structlog.processors.KeyValueRenderer()]
    )
    log = structlog.get_logger()
    cs.install()
    with ctxlog.bind(request_id="r-3"):
        log.info("made before install()")
    assert "request_id='r-3'" in default_chain.getvalue()
    later: list[Any] = [sl_contextvars.merge_contextvars, structlog.processors.KeyValueRenderer()]
    structlog.configure(processors=later)
    assert structlog.get_config()["processors"][0] is sl_contextvars.merge_contextvars
    cs.install()  # again, after configure(): now that chain too
    assert structlog.get_config()["processors"][0] is not sl_contextvars.merge_contextvars
    cs.uninstall()
    assert later[0] is sl_contextvars.merge_contextvars


@pytest.mark.ctxlog_leaks("ignore")
def test_isolation_undoes_a_leaked_install() -> None:
    from ctxlog.testing import Isolation  # noqa: PLC0415

    isolation = Isolation()
    isolation.start()
    cs.install()
    leaks = isolation.finish()
    assert "ctxlog.structlog.install() still in effect" in leaks
    assert not cs.installed()
    structlog.reset_defaults()


def test_drop_in_exports_structlog_constants() -> None:
    assert cs.STRUCTLOG_KEY_PREFIX == sl_contextvars.STRUCTLOG_KEY_PREFIX
    assert cs.STRUCTLOG_KEY_PREFIX_LEN == sl_contextvars.STRUCTLOG_KEY_PREFIX_LEN
    public = {
        name
        for name, value in vars(sl_contextvars).items()
        if not name.startswith("_")
        and (getattr(value, "__module__", None) == sl_contextvars.__name__ or name.isupper())
    }
    assert public <= set(cs.__all__), public - set(cs.__all__)
