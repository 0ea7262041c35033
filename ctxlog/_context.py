"""The core API over the store: bind, unbind, set/reset, get/current, register,
units of work (``scope``/``annotate``) and generators in a private context.

Every function here reads and writes the context through
`ctxlog._store.store`; none touches the ContextVar itself.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Mapping,
)
from contextvars import Context, ContextVar, copy_context
from types import MappingProxyType, TracebackType
from typing import (
    Any,
    ClassVar,
    Final,
    Generic,
    ParamSpec,
    TypeVar,
    cast,
    overload,
)

from ctxlog._errors import ContextError, check_key
from ctxlog._store import UNIT, UnitEntry, VarToken, store

__all__ = [
    "GENERATOR_HINT",
    "AsyncIsolated",
    "Binding",
    "ContextError",
    "Isolated",
    "Reusable",
    "Token",
    "aisolate",
    "annotate",
    "bind",
    "cache_scope",
    "clear",
    "current",
    "get",
    "isolate",
    "register",
    "reset",
    "run_awaitable_in",
    "scope",
    "set",
    "unbind",
    "unregister",
]

P = ParamSpec("P")
R = TypeVar("R")
Y = TypeVar("Y")
S = TypeVar("S")
E = TypeVar("E")

GENERATOR_HINT: Final = (
    "The usual cause is a bind() held across a `yield`: the generator was resumed or "
    "closed in another context (another task, thread or consumer). Wrap the generator "
    "with ctxlog.isolate() / ctxlog.aisolate(), or bind inside the generator without "
    "yielding while the block is open."
)


# --------------------------------------------------------------------------
# registry of foreign ContextVars
# --------------------------------------------------------------------------


def register(var: ContextVar[Any], name: str | None = None) -> None:
    """Merge a foreign `ContextVar` into the context under *name*.

    *name* defaults to ``var.name``.  The variable is read each time the context
    is read (by [`current`][ctxlog.current], [`get`][ctxlog.get], the logging filter and
    processors);
    while it is unset and has no default it is skipped.  A value bound with
    [`bind`][ctxlog.bind] (or annotated with [`annotate`][ctxlog.annotate]) under the same name wins
    over the registered variable.  Registering the same variable again changes
    its name.

    *New in version 0.1.0.*

    :raises ContextError: *var* is not a ContextVar, or *name* is empty or
        already used by another registered variable.
    """
    if not isinstance(var, ContextVar):
        msg = f"register() takes a contextvars.ContextVar, not {type(var).__name__}."
        raise ContextError(msg)
    key = var.name if name is None else name
    check_key(key, "register")
    store.add_provider(var, key, "register")


def unregister(var: ContextVar[Any]) -> None:
    """Stop merging *var*, registered with [`register`][ctxlog.register].

    *New in version 0.1.0.*

    :raises ContextError: *var* is not registered.
    """
    store.remove_provider(var, "unregister")


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------


def get(key: str, default: Any = None) -> Any:
    """Return the value bound (annotated, or registered) under *key*, else *default*.

    *New in version 0.1.0.*
    """
    return store.value(key, default)


def current() -> Mapping[str, Any]:
    """Return a read-only snapshot of the whole context (bound, annotated and
    registered values).

    The mapping never changes afterwards, whatever is bound later.

    *New in version 0.1.0.*
    """
    merged = store.merged()
    # The store's own mapping when nothing is merged; a copy otherwise.
    return MappingProxyType(merged if isinstance(merged, dict) else dict(merged))


# --------------------------------------------------------------------------
# tokens, set / reset / clear
# --------------------------------------------------------------------------


class Token:
    """Returned by [`set`][ctxlog.set] and [`clear`][ctxlog.clear]; pass it to
    [`reset`][ctxlog.reset].

    A token can be used once, in the context it was created in.  It is also a
    context manager that resets itself on leaving the block, as
    `contextvars.Token` is from Python 3.14 on (here on every version):

    ```python
    with ctxlog.set(request_id="r-1"):
        ...  # bound here; restored on leaving, also on an exception
    ```

    *New in version 0.1.0.*
    """

    __slots__ = ("_token", "_used")

    def __init__(self, token: VarToken[dict[str, Any]]) -> None:
        self._token = token
        self._used = False

    @property
    def used(self) -> bool:
        """True once the token has been passed to [`reset`][ctxlog.reset].

        *New in version 0.1.0.*
        """
        return self._used

    def __repr__(self) -> str:
        state = "used" if self._used else "unused"
        return f"<ctxlog.Token {state} at {id(self):#x}>"

    def __enter__(self) -> Token:
        return self

    def __exit__(self, *exc_info: object) -> None:
        reset(self)


def set(**values: Any) -> Token:  # noqa: A001 -- the public name of the API
    """Bind *values* until [`reset`][ctxlog.reset] is called with the returned token.

    The imperative form of [`bind`][ctxlog.bind], for hook-style code (a "before request"
    and an "after request" callback).  Prefer ``with bind(...)`` where a block
    fits.

    *New in version 0.1.0.*

    :raises ContextError: a key is empty.
    """
    if "" in values:
        check_key("", "set")
    return Token(store.bind(values))


def clear() -> Token:
    """Empty the bound context; returns a token that [`reset`][ctxlog.reset] restores.

    Registered variables are not touched (they belong to their owners), and
    neither is the unit of work: its annotated values stay until it ends.

    *New in version 0.1.0.*
    """
    return Token(store.replace({}))


def reset(token: Token) -> None:
    """Restore the context to what it was before the [`set`][ctxlog.set] or [`clear`][ctxlog.clear]
    that returned *token*.

    *New in version 0.1.0.*

    :raises ContextError: *token* was already reset, was created in another
        context (another task or thread), or is not a ctxlog token.
    """
    if not isinstance(token, Token):
        msg = (
            f"reset() takes the token returned by ctxlog.set() or ctxlog.clear(), "
            f"not {type(token).__name__}."
        )
        raise ContextError(msg)
    if token._used:
        msg = (
            "This ctxlog token was already reset once; a token restores the context "
            "only once. Keep one reset() per set() (for example in a finally: block)."
        )
        raise ContextError(msg)
    try:
        store.restore(token._token)
    except ValueError:
        msg = (
            "This ctxlog token was created in a different context (another asyncio "
            "task, thread or contextvars.Context) and cannot be reset here. Reset it "
            "in the task or thread that called set(), or use `with ctxlog.bind(...)` "
            "so that set and reset always pair up."
        )
        raise ContextError(msg) from None
    except RuntimeError:  # pragma: no cover -- _used guards this; kept for tokens shared by copy
        msg = "This ctxlog token was already reset once."
        raise ContextError(msg) from None
    token._used = True


# --------------------------------------------------------------------------
# bind / unbind / scope: context managers and decorators
# --------------------------------------------------------------------------


class Reusable(Generic[E]):
    """A reusable, reentrant context manager that is also a decorator.

    Each entry pushes what `_push` returns on a per-object list, so one
    object can be entered by several tasks or threads at once and each leaves
    its own entry; a decorated function gets a fresh entry per call.

    Subclasses provide `_push` (make the change, return what undoes it),
    `_pop` (undo one entry; raise `ValueError` or
    `RuntimeError`, before changing anything, when the entry was made
    in another context), `_pop_foreign` (leave an entry made in another
    context: raise, or restore what can be) and `_generators`.
    """

    __slots__ = ("_entries",)

    _entries: list[E]

    #: A decorated generator function runs in a private context for the whole
    #: iteration (see [`isolate`][ctxlog.isolate]) when this is None; otherwise decorating
    #: one raises ContextError with this message, formatted with its qualname.
    _generators: ClassVar[str | None] = None

    #: Whether an exception leaving the block marks the innermost unit of work
    #: as failed (``scope``: the unit it opened).
    _marks_failure: ClassVar[bool] = False

    def _push(self) -> E:
        raise NotImplementedError

    def _pop(self, entry: E) -> None:
        raise NotImplementedError

    def _pop_foreign(self, entry: E, exc: BaseException | None) -> None:
        raise NotImplementedError

    def __enter__(self) -> None:
        self._entries.append(self._push())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entries = self._entries
        entry = entries[-1]
        try:
            self._pop(entry)
        except (ValueError, RuntimeError):  # another context's (RuntimeError: just used)
            self._pop_own(exc)
            return
        # Not pop(): another task or thread using this same object may have
        # entered since, and its entry stays until it leaves.  remove() finds
        # this very entry: tokens (and entries made of them) compare by identity.
        entries.remove(entry)

    def _pop_own(self, exc: BaseException | None) -> None:
        """Leave the newest entry made in the current context.

        One object used as ``with`` by several tasks or threads at once holds
        their entries interleaved, and the others enter and leave while this
        runs: so every entry of a copy of the list is tried, newest first.  An
        entry leaves only in the context that made it (the others' raise
        before changing anything), and within one context the newest entry
        leaves first.
        """
        entries = self._entries
        for entry in reversed(entries.copy()):
            try:
                self._pop(entry)
            except (ValueError, RuntimeError):
                continue
            entries.remove(entry)
            return
        # None is: this block was entered elsewhere (held across a yield).  Drop
        # the newest entry, as a lone object would, so that an enclosing block of
        # this same object still restores what it found.
        self._pop_foreign(entries.pop(), exc)

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
        """Decorate *fn* so that each call runs inside a fresh entry of this object.

        ``async def`` functions are wrapped around the awaited body; generator
        functions (sync and async) run in a private context for the whole
        iteration (see [`isolate`][ctxlog.isolate]), or are refused.
        """
        # Imported here: inspect costs more to import than the rest of ctxlog's core.
        import inspect  # noqa: PLC0415

        push, pop, pop_foreign = self._push, self._pop, self._pop_foreign
        fails = self._marks_failure
        is_agen = inspect.isasyncgenfunction(fn)
        if is_agen or inspect.isgeneratorfunction(fn):
            if self._generators is not None:
                raise ContextError(self._generators.format(fn.__qualname__))
            gen_fn = fn

            @functools.wraps(fn)
            def gen_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                ctx = copy_context()
                ctx.run(push)
                gen = gen_fn(*args, **kwargs)
                return AsyncIsolated(gen, ctx) if is_agen else Isolated(gen, ctx)

            return gen_wrapper
        if inspect.iscoroutinefunction(fn):
            coro_fn = fn

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                entry = push()
                try:
                    return await coro_fn(*args, **kwargs)
                except Exception:
                    if fails:
                        store.fail()
                    raise
                finally:
                    try:
                        pop(entry)
                    except (ValueError, RuntimeError):  # resumed in another context
                        pop_foreign(entry, None)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            entry = push()
            try:
                return fn(*args, **kwargs)
            except Exception:
                if fails:
                    store.fail()
                raise
            finally:
                try:
                    pop(entry)
                except (ValueError, RuntimeError):  # pragma: no cover -- a call ends where it began
                    pop_foreign(entry, None)

        return wrapper


_bind_over: Final = store.bind
_read: Final = store.read
_write: Final = store.write
_restore: Final = store.restore


class Binding(Reusable[VarToken[dict[str, Any]]]):
    """Shared machinery of [`bind`][ctxlog.bind], [`unbind`][ctxlog.unbind] and
    ``Snapshot.apply()``:
    an entry is the store token of what `_push` bound."""

    __slots__ = ()

    _pop = staticmethod(store.restore)  # type: ignore[assignment]  # the same call, as a builtin

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Reusable.__exit__ with _pop() written out, and bind.__enter__ with
        # _push() and store.bind(): together 8-11 % less per ``with bind(2 keys)``
        # (benchmarks/bench_core.py, "ctxlog.bind" against "the generic path").
        entries = self._entries
        token = entries[-1]
        try:
            _restore(token)
        except (ValueError, RuntimeError):  # another context's token (RuntimeError: just used)
            self._pop_own(exc)
            return
        entries.remove(token)

    def _pop_foreign(
        self,
        entry: VarToken[dict[str, Any]],  # noqa: ARG002 -- another context's token undoes nothing here
        exc: BaseException | None,
    ) -> None:
        msg = (
            f"{type(self).__name__}() block left in a different context than it was "
            f"entered in, so the previous context cannot be restored. {GENERATOR_HINT}"
        )
        raise ContextError(msg) from exc


class bind(Binding):  # noqa: N801 -- a function-like name, as the API fixes it
    """Bind *values* for the duration of a block or of each call of a function.

    Works as ``with bind(...)``, ``async with bind(...)`` and as a decorator on
    sync and ``async def`` functions (a fresh binding per call, held around the
    awaited body).  Nested binds merge and the inner value wins; leaving the
    block restores exactly the previous context, also when an exception
    propagates.

    ```python
    with ctxlog.bind(request_id="r-1"):
        assert ctxlog.get("request_id") == "r-1"
    assert ctxlog.get("request_id") is None
    ```

    *New in version 0.1.0.*

    :raises ContextError: a key is empty, or the block is left in another context
        than it was entered in (a bind held across ``yield``; see [`isolate`][ctxlog.isolate]).
    """

    __slots__ = ("_values",)

    def __init__(self, **values: Any) -> None:
        if "" in values:
            check_key("", "bind")
        # This object's own ``**values`` dict, never mutated: over an empty
        # context the store may hold it as it is.
        self._values = values
        self._entries = []

    def _push(self) -> VarToken[dict[str, Any]]:
        return _bind_over(self._values)

    def __enter__(self) -> None:
        # Reusable.__enter__ with _push() and store.bind() written out; see
        # Binding.__exit__.  Over an empty context the mapping is this object's
        # own ``**values`` dict, never mutated.
        old = _read()
        self._entries.append(_write({**old, **self._values} if old else self._values))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"ctxlog.bind({args})"


class unbind(Binding):  # noqa: N801 -- see bind
    """Hide *keys* for the duration of a block or of each call; restore them after.

    Same shapes as [`bind`][ctxlog.bind].  Hiding a key that is not bound is allowed.
    A registered variable or an annotated value of that name is hidden too.

    *New in version 0.1.0.*

    :raises ContextError: a key is not a non-empty string.
    """

    __slots__ = ("_keys",)

    def __init__(self, *keys: str) -> None:
        for key in keys:
            check_key(key, "unbind")
        self._keys = keys
        self._entries = []

    def _push(self) -> VarToken[dict[str, Any]]:
        return store.hide(self._keys)

    def __repr__(self) -> str:
        return f"ctxlog.unbind({', '.join(map(repr, self._keys))})"


class scope(Reusable[UnitEntry]):  # noqa: N801 -- see bind
    """Open a **unit of work**: what a request, a Celery task or one job of a
    worker loop is.

    Works as ``with scope(...)``, ``async with scope(...)`` and as a decorator
    on sync and ``async def`` functions (a new unit per call).  It binds
    *values* as [`bind`][ctxlog.bind] does, and the unit owns two things for as long
    as it is open:

    * its **request-wide values**, added with [`annotate`][ctxlog.annotate] from any task or
      thread working for it, also from copies of the context made before the
      call (a thread started earlier, a FastAPI sync dependency running in the
      thread pool), and carried by [`ctxlog.snapshot`][ctxlog.snapshot], ctxlog's executors
      and [`ctxlog.celery`][ctxlog.celery] like bound values;
    * its **memoize cache**: ``@memoize`` functions cache inside the innermost
      unit (``cache_scope()`` is another name for ``scope()``).

    A unit opened inside another starts with the outer unit's annotated
    values.  Leaving it restores the previous context and drops its values
    and its cache, even if a thread or task that shares it is still running
    (its lines keep the values it had; its memoized calls call through).

    The ASGI, WSGI and Django middlewares open one per request, and
    [`ctxlog.celery`][ctxlog.celery] one per task.

    *New in version 0.1.0.*

    :raises ContextError: a key is empty, the block is left in another context
        than it was entered in, or the decorator is put on a generator
        function (open the unit inside the generator instead).
    """

    __slots__ = ("_values",)

    _generators = (
        "scope() cannot decorate the generator function {}: the unit would end before "
        "the first item. Use `with ctxlog.scope():` inside the generator."
    )

    def __init__(self, **values: Any) -> None:
        if "" in values:
            check_key("", "scope")
        self._values = values
        self._entries = []

    def _push(self) -> UnitEntry:
        return store.open_unit(self._values)

    _pop = staticmethod(store.close_unit)

    # Failed work: what waits for the unit's outcome (tail sampling) hears it.
    _marks_failure = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, Exception):
            store.fail()
        super().__exit__(exc_type, exc, tb)

    def _pop_foreign(self, entry: UnitEntry, exc: BaseException | None) -> None:
        store.end(entry[UNIT])
        msg = (
            "scope() block left in a different context than it was entered in "
            "(another task or thread, or a generator resumed elsewhere); open and close "
            "the unit of work in the same task."
        )
        raise ContextError(msg) from exc

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"ctxlog.scope({args})"


cache_scope: Final = scope
"""Another name for [`scope`][ctxlog.scope]: ``with cache_scope():`` opens a unit of
work, whose memoize cache is what ``@memoize`` uses.

