"""``ProcessPoolExecutor``: the submitter's context, pickled, bound in the worker process.

Kept apart from `ctxlog._handoff` because it imports `multiprocessing`,
which ``import ctxlog`` should not pay for; ``ctxlog.ProcessPoolExecutor`` loads
this module on first use.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
from collections.abc import Callable
from contextvars import Context, copy_context
from typing import Any, ParamSpec, TypeVar

from ctxlog._errors import ContextError
from ctxlog._snapshot import UnpicklablePolicy, call_bound, dump_payload, load_payload
from ctxlog._store import store

__all__ = ["ProcessPoolExecutor"]

P = ParamSpec("P")
R = TypeVar("R")


def _call_with_payload(
    payload: bytes, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> R:
    """Run in the worker process: bind the submitter's values around ``fn``."""
    data = load_payload(payload)
    return copy_context().run(call_bound, data, fn, args, kwargs)


class ProcessPoolExecutor(concurrent.futures.ProcessPoolExecutor):
    """A drop-in `concurrent.futures.ProcessPoolExecutor` that carries context.

    [`submit`][ctxlog._process.ProcessPoolExecutor.submit] (and so `map`, per chunk) takes a
    [`snapshot`][ctxlog.snapshot] of
    the submitter's context and sends its values with the call; the worker
    process runs the call with exactly those values bound, in a fresh context
    that is dropped afterwards.  Works with every start method (``fork``,
    ``spawn``, ``forkserver``); processes are started in an empty context, so a
    forked worker does not inherit the submitter's values either.

    Bound values must be picklable.  By default a value that is not makes
    [`submit`][ctxlog._process.ProcessPoolExecutor.submit] raise
    [`ContextError`][ctxlog.ContextError] naming the key (nothing is lost
    silently); ``on_unpicklable="str"`` sends ``str(value)`` instead.  A value
    that cannot be unpickled in the worker (a class the worker cannot import)
    fails that call with a [`ContextError`][ctxlog.ContextError], never the pool.

    All other arguments are those of `concurrent.futures.ProcessPoolExecutor`.

    *New in version 0.1.0.*

    :raises ContextError: *on_unpicklable* is not ``"raise"`` or ``"str"``.
    """

    def __init__(
        self, *args: Any, on_unpicklable: UnpicklablePolicy = "raise", **kwargs: Any
    ) -> None:
        if on_unpicklable not in ("raise", "str"):
            msg = f"ProcessPoolExecutor(on_unpicklable={on_unpicklable!r}): use 'raise' or 'str'."
            raise ContextError(msg)
        super().__init__(*args, **kwargs)
        self.on_unpicklable: UnpicklablePolicy = on_unpicklable

    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)`` in a worker, with the caller's context bound.

        *New in version 0.1.0.*

        :raises ContextError: a bound value cannot be pickled (unless
            ``on_unpicklable="str"``).
        :raises RuntimeError: the executor is shut down or broken.
        """
        payload = dump_payload(dict(store.merged()), self.on_unpicklable)
        # Processes forked during this call copy the calling thread's context:
        # fork them from an empty one.
        return Context().run(super().submit, _call_with_payload, payload, fn, args, kwargs)
