"""``InterpreterPoolExecutor``: the submitter's context in a subinterpreter, and its lines back.

A subinterpreter shares no objects with the one that submits to it: no
``ContextVar``, no logger, no handler (PEP 734).  So the context goes in as
a pickled snapshot (as for processes), and each record a task logs comes out
reduced to a pickled dict, with the context it was logged in, through a
``concurrent.interpreters`` queue, which every interpreter can use.  The
submitting interpreter hands each record to its own logger of that name, with
that context bound, so its handlers, filters and formatters write the line as
if it had been logged there.

Kept apart from ``ctxlog._handoff``: it needs ``concurrent.interpreters`` (new
in 3.14), and ``import ctxlog`` loads it only on first use.
"""

from __future__ import annotations

import sys

# On an older Python, ctxlog.InterpreterPoolExecutor raises ImportError before
# importing this module (ctxlog/__init__.py).  The assert also tells mypy, when it
# checks for an older Python, to skip the rest of this module.
assert sys.version_info >= (3, 14), "concurrent.interpreters is new in Python 3.14"

import concurrent.futures
import concurrent.futures.interpreter
import logging
import pickle
import threading
import weakref
from collections.abc import Callable
from concurrent import interpreters
from contextvars import Context, copy_context
from typing import Any, Final, ParamSpec, TypeAlias, TypeVar, cast

from ctxlog._errors import ContextError
from ctxlog._queue import make_picklable
from ctxlog._snapshot import UnpicklablePolicy, call_bound, dump_payload, load_payload
from ctxlog._store import store

__all__ = ["InterpreterPoolExecutor"]

P = ParamSpec("P")
R = TypeVar("R")

# How often the submitting interpreter looks for the lines of a task still
# running.  A task's lines are all handled before its future completes anyway
# (the worker thread drains them), so this only bounds how late a line of a
# long task shows up.
_POLL_SECONDS: Final = 0.02

_PICKLE_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL


# --------------------------------------------------------------------------
# in the worker interpreter
# --------------------------------------------------------------------------

_FORMATTER: Final = logging.Formatter()


class _Sender(logging.Handler):
    """The worker interpreter's root handler: each record, reduced, into the queue."""

    def __init__(self, records: interpreters.Queue) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        try:
            attrs = dict(record.__dict__)
            # As logging.handlers.QueueHandler.prepare(): the message merged with
            # its arguments, the traceback as text; what is left must pickle.
            attrs["msg"] = record.getMessage()
            attrs["args"] = None
            if record.exc_info and not record.exc_text:
                attrs["exc_text"] = _FORMATTER.formatException(record.exc_info)
            attrs["exc_info"] = None
            attrs.pop("message", None)
            make_picklable(attrs)
            context = dump_payload(dict(store.merged()), "str")
            self.records.put((pickle.dumps(attrs, protocol=_PICKLE_PROTOCOL), context))
        except Exception:  # noqa: BLE001 -- logging's rule: a handler never raises into the call
            self.handleError(record)


_sender: _Sender | None = None  # one per interpreter: module globals are


def _install(records: interpreters.Queue, level: int) -> None:
    global _sender  # noqa: PLW0603 -- the one handler this interpreter's root logger gets
    root = logging.getLogger()
    if _sender is None:
        _sender = _Sender(records)
        root.addHandler(_sender)
    else:
        _sender.records = records
    if root.level != level:  # setLevel() empties every logger's cache
        root.setLevel(level)


#: What a task carries besides the call: the way back, the context, the level.  A
#: tuple of shareable objects crosses into the worker interpreter without pickling.
_Meta: TypeAlias = "tuple[interpreters.Queue, bytes, int]"


