"""Testing support: capture the lines a block logs, check them, and isolate tests.

* :func:`capture` collects every record logged inside a ``with`` block as a
  dict: ``message``, ``level``, ``logger`` and the context the line carried.
* :func:`check`, :func:`assert_every_line_has` and :func:`assert_no_crossing`
  are the checks of ``python -m ctxlog check``, over captured lines or parsed
  JSON lines.
* :class:`Isolation` is what the pytest plugin (:mod:`ctxlog.pytest_plugin`,
  registered by the installed package) does around every test: start from a
  clean context, then undo and report whatever the test left behind.

Nothing here needs pytest; ``import ctxlog.testing`` loads the standard
library only.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Final

from ctxlog._check import CheckReport, ProblemKind, check_records
from ctxlog._projection import Projection
from ctxlog._store import UNIT_KEY, store
from ctxlog.stdlib import RESERVED_ATTRS

__all__ = [
    "CheckReport",
    "Isolation",
    "assert_every_line_has",
    "assert_no_crossing",
    "capture",
    "check",
]

#: The keys every captured line has; a context key of the same name is kept
#: as ``ctx_<key>``.
LINE_KEYS: Final = frozenset({"message", "level", "logger"})

# structlog's private keys in an event dict handed to the stdlib.
_STRUCTLOG_META: Final = frozenset({"_record", "_from_structlog", "_logger", "_name"})


class _CaptureHandler(logging.Handler):
    """Appends one dict per record it handles."""

    def __init__(self, out: list[dict[str, Any]]) -> None:
        super().__init__(logging.NOTSET)
        self.out = out
        self._projection = Projection(reserved=LINE_KEYS, where="capture")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.line(record)
        except Exception:  # noqa: BLE001 -- as any handler: report, never raise into the call
            self.handleError(record)
            return
        self.out.append(line)

    def line(self, record: logging.LogRecord) -> dict[str, Any]:
        """The dict for *record*: the context, then what the call itself gave."""
        out: dict[str, Any] = dict(self._projection.current())
        given: Mapping[str, Any]
        if isinstance(record.msg, dict):  # a structlog event routed through the stdlib
            event = record.msg
            message = str(event.get("event", ""))
            given = {k: v for k, v in event.items() if k != "event" and k not in _STRUCTLOG_META}
        else:
            message = record.getMessage()
            given = {
                k: v
                for k, v in vars(record).items()
                if k not in RESERVED_ATTRS and k not in out and not k.startswith("_")
            }
        out.update(given)  # extra= and structlog keywords win, as on a JSON line
        out.update(message=message, level=record.levelname, logger=record.name)
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:  # a record that crossed a queue or an interpreter: text only
            out["exception"] = record.exc_text
        return out


@contextlib.contextmanager
def capture(
    *, level: int | str | None = None, logger: str | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Collect every record logged inside the block, one dict each.

    Each dict holds ``message`` (the formatted message; a structlog event's
    ``event``), ``level`` (``"INFO"``), ``logger`` (its name), the context
    the line carried (read on the thread that logs, as
    :class:`ctxlog.ContextFilter` reads it), and the values the call passed
    itself (``extra=``, structlog keywords), which win; ``exception`` holds
    the formatted traceback when there is one.  stdlib records and structlog
    events routed through the stdlib (``structlog.stdlib.LoggerFactory``)
    alike.

    The handler goes on the root logger (or *logger*), so it sees what
    propagates there; *level*, when given, is set on that logger for the
    block.  Everything is removed on exit.

    .. versionadded:: 0.1.0
    """
    out: list[dict[str, Any]] = []
    handler = _CaptureHandler(out)
    target = logging.getLogger(logger)
    old_level = target.level
    target.addHandler(handler)
    if level is not None:
        target.setLevel(level.upper() if isinstance(level, str) else level)
    try:
        yield out
    finally:
        target.removeHandler(handler)
        if level is not None:
            target.setLevel(old_level)


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


def check(
    lines: Iterable[Mapping[str, Any]],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
) -> CheckReport:
    """The check of ``python -m ctxlog check`` over *lines* (captured dicts,
    or parsed JSON lines): which lack *key*, and which mention another line's id.

    .. versionadded:: 0.1.0
    """
    return check_records(lines, key=key, ignore_loggers=ignore_loggers)


