"""The store's own guarantees: shared blocks across threads, bounded state, its verbs."""

from __future__ import annotations

import contextvars
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

import ctxlog
from ctxlog import ContextError
from ctxlog._store import store


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch as often as the interpreter allows: exits interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ctxlog.bind(shared="yes"),
        lambda: ctxlog.unbind("other"),
        lambda: ctxlog.scope(shared="yes"),
    ],
    ids=["bind", "unbind", "scope"],
)
def test_one_block_object_shared_by_threads(
    make: Callable[[], ctxlog.bind | ctxlog.unbind | ctxlog.scope], fast_switching: None
) -> None:
    """Every exit is clean and restores what its own thread found, however the
    threads' entries and exits interleave on the one object."""
    block = make()
    errors: list[BaseException] = []
    leftovers: list[object] = []
    barrier = threading.Barrier(6)

    def worker(n: int) -> None:
        try:
            with ctxlog.bind(other=n):
                barrier.wait(5)
                for _ in range(2_000):
                    with block:
                        pass
                if ctxlog.get("shared") is not None or ctxlog.get("other") != n:
                    leftovers.append(dict(ctxlog.current()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert leftovers == []
    assert block._entries == []


def test_register_unbind_unregister_cycles_stay_bounded() -> None:
    """Memory and the per-record cost stay flat over any number of cycles."""
    var = contextvars.ContextVar[str]("cycled", default="v")
    filt = ctxlog.ContextFilter()

    def cycle() -> None:
        ctxlog.register(var, "cycled")
        with ctxlog.unbind("cycled"):
            filt.attributes()
        ctxlog.unregister(var)

    for _ in range(1_000):
        cycle()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(20_000):
            cycle()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 50_000
    # Nothing is left merged: records go back to the one-read path.
    assert store.providers == ()
    assert filt.attributes() == {}


def test_set_names_itself_in_errors() -> None:
    with pytest.raises(ContextError, match=r"^set\(\)"):
        ctxlog.set(**{"": 1})


def test_save_and_load_cover_the_process_wide_state() -> None:
    var = contextvars.ContextVar[str]("saved")
    saved = store.save()
    ctxlog.register(var)
    with ctxlog.unbind("saved"):
        pass
    store.set_trace_source(lambda _trace_id: "00")
    assert store.providers
    assert store.hiding
    assert store.trace_source is not None
    store.load(saved)
    assert store.save() == saved
    assert store.save() == store.__class__().save()  # the state of a fresh store
    with pytest.raises(TypeError, match=r"Store\.save"):
        store.load(object())


def test_replace_keeps_the_unit_and_detach_leaves_it() -> None:
    with ctxlog.scope():
        ctxlog.annotate(user_id="u")
        token = store.replace({"a": 1})
        assert dict(ctxlog.current()) == {"a": 1, "user_id": "u"}
        store.restore(token)
        detached = store.detach({"a": 1})
        assert dict(ctxlog.current()) == {"a": 1}
        assert store.unit() is None
        calls: list[int] = []

        @ctxlog.memoize
        def once(n: int) -> int:
            calls.append(n)
            return n

        once(1)
        once(1)
        assert calls == [1, 1]  # outside the unit: its cache is out of reach too
        store.reattach(detached)
        assert store.unit() is not None
        once(1)
        once(1)
        assert calls == [1, 1, 1]


def test_stamp_is_shared_by_providers_or_never_the_same() -> None:
    """Readers cache on the stamp only when every provider shares one."""

    class Stamped:
        stamp = staticmethod(lambda: "same")

        def get(self) -> str:
            return "value"

    saved = store.save()
    try:
        first, second = Stamped(), Stamped()
        store.add_provider(first, "first", "test")
        store.add_provider(second, "second", "test")
        assert store.stamp() is store.stamp()
        var = contextvars.ContextVar[str]("unstamped")
        store.add_provider(var, "unstamped", "test")
        assert store.stamp() is not store.stamp()
        store.remove_provider(var, "test")
        assert store.stamp() is store.stamp()
    finally:
        store.load(saved)
    assert store.stamp() is not store.stamp()


def test_leave_unit_gives_the_context_back_and_the_unit_lives_on_in_a_copy() -> None:
    entry = store.open_unit({"request_id": "r-1"})
    ctxlog.annotate(user_id="u")
    held = contextvars.copy_context()
    store.leave_unit(entry)
    assert dict(ctxlog.current()) == {}
    assert store.unit() is None
    # The copy keeps the open unit: annotate() still reaches it there.
    held.run(ctxlog.annotate, step="body")
    assert held.run(lambda: dict(ctxlog.current())) == {
        "request_id": "r-1",
        "user_id": "u",
        "step": "body",
    }
    unit = entry[2]
    store.end(unit)
    with pytest.raises(ContextError):
        held.run(ctxlog.annotate, late=True)
    assert "late" not in held.run(lambda: dict(ctxlog.current()))
