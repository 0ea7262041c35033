"""Handing the context over to other threads: ``wrap``, ``Thread``, ``ThreadPoolExecutor``.

Everything here follows one rule, the one `asyncio.to_thread` follows:
copy the context in the caller, run the work inside the copy (``ctx.run``) in
the worker, one fresh copy per hand-over.  A `contextvars.Context` is
never entered by two threads at once ("cannot enter context") and a worker
never keeps one task's context for the next.  A copy shares the unit of work
of the context it was made from: what the work annotates reaches the unit.
"""

from __future__ import annotations

import concurrent.futures
import functools
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from contextvars import Context, copy_context
from typing import Any, ParamSpec, TypeVar, cast

from ctxlog._context import AsyncIsolated, Isolated, run_awaitable_in
from ctxlog._errors import ContextError

__all__ = ["Thread", "ThreadPoolExecutor", "wrap"]

P = ParamSpec("P")
R = TypeVar("R")


# --------------------------------------------------------------------------
# wrap
# --------------------------------------------------------------------------


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """Return *fn* bound to a copy of the current context, as it is now.

    Every call of the result runs in its own fresh copy of that context, so it
    can be called from many threads at once (never "cannot enter context"),
    and what one call binds never reaches the next.  ``async def`` functions
    run each step of the awaited body in the copy; generator functions (sync
    and async) run each step of the iteration in the copy (as
    [`ctxlog.isolate`][ctxlog.isolate] does).  ``functools.wraps`` keeps the name and
    signature.

    *New in version 0.1.0.*
    """
    if not callable(fn):
        msg = f"wrap() takes a function (or any callable), not {type(fn).__name__}."
        raise ContextError(msg)
    import inspect  # noqa: PLC0415 -- costly to import; see ctxlog._context.bind

    ctx = copy_context()
    if inspect.isasyncgenfunction(fn):
        agen_fn = fn

        @functools.wraps(fn)
        def agen_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            own = ctx.copy()
            return AsyncIsolated(own.run(agen_fn, *args, **kwargs), own)

        return cast("Callable[P, R]", agen_wrapper)
    if inspect.isgeneratorfunction(fn):
        gen_fn = fn

        @functools.wraps(fn)
        def gen_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            own = ctx.copy()
            return Isolated(own.run(gen_fn, *args, **kwargs), own)

        return cast("Callable[P, R]", gen_wrapper)
    if inspect.iscoroutinefunction(fn):
        coro_fn = fn

        @functools.wraps(fn)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return await run_awaitable_in(ctx.copy(), functools.partial(coro_fn, *args, **kwargs))

        return cast("Callable[P, R]", async_wrapper)

    copy = ctx.copy

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if kwargs:
            return copy().run(fn, *args, **kwargs)
        return copy().run(fn, *args)  # type: ignore[call-arg]  # P.args alone: no keywords given

    return wrapper


# --------------------------------------------------------------------------
# Thread
# --------------------------------------------------------------------------


class _RunIn:
    """Stands in for ``thread.run`` until it is called, then runs it in *ctx*
    (``None``: in the context the thread already runs in, 3.14's own)."""

    __slots__ = ("_ctx", "_run", "_thread")

    def __init__(self, thread: Thread, ctx: Context | None, run: Callable[[], object]) -> None:
        self._thread: Thread | None = thread
        self._ctx = ctx
        self._run: Callable[[], object] | None = run

    def __call__(self) -> None:
        thread, ctx, run = self._thread, self._ctx, self._run
        # Let go of everything at once: a finished thread keeps no reference to
        # the context (or the values) of the work it ran.
        self._thread = self._ctx = self._run = None
        if thread is None or run is None:
            msg = "ctxlog.Thread: run() was already handed over to the started thread."
            raise RuntimeError(msg)
        vars(thread).pop("run", None)
        if ctx is not None:
            ctx.run(_run_reporting, thread, run)
        else:  # pragma: no cover -- 3.14+ runs in .ci/pythons, uncovered
            try:
                _run_reporting(thread, run)
            finally:
                # threading keeps context= for the thread object's life: let go
                # of the one running now (it ends with this call).
                vars(thread)["_context"] = Context()


