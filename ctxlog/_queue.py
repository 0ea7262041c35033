"""``QueueHandler``: records that carry the caller's context across a queue.

Kept apart from `ctxlog._handoff` because `logging.handlers` is a
heavy import; ``ctxlog.QueueHandler`` loads this module on first use.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue as queue_mod
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ctxlog._projection import ConflictPolicy
from ctxlog._snapshot import picklable
from ctxlog._values import safe_str
from ctxlog.stdlib import ContextFilter

__all__ = ["QueueHandler", "make_picklable"]

# Values that pickle (and log) as themselves: no need to try pickling them.
_SIMPLE_TYPES: Final = frozenset({str, int, float, bool, type(None)})


def _pickle_safe(value: Any) -> Any:
    """*value* if it pickles, else a copy in which what does not pickle is ``str()``-ed."""
    if picklable(value):
        return value
    if isinstance(value, dict):
        return {key: _pickle_safe(item) for key, item in value.items()}
    return safe_str(value)


def make_picklable(attrs: dict[str, Any]) -> None:
    """Replace, in place, each value of a record's *attrs* that does not pickle
    by a copy that does (its ``str()``, or a dict with such values)."""
    for key, value in list(attrs.items()):
        if type(value) not in _SIMPLE_TYPES:
            safe = _pickle_safe(value)
            if safe is not value:
                attrs[key] = safe


class QueueHandler(logging.handlers.QueueHandler):
    """A `logging.handlers.QueueHandler` that carries the context with the record.

    It captures the context when the record is handled, on the thread that
    logs (a [`ctxlog.ContextFilter`][ctxlog.ContextFilter] built from *fields*, *defaults*,
    *nest_under* and *on_conflict* is attached), so the
    `QueueListener`'s handlers, on their own thread,
    write the right fields.

    When the queue pickles what it carries (a `multiprocessing` queue;
    *picklable* ``None`` detects it: anything but `queue.Queue` and
    `queue.SimpleQueue`), every record attribute that cannot be pickled,
    such as a bound lock or connection, is replaced by its ``str()`` before the
    record is queued.  A plain ``QueueHandler`` would hand such a record to the
    queue's feeder thread, which fails to pickle it and drops it.

    *New in version 0.1.0.*

    :raises ContextError: a filter option is invalid.
    """

    def __init__(
        self,
        queue: Any,
        *,
        fields: Iterable[str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        nest_under: str | None = None,
        on_conflict: ConflictPolicy = "rename",
        picklable: bool | None = None,
    ) -> None:
        super().__init__(queue)
        self.addFilter(
            ContextFilter(
                fields=fields, defaults=defaults, nest_under=nest_under, on_conflict=on_conflict
            )
        )
        if picklable is None:
            picklable = not isinstance(queue, queue_mod.Queue | queue_mod.SimpleQueue)
        self.picklable = picklable

    def prepare(self, record: logging.LogRecord) -> Any:
        """Format the message into the record (as the base class does), then make
        every attribute picklable if the queue pickles.

        *New in version 0.1.0.*
        """
        prepared = super().prepare(record)
        if self.picklable and isinstance(prepared, logging.LogRecord):
            make_picklable(prepared.__dict__)
        return prepared
