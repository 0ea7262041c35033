"""Tail sampling: hold a unit of work's quiet lines until its outcome is known.

A unit of work (a request, a task, a job: [`scope`][ctxlog.scope]) knows when
it ends and whether it failed (an exception, a 5xx response: the store's
``fail`` verb).  [`Sampler`][ctxlog._sampling.Sampler] holds the lines logged
below a level for each open unit, and when the unit ends writes them (it
failed, or it is kept) or drops them.  The stdlib handler
[`TailSamplingHandler`][ctxlog.TailSamplingHandler] and the structlog
processor ``ctxlog.structlog.TailSampling`` are two faces of it.
"""

from __future__ import annotations

import contextvars
import logging
import logging.handlers
import threading
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from ctxlog._errors import ContextError
from ctxlog._store import Unit, store

__all__ = ["Sampler", "TailSamplingHandler", "keeps"]

#: What a held line becomes when it is written: a function of nothing.
Emit = Callable[[], None]

# The state of one unit in one sampler.
_HOLD: Final = 0  # lines below hold_below are held
_PASS: Final = 1  # flushed or kept: everything goes through
_DROP: Final = 2  # ended cleanly: lines below hold_below are dropped

#: How many held lines one sampler keeps across all its open units, at most
#: this many times its per-unit capacity, so memory stays bounded however many
#: units are open: past it, quiet lines are written at once instead of held.
_UNITS_AT_CAPACITY: Final = 100


def keeps(fraction: float, request_id: object) -> bool:
    """Whether the unit of *request_id* is among the *fraction* kept.

    Decided from the id alone (CRC-32 of its UTF-8 bytes), so every process
    and service that sees the same id decides the same.
    """
    if fraction >= 1.0:
        return True
    if fraction <= 0.0 or request_id is None:
        return False
    data = str(request_id).encode("utf-8", "surrogatepass")
    return zlib.crc32(data) < fraction * 4294967296.0


class _Held:
    __slots__ = ("dropped", "items", "mode")

    def __init__(self, mode: int, capacity: int) -> None:
        self.mode = mode
        self.items: deque[Emit] = deque(maxlen=capacity)
        self.dropped = 0


def _check_level(value: object, name: str, where: str) -> int:
    if isinstance(value, str):
        level = logging.getLevelName(value.upper())
        if isinstance(level, int):
            return level
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    msg = f"{where}({name}={value!r}): give a level (logging.INFO, 'info', 20)."
    raise ContextError(msg)