def assert_every_line_has(
    lines: Iterable[Mapping[str, Any]],
    key: str = "request_id",
    *,
    ignore_loggers: Collection[str] = (),
) -> None:
    """Fail (``AssertionError``) when a line lacks *key* (or holds a filter default).

    .. versionadded:: 0.1.0
    """
    _fail_on(check(lines, key=key, ignore_loggers=ignore_loggers), "missing", f"carry no {key}")


def assert_no_crossing(
    lines: Iterable[Mapping[str, Any]],
    key: str = "request_id",
    *,
    ignore_loggers: Collection[str] = (),
) -> None:
    """Fail (``AssertionError``) when a line mentions the *key* of another unit of
    work than its own.

    .. versionadded:: 0.1.0
    """
    _fail_on(check(lines, key=key, ignore_loggers=ignore_loggers), "crossed", "cross units of work")


def _fail_on(report: CheckReport, kind: ProblemKind, what: str) -> None:
    """Raise AssertionError naming the first lines with problems of *kind*."""
    found = [p for p in report.problems if p.kind == kind]
    if found:
        shown = "; ".join(f"{p.where}: {p.detail}" for p in found[:10])
        msg = f"{len(found)} of {report.lines} lines {what}: {shown}"
        raise AssertionError(msg)


# --------------------------------------------------------------------------
# isolation
# --------------------------------------------------------------------------


#: The integrations whose ``install()`` changes process-wide state.
_HOOKS: Final = ("celery", "otel", "structlog")


def _installed(module: str) -> bool:
    """Whether ``ctxlog.<module>.install()`` is in effect (never imports it)."""
    loaded = sys.modules.get(f"ctxlog.{module}")
    return bool(loaded is not None and loaded.installed())


def _uninstall(module: str) -> None:
    sys.modules[f"ctxlog.{module}"].uninstall()


class Isolation:
    """A clean context from :meth:`start` on; :meth:`finish` undoes what was left.

    Between the two, the code under test may bind, set, annotate, register
    and install what it likes; :meth:`finish` restores the context and the
    process-wide state (registered variables, the record factory, the
    ``install()`` of ``ctxlog.celery``, ``ctxlog.otel`` and ``ctxlog.structlog``)
    and returns a description of each thing that had been left behind.  Call
    both in the same context (thread or task).

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_clean", "_factory", "_hooks", "_names", "_state", "_token")

    def __init__(self) -> None:
        self._token: Any = None

    def start(self) -> None:
        """Save the process-wide state and start from an empty context."""
        self._state = store.save()
        self._names = store.provider_names()
        self._factory = logging.getLogRecordFactory()
        self._hooks = {name for name in _HOOKS if _installed(name)}
        self._token = store.detach({})
        self._clean = store.read()

    def finish(self) -> list[str]:
        """Undo what was left since :meth:`start`; say what it was."""
        leaks: list[str] = []
        raw = store.read()
        if raw is not self._clean:
            keys = sorted(k for k in raw if k != UNIT_KEY)
            if keys:
                leaks.append(
                    f"context keys still bound: {', '.join(keys)} (a set() never reset, "
                    "or a bind() block never left)"
                )
            if UNIT_KEY in raw:
                leaks.append("a unit of work still open (a scope() never left)")
        for name in sorted(set(_HOOKS) - self._hooks):
            if _installed(name):
                leaks.append(f"ctxlog.{name}.install() still in effect")
                _uninstall(name)  # first: its own providers are not the test's registrations
        added = sorted(store.provider_names() - self._names)
        if added:
            leaks.append(f"still registered: {', '.join(added)} (register() without unregister())")
        factory = logging.getLogRecordFactory()
        if factory is not self._factory:
            if type(factory).__module__ == "ctxlog.stdlib":
                leaks.append("ctxlog's record factory still installed")
            else:
                leaks.append(f"another record factory installed: {factory!r}")
            logging.setLogRecordFactory(self._factory)
        try:
            store.reattach(self._token)
        except (ValueError, RuntimeError):  # finished in another context
            store.detach({})
        store.load(self._state)
        return leaks
