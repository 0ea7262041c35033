"""Per-context memoization: ``@memoize`` caches inside the innermost ``cache_scope()``.

A scope is typically one request: a web middleware opens one, and every
memoized call made while handling the request (in its asyncio tasks, or in
threads it hands work to through ctxlog's executors, ``wrap`` or ``Thread``)
shares one cache that is dropped when the request ends.

The scope lives in its own :class:`~contextvars.ContextVar` (it is never read
per log record, so it does not belong in the store); context copies carry it
to tasks and threads like any variable.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, cast, overload

from ctxlog._context import ContextError

if TYPE_CHECKING:
    import asyncio
    from types import TracebackType

__all__ = ["cache_scope", "memoize"]

P = ParamSpec("P")
R = TypeVar("R")


# Separates positional from keyword arguments in a cache key.
_KWMARK: Final = object()


class _Flight:
    """A sync call in progress: the thread making it, and a future for the others."""

    __slots__ = ("future", "thread")

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class _AsyncFlight:
    """An async call in progress: the task running it and how many callers await it."""

    __slots__ = ("loop", "task", "waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        self.loop = loop
        self.task = task
        self.waiters = 0


class _FnCache:
    """One memoized function's results (and calls in progress) within one scope."""

    __slots__ = ("done", "lock", "lru", "maxsize", "pending")

    def __init__(self, maxsize: int | None) -> None:
        self.lru: OrderedDict[Any, Any] | None = None if maxsize is None else OrderedDict()
        # The same object as `lru` when bounded: reads go through one name.
        self.done: dict[Any, Any] = {} if self.lru is None else self.lru
        self.pending: dict[Any, Any] = {}
        self.lock = threading.Lock()
        self.maxsize = maxsize

    def store(self, key: Any, value: Any) -> None:
        """Keep *value*; call with the lock held."""
        self.done[key] = value
        lru = self.lru
        if lru is not None and self.maxsize is not None and len(lru) > self.maxsize:
            lru.popitem(last=False)

    def touch(self, lru: OrderedDict[Any, Any], key: Any) -> None:
        """Mark *key* as just used in the bounded cache *lru* (``self.lru``)."""
        with self.lock:
            if key in lru:  # unless another thread evicted it meanwhile
                lru.move_to_end(key)


class _Scope:
    """The caches of one ``cache_scope()`` block."""

    __slots__ = ("__weakref__", "caches", "closed", "lock")

    def __init__(self) -> None:
        self.caches: dict[object, _FnCache] = {}
        self.lock = threading.Lock()
        self.closed = False

    def cache_for(self, owner: object, maxsize: int | None) -> _FnCache | None:
        """The cache of the memoized function *owner*; ``None`` once the scope closed."""
        with self.lock:
            if self.closed:
                return None
            cache = self.caches.get(owner)
            if cache is None:
                cache = self.caches[owner] = _FnCache(maxsize)
            return cache

    def close(self) -> None:
        """Drop every cached result; later calls in this scope call through."""
        with self.lock:
            self.closed = True
            self.caches = {}


_SCOPE: Final[ContextVar[_Scope | None]] = ContextVar("ctxlog.cache_scope", default=None)


# --------------------------------------------------------------------------
# cache_scope
# --------------------------------------------------------------------------


class cache_scope:  # noqa: N801 -- a function-like name, as DESIGN.md fixes it
    """Open a memoization scope: ``@memoize`` functions cache inside it.

    Works as ``with cache_scope():``, ``async with cache_scope():`` and as a
    decorator on sync and ``async def`` functions (a new scope per call).  Each
    entry opens a new, empty scope that hides any outer one; leaving it drops
    every result cached in it, even if a thread or task that shares the scope
    is still running (its later calls then call through uncached).

    :raises ContextError: the block is left in another context than it was
        entered in, or the decorator is put on a generator function (open the
        scope inside the generator instead).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_entered",)

    def __init__(self) -> None:
        self._entered: list[tuple[Any, _Scope]] = []

    def __enter__(self) -> None:
        scope = _Scope()
        self._entered.append((_SCOPE.set(scope), scope))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, scope = self._entered.pop()
        scope.close()
        try:
            _SCOPE.reset(token)
        except ValueError:
            msg = (
                "cache_scope() block left in a different context than it was entered in "
                "(another task or thread, or a generator resumed elsewhere); open and close "
                "the scope in the same task."
            )
            raise ContextError(msg) from exc

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate *fn* so every call runs in a new scope."""
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            msg = (
                f"cache_scope() cannot decorate the generator function {fn.__qualname__}: "
                "the scope would end before the first item. Use `with cache_scope():` "
                "inside the generator."
            )
            raise ContextError(msg)
        if inspect.iscoroutinefunction(fn):
            coro_fn = fn

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                scope = _Scope()
                token = _SCOPE.set(scope)
                try:
                    return await coro_fn(*args, **kwargs)
                finally:
                    scope.close()
                    _SCOPE.reset(token)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            scope = _Scope()
            token = _SCOPE.set(scope)
            try:
                return fn(*args, **kwargs)
            finally:
                scope.close()
                _SCOPE.reset(token)

        return wrapper

    def __repr__(self) -> str:
        return "ctxlog.cache_scope()"


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


def _sync_miss(fn: Callable[..., R], cache: _FnCache, key: Any, args: Any, kwargs: Any) -> R:
    """Call, or join the call in progress for *key*, and cache the result."""
    value: R
    with cache.lock:
        try:
            if key in cache.done:
                value = cache.done[key]
                return value
        except TypeError as exc:
            raise _unhashable(fn, exc) from None
        flight: _Flight | None = cache.pending.get(key)
        mine = flight is None
        if flight is None:
            flight = cache.pending[key] = _Flight()
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
        with cache.lock:
            del cache.pending[key]
        flight.future.set_exception(exc)  # the waiters share the outcome; not cached
        raise
    with cache.lock:
        del cache.pending[key]
        cache.store(key, value)
    flight.future.set_result(value)
    return value