class Sampler:
    """The per-unit holding and the decision, shared by the stdlib handler and
    the structlog processor.

    :param notice: makes the line that says how many held lines were dropped,
        given that number and the oldest line still held (the notice is
        written in its context); it is written first when a unit's lines are.
    """

    __slots__ = (
        "_lock",
        "_total",
        "_units",
        "capacity",
        "flush_on",
        "hold_below",
        "keep",
        "key",
        "notice",
        "trace_key",
    )

    def __init__(
        self,
        *,
        hold_below: int | str,
        flush_on: int | str,
        keep: float,
        capacity: int,
        key: str,
        trace_key: str,
        notice: Callable[[int, Emit | None], Emit | None],
        where: str,
    ) -> None:
        self.hold_below = _check_level(hold_below, "hold_below", where)
        self.flush_on = _check_level(flush_on, "flush_on", where)
        if isinstance(keep, bool) or not isinstance(keep, int | float) or not 0.0 <= keep <= 1.0:
            msg = f"{where}(keep={keep!r}): give the fraction of units to keep, 0.0 to 1.0."
            raise ContextError(msg)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            msg = f"{where}(capacity={capacity!r}): give a positive int."
            raise ContextError(msg)
        for name, option in (("key", key), ("trace_key", trace_key)):
            if not isinstance(option, str) or not option:
                msg = f"{where}({name}={option!r}): give a non-empty context key."
                raise ContextError(msg)
        self.keep = float(keep)
        self.capacity = capacity
        self.key = key
        self.trace_key = trace_key
        self.notice = notice
        self._lock = threading.Lock()
        self._total = 0

    def offer(self, level: int, unit: Unit, emit: Emit) -> bool:  # noqa: PLR0911 -- one per outcome
        """Hold *emit* for *unit*, or say it goes through now (``False``).

        A line at or above ``flush_on`` writes what was held first (here, in
        order), then goes through.
        """
        if level >= self.hold_below and level < self.flush_on:
            return False
        kept = unit.kept
        state = None if kept is None else kept.get(self)
        if state is None:
            state = self._start(unit)
        flushed: list[Emit] | None = None
        with self._lock:
            mode = state.mode
            if mode == _PASS:
                return False
            if level >= self.flush_on:
                if mode == _DROP:
                    return False
                flushed = self._take(state, _PASS)
            elif mode == _DROP:
                return True  # the unit ended cleanly: its late quiet lines go with it
            else:
                items = state.items
                if len(items) == self.capacity:
                    state.dropped += 1  # the deque lets its oldest go
                elif self._total >= self.capacity * _UNITS_AT_CAPACITY:
                    # Over the whole budget (very many open units): the line is
                    # written now rather than held; memory stays bounded.
                    return False
                else:
                    self._total += 1
                items.append(emit)
                return True
        self._write(flushed, state)
        return False

    def _start(self, unit: Unit) -> _Held:
        """The state of a unit seen for the first time: kept or held."""
        mode = _PASS if self._kept(unit) else _HOLD
        with self._lock:
            # Held on the unit itself: a unit nobody ends (a leaked one) takes
            # its lines with it when it goes.
            kept = unit.kept
            if kept is None:
                kept = unit.kept = {}
            found: _Held | None = kept.get(self)
            if found is not None:
                return found
            state = kept[self] = _Held(mode, self.capacity)
        if mode == _HOLD and not store.on_end(unit, self._ended):
            # Ended already (a thread still logging for it): its outcome is known.
            state.mode = _PASS if unit.failed else _DROP
        return state

    def _kept(self, unit: Unit) -> bool:
        flags = unit.trace_flags
        source = store.trace_source
        if source is not None:
            trace_id = store.value(self.trace_key)
            if trace_id is not None:
                flags = source(str(trace_id)) or flags
        if flags:
            try:
                if int(flags, 16) & 1:
                    return True  # the trace is sampled: keep its lines with it
            except ValueError:
                pass
        request_id = store.value(self.key)
        if request_id is None:
            request_id = store.value(self.trace_key)
        return keeps(self.keep, request_id)

    def _take(self, state: _Held, mode: int) -> list[Emit]:
        """Under the lock: what *state* held, emptied, and its new *mode*."""
        items = list(state.items)
        state.items.clear()
        self._total -= len(items)
        state.mode = mode
        return items

    def _ended(self, unit: Unit) -> None:
        """The store's call when *unit* ends: write or drop what it held."""
        kept = unit.kept
        state = None if kept is None else kept.get(self)
        if state is None:
            return
        with self._lock:
            if state.mode != _HOLD:
                return
            if unit.failed:
                items = self._take(state, _PASS)
            else:
                self._take(state, _DROP)
                state.dropped = 0
                return
        self._write(items, state)

    def _write(self, items: list[Emit], state: _Held) -> None:
        dropped, state.dropped = state.dropped, 0
        if dropped:
            notice = self.notice(dropped, items[0] if items else None)
            if notice is not None:
                items.insert(0, notice)
        for emit in items:
            _write_one(emit)

    def held(self) -> int:
        """How many lines are held now, across all units."""
        return self._total


def _write_one(emit: Emit) -> None:
    try:
        emit()
    except Exception:  # noqa: BLE001 -- one broken line must not cost the others
        import sys  # noqa: PLC0415 -- only on this rare path
        import traceback  # noqa: PLC0415 -- same

        sys.stderr.write("ctxlog: a held log record could not be written:\n")
        traceback.print_exc(file=sys.stderr)