def _run_task(meta: _Meta, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """Run in the worker interpreter: ``fn(*args, **kwargs)`` with the submitter's
    values bound, in a fresh context dropped afterwards."""
    records, payload, level = meta
    _install(records, level)
    return copy_context().run(call_bound, load_payload(payload), fn, args, kwargs)


# --------------------------------------------------------------------------
# in the submitting interpreter
# --------------------------------------------------------------------------


def _handle(attrs: dict[str, Any]) -> None:
    logger = logging.getLogger(attrs["name"])
    if logger.isEnabledFor(attrs["levelno"]):
        # Made here, with the task's context bound, so that a record factory
        # (ctxlog.install_record_factory) captures that context too.
        logger.handle(logging.makeLogRecord(attrs))


class _Receiver:
    """Hands the records of one executor's tasks to this interpreter's loggers, in order."""

    def __init__(self) -> None:
        self.records = interpreters.create_queue()
        _RECEIVERS[self.records.id] = self
        self._lock = threading.Lock()  # one drain at a time
        self._starting = threading.Lock()  # not the drain's: submit() never waits on a handler
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        with self._starting:
            if self._thread is None and not self._stop.is_set():
                # A weak reference: an executor dropped without shutdown() lets
                # its listener end, as the stdlib's worker threads do.
                self._thread = threading.Thread(
                    target=_listen,
                    args=(weakref.ref(self), self._stop),
                    name="ctxlog-interpreter-lines",
                    daemon=True,
                    context=Context(),
                )
                self._thread.start()

    def stop(self, *, wait: bool) -> None:
        self._stop.set()
        thread = self._thread
        if wait:
            if thread is not None:
                thread.join()
            self.drain()

    def drain(self) -> None:
        """Handle every record queued so far (each get and its handling under
        one lock: two drains never reorder lines)."""
        records = self.records
        with self._lock:
            # empty() first: cheaper than the QueueEmpty a get would raise, and
            # under the lock only this drain takes items out.
            while not records.empty():
                item = records.get_nowait()
                try:
                    record, context = cast("tuple[bytes, bytes]", item)
                    attrs = pickle.loads(record)  # noqa: S301 -- made by _Sender, in this process
                    copy_context().run(call_bound, load_payload(context), _handle, (attrs,), {})
                except Exception:  # one bad record must not stop the lines
                    logging.getLogger(__name__).exception(
                        "ctxlog.InterpreterPoolExecutor: a record from a worker interpreter "
                        "could not be handled"
                    )


#: The receiver of each executor, by the id of its queue (what a task carries).
_RECEIVERS: weakref.WeakValueDictionary[int, _Receiver] = weakref.WeakValueDictionary()


def _listen(receiver_ref: weakref.ref[_Receiver], stop: threading.Event) -> None:
    while not stop.wait(_POLL_SECONDS):
        receiver = receiver_ref()
        if receiver is None:
            return
        receiver.drain()
        del receiver


class _WorkerContext(concurrent.futures.interpreter.WorkerContext):
    """The stdlib's worker, which hands a task's lines on before its future completes."""

    # typeshed still types a task as the (bytes, kind) pair of 3.14's betas.
    def run(self, task: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]) -> Any:  # type: ignore[override]
        try:
            return super().run(task)  # type: ignore[arg-type]
        finally:
            fn, args, _ = task
            receiver = _RECEIVERS.get(args[0][0].id) if fn is _run_task else None
            if receiver is not None:
                receiver.drain()


