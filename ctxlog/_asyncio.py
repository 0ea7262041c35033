"""asyncio's own error lines in the context of the work that failed.

asyncio logs "Task exception was never retrieved" when a failed task is
collected and "Exception in callback ..." when a callback raises, through
its default exception handler, on the ``asyncio`` logger, in whatever context
is current then: the failing task's request id is not there.
[`install_asyncio_handler`][ctxlog._asyncio.install_asyncio_handler] gives the loop a handler that
runs the
default one inside the failing task's (or callback's) context.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Callable, Coroutine
from contextvars import Context, copy_context
from typing import Any

from ctxlog._errors import ContextError

__all__ = ["asyncio_exception_handler", "install_asyncio_handler"]

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]

# Before 3.12 a task does not give its context away (Task.get_context()): the
# task factory install_asyncio_handler() sets keeps the one each task is
# created in.
_created_in: weakref.WeakKeyDictionary[asyncio.Future[Any], Context] = weakref.WeakKeyDictionary()


def _context_of(context: dict[str, Any]) -> Context | None:
    for key in ("task", "future"):
        task = context.get(key)
        if task is not None:
            get_context = getattr(task, "get_context", None)
            if get_context is not None:
                found: Context = get_context()
                return found
            return _created_in.get(task)
    handle = context.get("handle")
    found_ctx = getattr(handle, "_context", None)  # asyncio.Handle keeps it, every version
    return found_ctx if isinstance(found_ctx, Context) else None


def asyncio_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """An asyncio exception handler: the loop's default one, run inside the
    context of the task or callback that failed, so its line carries that
    work's request id.

    For ``loop.set_exception_handler()``;
    [`install_asyncio_handler`][ctxlog._asyncio.install_asyncio_handler] sets it.

    *New in version 0.1.0.*
    """
    ctx = _context_of(context)
    if ctx is None:
        loop.default_exception_handler(context)
        return
    try:
        ctx.run(loop.default_exception_handler, context)
    except RuntimeError:  # that context is running elsewhere right now
        loop.default_exception_handler(context)


def _remembering_factory(previous: Any) -> Any:
    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Future[Any]:
        ctx = kwargs.get("context") or copy_context()
        if sys.version_info >= (3, 11):
            kwargs["context"] = ctx
        task: asyncio.Future[Any] = (
            previous(loop, coro, **kwargs)
            if previous is not None
            else asyncio.Task(coro, loop=loop, **kwargs)
        )
        _created_in[task] = ctx
        return task

    factory.ctxlog_previous = previous  # type: ignore[attr-defined]  # for a second install()
    return factory


def install_asyncio_handler(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Make asyncio's "Task exception was never retrieved" and "Exception in
    callback" lines carry the context of the task or callback that failed.

    Sets [`asyncio_exception_handler`][ctxlog._asyncio.asyncio_exception_handler] on *loop*
    (default: the running
    loop).  On Python 3.10 and 3.11, where a task does not give its context
    away, it also wraps the loop's task factory to remember the context each
    task is created in (what the task bound itself after that is not there).
    Call it at start-up, inside the loop: ``asyncio.run(main())`` with
    ``ctxlog.install_asyncio_handler()`` first in ``main``.

    *New in version 0.1.0.*

    :raises ContextError: no loop is given and none is running.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            msg = (
                "install_asyncio_handler(): no event loop is running; call it inside the "
                "loop (first thing in main()) or pass the loop."
            )
            raise ContextError(msg) from None
    loop.set_exception_handler(asyncio_exception_handler)
    if sys.version_info < (3, 12):
        current = loop.get_task_factory()
        if not hasattr(current, "ctxlog_previous"):
            loop.set_task_factory(_remembering_factory(current))