def _memoize_sync(fn: Callable[P, R], maxsize: int | None) -> Callable[P, R]:
    owner = object()  # this function's slot in every scope

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        scope = _SCOPE.get()
        if scope is None:
            return fn(*args, **kwargs)
        key = (*args, _KWMARK, *kwargs.items()) if kwargs else args
        cache = scope.caches.get(owner)
        if cache is not None:
            try:
                value: R = cache.done[key]
            except KeyError:
                pass
            except TypeError as exc:
                raise _unhashable(fn, exc) from None
            else:
                if cache.lru is not None:
                    cache.touch(cache.lru, key)
                return value
        cache = scope.cache_for(owner, maxsize)
        if cache is None:  # the scope ended while this thread still runs in it
            return fn(*args, **kwargs)
        return _sync_miss(fn, cache, key, args, kwargs)

    return wrapper


def _async_finished(
    cache: _FnCache, key: Any, flight: _AsyncFlight, task: asyncio.Task[Any]
) -> None:
    with cache.lock:
        if cache.pending.get(key) is flight:
            del cache.pending[key]
        if task.cancelled():
            return
        # Always retrieve the exception: nobody may be left to await it.
        if task.exception() is None:
            cache.store(key, task.result())


async def _async_miss(
    fn: Callable[..., Coroutine[Any, Any, R]], cache: _FnCache, key: Any, args: Any, kwargs: Any
) -> R:
    """Start, or join the task in progress for *key*; the task caches its result."""
    import asyncio  # noqa: PLC0415 -- loaded already by the caller's event loop; kept off `import ctxlog`

    loop = asyncio.get_running_loop()
    value: R
    with cache.lock:
        try:
            if key in cache.done:
                value = cache.done[key]
                return value
        except TypeError as exc:
            raise _unhashable(fn, exc) from None
        flight: _AsyncFlight | None = cache.pending.get(key)
        if flight is None:
            # The call runs as its own task, so that a cancelled caller does not
            # cancel it for the others; it runs in the first caller's context.
            task = loop.create_task(fn(*args, **kwargs))
            flight = cache.pending[key] = _AsyncFlight(loop, task)
            task.add_done_callback(functools.partial(_async_finished, cache, key, flight))
        elif flight.loop is not loop:
            flight = None
    if flight is None:
        # The scope is shared with a thread running another event loop, whose
        # task this loop cannot await: call through, uncached.
        return await fn(*args, **kwargs)
    joined: _AsyncFlight = flight
    joined.waiters += 1
    try:
        value = await asyncio.shield(joined.task)
    finally:
        joined.waiters -= 1
        if joined.waiters == 0 and not joined.task.done():
            # Every caller gave up (was cancelled): stop the call, and let the
            # next caller start a fresh one rather than await a cancelled task.
            with cache.lock:
                if cache.pending.get(key) is joined:
                    del cache.pending[key]
            joined.task.cancel()
    return value


def _memoize_async(
    fn: Callable[P, Coroutine[Any, Any, R]], maxsize: int | None
) -> Callable[P, Coroutine[Any, Any, R]]:
    owner = object()

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        scope = _SCOPE.get()
        if scope is None:
            return await fn(*args, **kwargs)
        key = (*args, _KWMARK, *kwargs.items()) if kwargs else args
        cache = scope.caches.get(owner)
        if cache is not None:
            try:
                value: R = cache.done[key]
            except KeyError:
                pass
            except TypeError as exc:
                raise _unhashable(fn, exc) from None
            else:
                if cache.lru is not None:
                    cache.touch(cache.lru, key)
                return value
        cache = scope.cache_for(owner, maxsize)
        if cache is None:
            return await fn(*args, **kwargs)
        return await _async_miss(fn, cache, key, args, kwargs)

    return wrapper


@overload
def memoize(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def memoize(*, maxsize: int | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def memoize(
    fn: Callable[P, R] | None = None, /, *, maxsize: int | None = None
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Cache a function's results inside the innermost :class:`cache_scope`.

    ``@memoize`` or ``@memoize(maxsize=128)`` on a sync or ``async def``
    function or method.  Inside a scope, a call with the same arguments
    returns the cached result; outside any scope the function is called
    through, uncached.  Concurrent callers of one key in one scope share one
    call in progress: threads (that share the scope through
    :func:`ctxlog.wrap`, :class:`ctxlog.Thread` or ctxlog's executors) wait for
    it; asyncio tasks await it, and the call runs as its own task, so a caller
    that is cancelled does not cancel or fail the others (it is cancelled only
    when every caller is).  An exception reaches every caller sharing the call
    and is not cached: the next call tries again.  *maxsize* bounds the number
    of results one scope keeps for this function (least recently used first
    out); ``None`` keeps all of them until the scope ends.

    Keys are built as :func:`functools.lru_cache` builds them: ``f(1, b=2)``
    and ``f(b=2, a=1)`` are different keys; arguments must be hashable.

    :raises TypeError: (when called) an argument is not hashable; the message
        names the function.
    :raises ContextError: (when decorating) *maxsize* is not a positive int or
        ``None``, or *fn* is a generator function.

    .. versionadded:: 0.1.0
    """
    if maxsize is not None and (
        not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1
    ):
        msg = f"memoize(maxsize={maxsize!r}): give a positive int, or None for no limit."
        raise ContextError(msg)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
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