class InterpreterPoolExecutor(concurrent.futures.InterpreterPoolExecutor):
    """A drop-in `concurrent.futures.InterpreterPoolExecutor` that carries context.

    Each worker runs its tasks in its own subinterpreter, which shares no
    context variables and no logging set-up with the interpreter that submits
    (PEP 734).  This executor bridges both:

    - `submit` (and so `map`) takes a snapshot of the submitter's context
      (as `ctxlog.ProcessPoolExecutor` does) and
      the task runs with exactly those values bound, in a fresh context that is
      dropped afterwards.
    - every line the task logs in its subinterpreter reaches the submitting
      interpreter's logger of the same name, and so its handlers, with the
      context the task logged it in (the submitter's values and whatever the
      task bound).  Levels are those of the submitting interpreter's loggers;
      the message arrives formatted, an exception as its traceback text.  A
      task's lines are all handled before its future completes; those of a
      long task arrive while it runs.

    The function and its arguments travel as for the stdlib executor
    (shareable objects, functions that use no globals, or pickled).  Bound
    values must pickle: by default a value that does not makes `submit` raise
    `ctxlog.ContextError` naming the key; `on_unpicklable="str"`
    sends `str(value)` instead.  Other arguments are the stdlib executor's.

    Needs Python 3.14 or newer: on an older Python, `ctxlog.InterpreterPoolExecutor`
    raises `ImportError`.

    ```python
    import logging

    import ctxlog


    def work(n):
        import logging

        logging.getLogger("app").info("in a subinterpreter: %d", n)
        return n * 2


    ctxlog.configure(level=logging.INFO)
    with ctxlog.InterpreterPoolExecutor(2) as pool, ctxlog.bind(request_id="r-1"):
        print(list(pool.map(work, [1, 2])))  # each line carries request_id r-1
    ```

    *New in version 0.1.0.*

    :raises ContextError: *on_unpicklable* is not `"raise"` or `"str"`.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        on_unpicklable: UnpicklablePolicy = "raise",
    ) -> None:
        if on_unpicklable not in ("raise", "str"):
            msg = (
                f"InterpreterPoolExecutor(on_unpicklable={on_unpicklable!r}): use 'raise' or 'str'."
            )
            raise ContextError(msg)
        super().__init__(max_workers, thread_name_prefix, initializer, initargs)
        self.on_unpicklable: UnpicklablePolicy = on_unpicklable
        self._receiver = _Receiver()

    @classmethod
    def prepare_context(
        cls, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]
    ) -> tuple[Callable[[], _WorkerContext], Callable[..., Any]]:
        """The stdlib's hook for the worker's set-up; not for callers."""
        return _WorkerContext.prepare(initializer, initargs)  # type: ignore[arg-type]  # typeshed: no None

    def submit(
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)`` in a worker interpreter, with the
        caller's context bound there.

        *New in version 0.1.0.*

        :raises ContextError: a bound value cannot be pickled (unless
            ``on_unpicklable="str"``).
        :raises RuntimeError: the executor is shut down or broken.
        """
        payload = dump_payload(dict(store.merged()), self.on_unpicklable)
        meta: _Meta = (self._receiver.records, payload, _lowest_level())
        # A worker thread started during this call must not inherit the caller's
        # context (3.14's thread_inherit_context): hand it an empty one.
        submit = cast("Callable[..., concurrent.futures.Future[R]]", super().submit)
        future = Context().run(submit, _run_task, meta, fn, *args, **kwargs)
        self._receiver.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut down as the stdlib executor does; with *wait*, every line of every
        task has been handled when it returns.

        *New in version 0.1.0.*
        """
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self._receiver.stop(wait=wait)


# Not a level: Logger.isEnabledFor() never looks this key up.
_LOWEST_KEY: Final = "ctxlog.lowest_level"


def _lowest_level() -> int:
    """The lowest level any logger of this interpreter is set to: below it, a line
    would be dropped here anyway, so the worker interpreter does not send it."""
    # Kept in the root logger's level cache, which logging empties whenever a level
    # changes anywhere (setLevel, logging.disable, dictConfig: Manager._clear_cache),
    # so the loggers are scanned once per change rather than once per task.
    cache = vars(logging.root).get("_cache")
    cached = cache.get(_LOWEST_KEY) if isinstance(cache, dict) else None
    if cached is not None:
        return cast("int", cached)
    manager = logging.root.manager
    levels = [logging.root.level]
    levels += [
        logger.level
        for logger in list(manager.loggerDict.values())
        if isinstance(logger, logging.Logger) and logger.level
    ]
    lowest = max(min(levels), manager.disable + 1 if manager.disable else 0)
    if isinstance(cache, dict):
        cache[_LOWEST_KEY] = lowest
    return lowest
