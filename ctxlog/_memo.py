"""Per-unit memoization: ``@memoize`` caches inside the innermost unit of work.

A unit of work ([`ctxlog.scope`][ctxlog.scope]) is typically one request: a web
middleware opens one, and every memoized call made while handling the request
(in its asyncio tasks, or in threads it hands work to through ctxlog's
executors, ``wrap`` or ``Thread``) shares one cache that is dropped when the
unit ends.

The unit owns its cache (`ctxlog._store.Unit`); the cache is also
reachable through a ContextVar of its own, `MEMO`, which the store sets
and resets with the unit, so that a cache hit costs one ``ContextVar.get()``
and two dict subscripts.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeAlias, TypeVar, cast, overload

from ctxlog._errors import ContextError

if TYPE_CHECKING:
    import asyncio
    import concurrent.futures

__all__ = ["MEMO", "Scope", "close_scope", "memoize", "new_scope"]

P = ParamSpec("P")
R = TypeVar("R")


# Separates positional from keyword arguments in a cache key.
_KWMARK: Final = object()


class _Flight:
    """A sync call in progress: the thread making it, and a future for the others."""

    __slots__ = ("future", "thread")

    def __init__(self) -> None:
        # Only on a cache miss: concurrent.futures stays off `import ctxlog`.
        import concurrent.futures  # noqa: PLC0415

        self.thread = threading.get_ident()
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class _AsyncFlight:
    """An async call in progress: the task running it and how many callers await it."""

    __slots__ = ("loop", "task", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # None while the first caller creates the task (see _async_miss).
        self.task: asyncio.Task[Any] | None = None
        self.waiters = 0


class _FnState:
    """One memoized function's calls in progress within one scope, and, when
    bounded, the order in which its results were used."""

    __slots__ = ("lock", "maxsize", "order", "pending")

    def __init__(self, maxsize: int | None) -> None:
        self.pending: dict[Any, Any] = {}
        self.lock = threading.Lock()
        self.maxsize = maxsize
        self.order: OrderedDict[Any, None] = OrderedDict()  # bounded caches only

    def store(self, results: dict[Any, Any], key: Any, value: Any) -> None:
        """Keep *value* in *results*; call with the lock held."""
        results[key] = value
        if self.maxsize is not None:
            order = self.order
            order[key] = None
            order.move_to_end(key)
            if len(order) > self.maxsize:
                oldest, _ = order.popitem(last=False)
                results.pop(oldest, None)

    def touch(self, key: Any) -> None:
        """Mark *key* as just used (bounded caches only).

        No lock: ``move_to_end`` is atomic, and a key that another thread has
        just evicted is simply not there any more.
        """
        try:  # noqa: SIM105 -- cheaper than contextlib.suppress on the hit path
            self.order.move_to_end(key)
        except KeyError:
            pass


# A scope is a plain dict, so that a cache hit is two dict subscripts (the
# interpreter's fastest path): ``scope[fn][key]``.  It maps each memoized
# function's key to its results, that function's state key to its _FnState,
# and _OPEN to True; closing the scope empties it, so a closed scope is one
# without _OPEN.
Scope: TypeAlias = dict[object, Any]

_OPEN: Final = object()

# One lock for finding (or making) a function's caches in a scope on a miss, and
# for closing scopes: both are rare next to hits and short (a dict lookup), and
# a lock per scope would cost every request its making.
_SCOPES: Final = threading.Lock()


def new_scope() -> Scope:
    """A new, empty, open cache."""
    return {_OPEN: True}


def close_scope(scope: Scope) -> None:
    """Drop every cached result; later calls in this scope call through."""
    with _SCOPES:
        scope.clear()


def _caches(
    scope: Scope, results_key: object, state_key: object, maxsize: int | None
) -> tuple[dict[Any, Any], _FnState] | None:
    """A function's results and state in *scope*, made on first use; ``None``
    once the scope is closed."""
    with _SCOPES:
        if _OPEN not in scope:  # closed (or closed meanwhile)
            return None
        results = scope.get(results_key)
        if results is None:
            results = scope[results_key] = {}
            scope[state_key] = _FnState(maxsize)
        return results, scope[state_key]


#: The innermost unit of work's cache; set and reset by the store with the unit.
MEMO: Final[ContextVar[Scope | None]] = ContextVar("ctxlog.memo", default=None)


# --------------------------------------------------------------------------
# memoize
# --------------------------------------------------------------------------


def _unhashable(fn: Callable[..., Any], exc: TypeError) -> TypeError:
    name = f"{fn.__module__}.{fn.__qualname__}"
    return TypeError(
        f"memoize: {name}() was called with an unhashable argument ({exc}); memoized "
        "functions need hashable arguments (pass a tuple instead of a list, a frozenset "
        "instead of a set, or an id instead of the object)."
    )


def _sync_miss(
    fn: Callable[..., R],
    found: tuple[dict[Any, Any], _FnState],
    key: Any,
    args: Any,
    kwargs: Any,
) -> R:
    """Call, or join the call in progress for *key*, and cache the result."""
    results, state = found
    value: R
    with state.lock:
        try:
            if key in results:
                value = results[key]
                return value
        except TypeError as exc:
            raise _unhashable(fn, exc) from None
        flight: _Flight | None = state.pending.get(key)
        mine = flight is None
        if flight is None:
            flight = state.pending[key] = _Flight()
    if not mine:
        if flight.thread == threading.get_ident():
            # A recursive call with the same arguments: waiting for ourselves
            # would never end.  Call through, as an uncached function would.
            return fn(*args, **kwargs)
        value = flight.future.result()
        return value
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        with state.lock:
            del state.pending[key]
        flight.future.set_exception(exc)  # the waiters share the outcome; not cached
        raise
    with state.lock:
        del state.pending[key]
        state.store(results, key, value)
    flight.future.set_result(value)
    return value


def _memoize_sync(fn: Callable[P, R], maxsize: int | None) -> Callable[P, R]:
    owner = object()  # this function's results in every scope
    state_key = object()  # and its _FnState
    current_scope = MEMO.get

    def slow(scope: Scope, key: Any, args: Any, kwargs: Any) -> R:
        found = _caches(scope, owner, state_key, maxsize)
        if found is None:  # the scope ended while this thread still runs in it
            return fn(*args, **kwargs)
        return _sync_miss(fn, found, key, args, kwargs)

    if maxsize is None:
        # The hit path, kept to the bone: one ContextVar.get and two dict subscripts.
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            scope = current_scope()
            if scope is None:
                return fn(*args, **kwargs)
            key = (*args, _KWMARK, *kwargs.items()) if kwargs else args
            try:
                return scope[owner][key]  # type: ignore[no-any-return]  # the cache holds R
            except KeyError:
                return slow(scope, key, args, kwargs)
            except TypeError as exc:
                raise _unhashable(fn, exc) from None

        return wrapper

    @functools.wraps(fn)
    def bounded(*args: P.args, **kwargs: P.kwargs) -> R:
        scope = current_scope()
        if scope is None:
            return fn(*args, **kwargs)
        key = (*args, _KWMARK, *kwargs.items()) if kwargs else args
        try:
            value: R = scope[owner][key]
            state: _FnState = scope[state_key]
        except KeyError:
            return slow(scope, key, args, kwargs)
        except TypeError as exc:
            raise _unhashable(fn, exc) from None
        state.touch(key)
        return value

    return bounded


def _async_finished(
    results: dict[Any, Any],
    state: _FnState,
    key: Any,
    flight: _AsyncFlight,
    task: asyncio.Task[Any],
) -> None:
    with state.lock:
        if state.pending.get(key) is flight:
            del state.pending[key]
        if task.cancelled():
            return
        # Always retrieve the exception: nobody may be left to await it.
        if task.exception() is None:
            state.store(results, key, task.result())


async def _async_miss(
    fn: Callable[..., Coroutine[Any, Any, R]],
    found: tuple[dict[Any, Any], _FnState],
    key: Any,
    args: Any,
    kwargs: Any,
) -> R:
    """Start, or join the task in progress for *key*; the task caches its result."""
    results, state = found
    import asyncio  # noqa: PLC0415 -- loaded already by the caller's event loop; kept off `import ctxlog`

    loop = asyncio.get_running_loop()
    value: R
    with state.lock:
        try:
            if key in results:
                value = results[key]
                return value
        except TypeError as exc:
            raise _unhashable(fn, exc) from None
        flight: _AsyncFlight | None = state.pending.get(key)
        mine = flight is None
        if flight is None:
            flight = state.pending[key] = _AsyncFlight(loop)
        elif (
            flight.loop is not loop
            or flight.task is None
            or flight.task is asyncio.current_task(loop)
        ):
            flight = None
    if flight is None:
        # The scope is shared with a thread running another event loop, whose
        # task this loop cannot await, or this is the call in progress itself,
        # recursing with the same arguments (awaiting itself would never end;
        # a task still None is being started by this very thread): call
        # through, uncached, as the sync path does.
        return await fn(*args, **kwargs)
    if mine:
        # The call runs as its own task, so that a cancelled caller does not
        # cancel it for the others; it runs in the first caller's context.
        # Started outside the lock: with an eager task factory its first steps
        # run inside create_task(), and may call memoized functions of this scope.
        try:
            task = loop.create_task(fn(*args, **kwargs))
        except BaseException:
            with state.lock:
                if state.pending.get(key) is flight:
                    del state.pending[key]
            raise
        flight.task = task
        task.add_done_callback(functools.partial(_async_finished, results, state, key, flight))
    else:
        task = cast("asyncio.Task[Any]", flight.task)  # not None: checked under the lock
    flight.waiters += 1
    try:
        value = await asyncio.shield(task)
    finally:
        flight.waiters -= 1
        if flight.waiters == 0 and not task.done():
            # Every caller gave up (was cancelled): stop the call, and let the
            # next caller start a fresh one rather than await a cancelled task.
            with state.lock:
                if state.pending.get(key) is flight:
                    del state.pending[key]
            task.cancel()
    return value


def _memoize_async(
    fn: Callable[P, Coroutine[Any, Any, R]], maxsize: int | None
) -> Callable[P, Coroutine[Any, Any, R]]:
    owner = object()
    state_key = object()
    current_scope = MEMO.get

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        scope = current_scope()
        if scope is None:
            return await fn(*args, **kwargs)
        key = (*args, _KWMARK, *kwargs.items()) if kwargs else args
        try:
            value: R = scope[owner][key]
            state: _FnState = scope[state_key]
        except KeyError:
            pass
        except TypeError as exc:
            raise _unhashable(fn, exc) from None
        else:
            if maxsize is not None:
                state.touch(key)
            return value
        found = _caches(scope, owner, state_key, maxsize)
        if found is None:
            return await fn(*args, **kwargs)
        return await _async_miss(fn, found, key, args, kwargs)

    return wrapper


@overload
def memoize(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def memoize(*, maxsize: int | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def memoize(
    fn: Callable[P, R] | None = None, /, *, maxsize: int | None = None
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Cache a function's results inside the innermost unit of work
    ([`ctxlog.scope`][ctxlog.scope], also spelled [`ctxlog.cache_scope`][ctxlog.cache_scope]).

    ``@memoize`` or ``@memoize(maxsize=128)`` on a sync or ``async def``
    function or method.  Inside a scope, a call with the same arguments
    returns the cached result; outside any scope the function is called
    through, uncached.  Concurrent callers of one key in one scope share one
    call in progress: threads (that share the scope through
    [`ctxlog.wrap`][ctxlog.wrap], [`ctxlog.Thread`][ctxlog.Thread] or ctxlog's executors) wait for
    it; asyncio tasks await it, and the call runs as its own task, so a caller
    that is cancelled does not cancel or fail the others (it is cancelled only
    when every caller is).  An exception reaches every caller sharing the call
    and is not cached: the next call tries again.  *maxsize* bounds the number
    of results one scope keeps for this function (least recently used first
    out); ``None`` keeps all of them until the scope ends.

    Keys are built as `functools.lru_cache` builds them: ``f(1, b=2)``
    and ``f(b=2, a=1)`` are different keys; arguments must be hashable.

    *New in version 0.1.0.*

    :raises TypeError: (when called) an argument is not hashable; the message
        names the function.
    :raises ContextError: (when decorating) *maxsize* is not a positive int or
        ``None``, or *fn* is a generator function.
    """
    if maxsize is not None and (
        not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1
    ):
        msg = f"memoize(maxsize={maxsize!r}): give a positive int, or None for no limit."
        raise ContextError(msg)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        import inspect  # noqa: PLC0415 -- costly to import; see ctxlog._context.bind

        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            msg = (
                f"memoize cannot cache the generator function {fn.__qualname__}: a "
                "generator can be iterated only once. Memoize a function that returns a list."
            )
            raise ContextError(msg)
        if inspect.iscoroutinefunction(fn):
            # R is the coroutine type here; the wrapper returns the same coroutine type.
            return cast("Callable[P, R]", _memoize_async(fn, maxsize))
        return _memoize_sync(fn, maxsize)

    if fn is None:
        return decorate
    return decorate(fn)
