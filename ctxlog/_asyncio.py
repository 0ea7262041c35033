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
import inspect
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


def _takes_context(factory: Any) -> bool:
    """Whether *factory* accepts ``context=`` (a parameter of that name, or ``**kwargs``)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        # No signature to read (a C callable): asyncio itself passes context= to
        # any factory when create_task() is given one, so assume it takes it.
        return True
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == "context" and p.kind is not p.POSITIONAL_ONLY)
        for p in parameters
    )


def _remembering_factory(previous: Any) -> Any:
    # create_task() calls a factory as (loop, coro) unless it was given a
    # context, so a (loop, coro) factory keeps working as long as the wrapper
    # adds context= only where the factory takes it.
    previous_takes_context = previous is None or _takes_context(previous)

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Future[Any]:
        given = kwargs.get("context")
        # An empty Context is falsy: only None means "none given".
        ctx = copy_context() if given is None else given
        if previous_takes_context and sys.version_info >= (3, 11):
            kwargs["context"] = ctx
        task: asyncio.Future[Any] = (
            previous(loop, coro, **kwargs)
            if previous is not None
            else asyncio.Task(coro, loop=loop, **kwargs)
        )
        # A (loop, coro) factory's task copies the current context itself, so
        # ctx holds the same values (not what the task binds later).
        _created_in[task] = ctx
        return task

    factory.ctxlog_previous = previous  # type: ignore[attr-defined]  # for a second install()
    return factory


def install_asyncio_handler(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Make asyncio's "Task exception was never retrieved" and "Exception in
    callback" lines carry the context of the task or callback that failed.

    Sets `ctxlog.asyncio_exception_handler` on
    *loop* (default: the running loop).  On Python 3.10 and 3.11, where a task
    does not give its context away, it also wraps the loop's task factory (the
    default one, or the one already set) to remember the context each task runs
    in.  The wrapper keeps ``create_task()``'s meaning: a task given
    ``context=`` (an empty ``contextvars.Context()`` too) runs in that context,
    and a factory that takes only ``(loop, coro)`` is still called that way.
    On 3.10, and with such a factory, the line has the values the task was
    created with, not what the task bound itself later.
    Call it at start-up, inside the loop: ``asyncio.run(main())`` with
    ``ctxlog.install_asyncio_handler()`` first in ``main``; a task factory set
    after it replaces the wrapper.

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