def _run_reporting(thread: threading.Thread, run: Callable[[], object]) -> None:
    """Run *run*; an exception it lets out reaches ``threading.excepthook`` here,
    inside the thread's context, so a hook that logs writes the context too.

    (Left to ``threading``, the hook would run after the context is gone.)
    """
    try:
        run()
    except BaseException:  # noqa: BLE001 -- every exception, as threading reports them
        exc_type, exc_value, exc_tb = sys.exc_info()
        try:
            threading.excepthook(threading.ExceptHookArgs((exc_type, exc_value, exc_tb, thread)))
        finally:
            del exc_type, exc_value, exc_tb  # no reference cycle through the traceback


class Thread(threading.Thread):
    """A `threading.Thread` that runs in a copy of the caller's context.

    The copy is taken when [`start`][ctxlog.Thread.start] is called, in the thread that calls
    it: the Python 3.14 semantics (``sys.flags.thread_inherit_context``), on
    every supported version and whatever that flag says.  On 3.14+ the thread
    runs it through ``threading.Thread``'s own ``context=``.  ``run()`` overridden
    in a subclass runs in the copy too, and so does `threading.excepthook`
    for an exception the thread lets out (a hook that logs writes the
    context).  Pass ``context=`` to run in a given
    `contextvars.Context` instead (as on 3.14; it must not be entered
    elsewhere at the same time).

    *New in version 0.1.0.*

    :raises RuntimeError: [`start`][ctxlog.Thread.start] is called twice (as for any thread).
    """

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
        context: Context | None = None,
    ) -> None:
        if context is not None and not isinstance(context, Context):
            msg = (
                f"ctxlog.Thread(context=...) takes a contextvars.Context, not "
                f"{type(context).__name__}; leave it out to run in a copy of the caller's."
            )
            raise ContextError(msg)
        if sys.version_info >= (3, 14):  # pragma: no cover -- 3.14+ runs in .ci/pythons, uncovered
            super().__init__(group, target, name, args, kwargs, daemon=daemon, context=context)
        else:
            super().__init__(group, target, name, args, kwargs, daemon=daemon)
        self._ctxlog_context = context
        self._ctxlog_started = False

    def start(self) -> None:
        """Start the thread in a copy of the calling thread's current context.

        *New in version 0.1.0.*

        :raises RuntimeError: the thread was already started.
        """
        if self._ctxlog_started:
            msg = "threads can only be started once"
            raise RuntimeError(msg)
        self._ctxlog_started = True
        ctx = self._ctxlog_context
        self._ctxlog_context = None
        if ctx is None:
            ctx = copy_context()
        if sys.version_info >= (3, 14):  # pragma: no cover -- 3.14+ runs in .ci/pythons, uncovered
            # threading.Thread runs run() in the context= it was given, kept as
            # _context (Lib/threading.py); left None, start() would pick one by
            # sys.flags.thread_inherit_context.  The copy made here decides.
            vars(self)["_context"] = ctx
            ctx = None
        # Stand in for run() on the instance, so that a subclass's run() is
        # covered as well as a target, and an exception it lets out reaches
        # threading.excepthook inside the context.
        vars(self)["run"] = _RunIn(self, ctx, self.run)
        try:
            super().start()
        except BaseException:
            vars(self).pop("run", None)
            raise


# --------------------------------------------------------------------------
# executors
# --------------------------------------------------------------------------


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A drop-in `concurrent.futures.ThreadPoolExecutor` that carries context.

    [`submit`][ctxlog.ThreadPoolExecutor.submit] (and so `map`) copies the submitter's context and
    runs
    the call inside that copy in the worker: one fresh copy per submission,
    dropped when the call returns, so a worker never keeps one task's context
    for the next.  Worker threads themselves start in an empty context (the
    ``initializer`` runs there).

    As the event loop's default executor it makes
    ``loop.run_in_executor(None, fn)`` carry the context, which plain asyncio
    does not:

    ```python
    loop.set_default_executor(ctxlog.ThreadPoolExecutor())
    ```

    *New in version 0.1.0.*
    """

    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)`` in a copy of the caller's context.

        *New in version 0.1.0.*

        :raises RuntimeError: the executor is shut down.
        """
        # A worker thread started during this call must not inherit the caller's
        # context (Python 3.14+ threads can): hand it an empty one.
        submit = super().submit
        work = functools.partial(copy_context().run, fn, *args, **kwargs)
        return Context().run(submit, work)