*New in version 0.1.0.*
"""


def annotate(**values: Any) -> None:
    """Add *values* to the innermost unit of work (see [`scope`][ctxlog.scope]).

    Every line logged for the unit from then on carries them, from whichever
    task or thread logs it, including threads started and context copies made
    before the call.  A value bound with [`bind`][ctxlog.bind] under the same key wins
    inside its block; leaving the unit drops the annotated values; units never
    share them.  Safe to call from many threads at once: nothing is lost.

    *New in version 0.1.0.*

    :raises ContextError: a key is empty, no unit of work is open (open one
        with [`scope`][ctxlog.scope], or use [`bind`][ctxlog.bind]), or the unit has ended.
    """
    for key in values:
        check_key(key, "annotate")
    unit = store.annotate(values)
    if unit is None:
        msg = (
            "annotate() needs a unit of work, and none is open here. Open one with "
            "`with ctxlog.scope(...):` (the web middlewares and ctxlog.celery open one per "
            "request and task), or bind the values with `with ctxlog.bind(...):` instead."
        )
        raise ContextError(msg)
    if not unit.open:
        msg = (
            "annotate(): the unit of work this code runs for has already ended (the "
            "request or task returned while this thread or task went on); nothing was "
            "added. Bind the values with ctxlog.bind() for work that outlives its unit."
        )
        raise ContextError(msg)


# --------------------------------------------------------------------------
# generators in a private context
# --------------------------------------------------------------------------


class Isolated(Generator[Y, S, R]):
    """A generator whose every step runs in one private `Context`."""

    __slots__ = ("_ctx", "_gen")

    def __init__(self, gen: Generator[Y, S, R], ctx: Context) -> None:
        self._gen = gen
        self._ctx = ctx

    def send(self, value: S) -> Y:
        return self._ctx.run(self._gen.send, value)

    def throw(self, *args: Any) -> Y:
        return self._ctx.run(self._gen.throw, *args)

    def close(self) -> None:
        self._ctx.run(self._gen.close)

    def __del__(self) -> None:
        # Finalize the generator in its own context: left to the garbage
        # collector, it would be closed in whatever context is current, where a
        # bind() held across a yield cannot be undone (ContextError).
        self.close()

    def __repr__(self) -> str:
        return f"ctxlog.isolate({self._gen!r})"


def isolate(gen: Generator[Y, S, R]) -> Generator[Y, S, R]:
    """Run every step of *gen* in one private copy of the current context.

    A ``bind`` inside the generator then neither leaks to the consumer between
    steps nor fails with a token error when the generator is closed from
    another task or thread.  The private context is copied when ``isolate`` is
    called: the generator sees what was bound then, not what the consumer binds
    later.

    *New in version 0.1.0.*

    :raises ContextError: *gen* is not a generator object (pass ``gen()``, not
        ``gen``).
    """
    if not isinstance(gen, Generator):
        hint = " (call the generator function: isolate(gen()))" if callable(gen) else ""
        msg = f"isolate() takes a generator object, not {type(gen).__name__}{hint}."
        raise ContextError(msg)
    return Isolated(gen, copy_context())


class AsyncIsolated(AsyncGenerator[Y, S]):
    """An async generator whose every step runs in one private `Context`."""

    __slots__ = ("__weakref__", "_agen", "_ctx", "_hooked")

    def __init__(self, agen: AsyncGenerator[Y, S], ctx: Context, *, hooked: bool = False) -> None:
        self._agen = agen
        self._ctx = ctx
        self._hooked = hooked

    def _step(self, method: Callable[..., Awaitable[Any]], *args: Any) -> Awaitable[Any]:
        """Make the awaitable of one step; the first step also hooks finalization.

        The event loop closes async generators it finds abandoned (garbage, or
        still open at ``shutdown_asyncgens()``) in a task of its own, outside the
        private context, where a bind() held across a yield fails.  So the loop
        is given this wrapper instead, and the inner generator a finalizer that
        hands the loop a wrapper: either way it is closed in its context.
        """
        if self._hooked:
            return method(*args)
        self._hooked = True
        hooks = sys.get_asyncgen_hooks()
        if hooks.finalizer is None:
            return method(*args)
        finalizer = functools.partial(_finalize_isolated, self._ctx, hooks.finalizer)
        sys.set_asyncgen_hooks(firstiter=None, finalizer=finalizer)
        try:
            step = method(*args)  # the inner generator's hooks are set up here
        finally:
            sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=hooks.finalizer)
        if hooks.firstiter is not None:
            hooks.firstiter(self)
        return step

    def asend(self, value: S) -> Coroutine[Any, Any, Y]:
        return run_awaitable_in(self._ctx, self._step, self._agen.asend, value)

    def athrow(self, *args: Any) -> Coroutine[Any, Any, Y]:
        return run_awaitable_in(self._ctx, self._step, self._agen.athrow, *args)

    def aclose(self) -> Coroutine[Any, Any, None]:
        return run_awaitable_in(self._ctx, self._step, self._agen.aclose)

    def __repr__(self) -> str:
        return f"ctxlog.aisolate({self._agen!r})"


def _finalize_isolated(
    ctx: Context, loop_finalizer: Callable[[Any], object], agen: AsyncGenerator[Any, Any]
) -> None:
    """The inner generator of an abandoned [`aisolate`][ctxlog.aisolate] wrapper is being
    collected: let the event loop close it, in its private context."""
    loop_finalizer(AsyncIsolated(agen, ctx, hooked=True))


async def run_awaitable_in(ctx: Context, make: Callable[..., Awaitable[R]], *args: Any) -> R:
    """Await ``make(*args)``, running each of its steps inside *ctx*.

    Works under any event loop: it drives the awaitable's iterator itself and
    only forwards what it yields to the loop.
    """
    it = ctx.run(lambda: make(*args).__await__())
    send_value: Any = None
    throw_exc: BaseException | None = None
    while True:
        try:
            if throw_exc is not None:
                exc, throw_exc = throw_exc, None
                yielded = ctx.run(it.throw, exc)
            else:
                yielded = ctx.run(it.send, send_value)
        except StopIteration as stop:
            return cast("R", stop.value)
        try:
            send_value = await _Yield(yielded)
        except BaseException as exc:  # noqa: BLE001 -- forwarded into the awaitable, as await does
            throw_exc = exc


class _Yield:
    """An awaitable that yields one value to the event loop and returns what it sends."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, Any, Any]:
        return (yield self._value)


def aisolate(agen: AsyncGenerator[Y, S]) -> AsyncGenerator[Y, S]:
    """Async counterpart of [`isolate`][ctxlog.isolate]: every step of *agen* (``asend``,
    ``athrow``, ``aclose``) runs in one private copy of the current context.

    *New in version 0.1.0.*

    :raises ContextError: *agen* is not an async generator object.
    """
    if not isinstance(agen, AsyncGenerator):
        hint = " (call the generator function: aisolate(agen()))" if callable(agen) else ""
        msg = f"aisolate() takes an async generator object, not {type(agen).__name__}{hint}."
        raise ContextError(msg)
    return AsyncIsolated(agen, copy_context())