class TailSamplingHandler(logging.handlers.MemoryHandler):
    """Holds a unit of work's quiet records until the unit's outcome is known.

    Wraps *target*, any handler.  Inside a unit of work ([`scope`][ctxlog.scope];
    each request of ctxlog's middlewares, each task or job of its queue
    integrations), a record below *hold_below* is held for that unit; other
    records go straight to *target*.  A record at or above *flush_on*, or the
    unit ending in failure (an exception; a 5xx response from a middleware),
    writes the unit's held records to *target* first, in order, and from then
    on the unit's records go straight through.  A unit that ends cleanly drops
    its held records, unless it is kept:

    - *keep* is the fraction of units kept, decided from the unit's request id
      (*key*), or its trace id (*trace_key*) when it has none, alone: every
      process and service keeps the same requests;
    - a unit whose incoming ``traceparent`` (or current OpenTelemetry span)
      says "sampled" is kept, so the trace and its lines agree.

    At most *capacity* records are held per unit, the oldest dropped first; the
    flush then writes a ``WARNING`` from logger ``ctxlog.sampling`` saying how
    many were dropped.  Across all open units the handler holds at most 100
    times *capacity* records; past that, records are written at once rather
    than held (memory stays bounded, nothing is lost).  A held record is written with the context it
    was logged in (the filters of *target* see that context).  Records from
    threads, pools and tasks that work for the unit (ctxlog's handoff, or a
    copied context) are held in that unit; outside any unit records pass
    straight through.  A record logged for a unit that has already ended follows
    the unit's outcome.

    From ``dictConfig`` (the handler named as the target is set up first):

    ```python
    import logging.config

    logging.config.dictConfig({
        "version": 1,
        "handlers": {
            "json": {"class": "logging.StreamHandler"},
            "sampled": {"class": "ctxlog.TailSamplingHandler", "target": "json",
                        "hold_below": "WARNING", "keep": 0.01},
        },
        "root": {"handlers": ["sampled"], "level": "INFO"},
    })
    ```

    *New in version 0.1.0.*

    :raises ContextError: an option is invalid.
    """

    def __init__(
        self,
        target: logging.Handler | None = None,
        *,
        hold_below: int | str = logging.WARNING,
        flush_on: int | str = logging.ERROR,
        keep: float = 0.0,
        capacity: int = 1000,
        key: str = "request_id",
        trace_key: str = "trace_id",
    ) -> None:
        if target is not None and not isinstance(target, logging.Handler):
            msg = f"TailSamplingHandler(target={target!r}): give a logging.Handler."
            raise ContextError(msg)
        self.sampler = Sampler(
            hold_below=hold_below,
            flush_on=flush_on,
            keep=keep,
            capacity=capacity,
            key=key,
            trace_key=trace_key,
            notice=self._notice,
            where="TailSamplingHandler",
        )
        super().__init__(capacity, flushLevel=self.sampler.flush_on, target=target)

    @property
    def hold_below(self) -> int:
        return self.sampler.hold_below

    @property
    def flush_on(self) -> int:
        return self.sampler.flush_on

    @property
    def keep(self) -> float:
        return self.sampler.keep

    def handle(self, record: logging.LogRecord) -> Any:
        """Run this handler's filters, then hold *record* or pass it to the target."""
        rv = self.filter(record)
        if not rv:
            return rv
        if isinstance(rv, logging.LogRecord):  # 3.12+: a filter may return a new record
            record = rv
        unit = store.unit()
        if unit is None or not self.sampler.offer(
            record.levelno, unit, _Deferred(self, record, contextvars.copy_context())
        ):
            self._pass(record)
        return rv

    def _pass(self, record: logging.LogRecord) -> None:
        target = self.target
        if target is not None and record.levelno >= target.level:
            target.handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        """Hold or pass *record* (``handle()`` is the usual way in)."""
        self.handle(record)

    def shouldFlush(self, record: logging.LogRecord) -> bool:  # noqa: N802, ARG002 -- logging's name and signature
        """Never: what is held is written per unit of work, not by the buffer."""
        return False

    def flush(self) -> None:
        """Flush the target; held records wait for their unit's outcome."""
        target = self.target
        if target is not None:
            target.flush()

    def _notice(self, dropped: int, oldest: Emit | None) -> Emit:
        record = logging.LogRecord(
            "ctxlog.sampling",
            logging.WARNING,
            __file__,
            0,
            "%d earlier records of this unit of work were not kept (capacity %d per unit)",
            (dropped, self.sampler.capacity),
            None,
        )
        ctx = oldest.ctx if isinstance(oldest, _Deferred) else contextvars.copy_context()
        return _Deferred(self, record, ctx.copy())

    def __repr__(self) -> str:
        sampler = self.sampler
        return (
            f"<ctxlog.TailSamplingHandler target={self.target!r} "
            f"hold_below={logging.getLevelName(sampler.hold_below)} "
            f"flush_on={logging.getLevelName(sampler.flush_on)} keep={sampler.keep} "
            f"capacity={sampler.capacity}>"
        )


class _Deferred:
    """A held record: written later, in the context it was logged in."""

    __slots__ = ("ctx", "handler", "record")

    def __init__(
        self, handler: TailSamplingHandler, record: logging.LogRecord, ctx: contextvars.Context
    ) -> None:
        self.handler = handler
        self.record = record
        self.ctx = ctx
        # The message as it was: its arguments may change before it is written.
        if record.args:
            record.msg = record.getMessage()
            record.args = None

    def __call__(self) -> None:
        self.ctx.run(self.handler._pass, self.record)
