"""Testing support: capture the lines a block logs, check them, and isolate tests.

* [`capture`][ctxlog.testing.capture] collects every record logged inside a ``with`` block as a
  dict: ``message``, ``level``, ``logger`` and the context the line carried.
* [`check`][ctxlog.testing.check], [`assert_every_line_has`][ctxlog.testing.assert_every_line_has]
  and [`assert_no_crossing`][ctxlog.testing.assert_no_crossing]
  are the checks of ``python -m ctxlog check``, over captured lines or parsed
  JSON lines.
* [`Isolation`][ctxlog.testing.Isolation] is what the pytest plugin (`ctxlog.pytest_plugin`,
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

from ctxlog._check import OUTSIDE_LOGGERS, CheckReport, ProblemKind, check_records
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

LINE_KEYS: Final = frozenset({"message", "level", "logger"})
"""The keys every captured line has; a context key of the same name is kept
as ``ctx_<key>``.
"""

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


EVERY_LEVEL: Final = 1
"""The level [`capture`][ctxlog.testing.capture] sets by default: the lowest there is, so every
record is made (``NOTSET`` would make a named logger inherit its parent's).
"""


@contextlib.contextmanager
def capture(
    *, level: int | str | None = None, logger: str | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Collect every record logged inside the block, one dict each.

    Each dict holds ``message`` (the formatted message; a structlog event's
    ``event``), ``level`` (``"INFO"``), ``logger`` (its name), the context
    the line carried (read on the thread that logs, as
    [`ContextFilter`][ctxlog.ContextFilter] reads it), and the values the
    call passed itself (``extra=``, structlog keywords), which win;
    ``exception`` holds the formatted traceback when there is one.  stdlib
    records and structlog events routed through the stdlib
    (``structlog.stdlib.LoggerFactory``) alike.

    The handler goes on the root logger (or *logger*), so it sees what
    propagates there.  Every level is captured: for the block, that logger's
    own level is set to the lowest there is, so every logger that inherits
    its level from it (one whose level is ``NOTSET``) logs everything, and a
    ``logging.disable()`` in force is lifted.  A logger below it whose own
    level is set keeps that level: what it drops is never made, so listen on
    it (``logger="app"``) to see its every level.  *level* narrows it
    instead: that level is set on the logger and on the handler, so records
    below it are left out whichever logger made them.  The levels and the
    handler are put back exactly on exit (a ``NOTSET`` logger is ``NOTSET``
    again).

    *New in version 0.1.0.*
    """
    out: list[dict[str, Any]] = []
    handler = _CaptureHandler(out)
    target = logging.getLogger(logger)
    if level is not None:
        handler.setLevel(level.upper() if isinstance(level, str) else level)
    wanted = handler.level or EVERY_LEVEL
    old_level = target.level
    old_disable = logging.root.manager.disable
    target.addHandler(handler)
    target.setLevel(wanted)
    if old_disable >= wanted:
        logging.disable(wanted - 1)
    try:
        yield out
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)
        if old_disable >= wanted:
            logging.disable(old_disable)


# --------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------


def check(
    lines: Iterable[Mapping[str, Any]],
    *,
    key: str = "request_id",
    ignore_loggers: Collection[str] = (),
    outside_loggers: Collection[str] = OUTSIDE_LOGGERS,
) -> CheckReport:
    """The check of ``python -m ctxlog check`` over *lines* (captured dicts,
    or parsed JSON lines): which lack *key*, and which name another line's id.

    The report is ``ok`` only when there was at least one line: an empty
    capture is a test that looked at nothing.  Lines of *outside_loggers*
    (the servers' own loggers by default) without an id and without a
    traceback are counted as ``outside`` requests, not as missing; lines of
    *ignore_loggers* are not looked at.  Nothing printed from a report can
    hold a raw control character: every value from a line is escaped.

    *New in version 0.1.0.*
    """
    return check_records(
        lines, key=key, ignore_loggers=ignore_loggers, outside_loggers=outside_loggers
    )


def assert_every_line_has(
    lines: Iterable[Mapping[str, Any]],
    key: str = "request_id",
    *,
    ignore_loggers: Collection[str] = (),
) -> None:
    """Fail (``AssertionError``) when a line lacks *key* (or holds a filter default).

    *New in version 0.1.0.*
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

    *New in version 0.1.0.*
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


def _save_hook(module: str) -> object:
    """How ``ctxlog.<module>`` is installed, its options included."""
    save = getattr(sys.modules[f"ctxlog.{module}"], "_save_state", None)
    # ctxlog.otel keeps its installation in the store, saved with the store's state.
    return None if save is None else save()


def _load_hook(module: str, state: object) -> None:
    """Install ``ctxlog.<module>`` again as `_save_hook` found it."""
    load = getattr(sys.modules[f"ctxlog.{module}"], "_load_state", None)
    if load is not None:
        load(state)


class Isolation:
    """A clean context from [`start`][ctxlog.testing.Isolation.start] on;
    [`finish`][ctxlog.testing.Isolation.finish] undoes what was left.

    Between the two, the code under test may bind, set, annotate, register,
    install and uninstall what it likes; [`finish`][ctxlog.testing.Isolation.finish] restores the
    context
    and the process-wide state (registered variables, the record factory, the
    ``install()`` of ``ctxlog.celery``, ``ctxlog.otel`` and ``ctxlog.structlog``,
    both ways: one installed at [`start`][ctxlog.testing.Isolation.start] is installed again, with
    the
    options it had, one installed since is uninstalled) and returns a
    description of each thing that had been left behind (an uninstalled hook
    is not: it left nothing behind).  Call both in the same context (thread or
    task).

    *New in version 0.1.0.*
    """

    __slots__ = ("_clean", "_factory", "_hooks", "_names", "_state", "_token")

    def __init__(self) -> None:
        self._token: Any = None

    def start(self) -> None:
        """Save the process-wide state and start from an empty context."""
        self._state = store.save()
        self._names = store.provider_names()
        self._factory = logging.getLogRecordFactory()
        self._hooks = {name: _save_hook(name) for name in _HOOKS if _installed(name)}
        integration = sys.modules.get("ctxlog.structlog")
        if integration is not None:
            # Its warning about the structlog chain comes once per chain: check
            # afresh, so that what a test is told does not depend on the tests
            # that ran before it.
            integration._check_again()
        self._token = store.detach({})
        self._clean = store.read()

    def finish(self) -> list[str]:
        """Undo what was left since [`start`][ctxlog.testing.Isolation.start]; say what it was."""
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
        for name in _HOOKS:
            if _installed(name):
                if name not in self._hooks:
                    leaks.append(f"ctxlog.{name}.install() still in effect")
                # First, whoever installed it: its own providers (under the keys
                # the test may have installed it with) are not the test's
                # registrations.  One installed at start() is loaded again below.
                _uninstall(name)
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
        for name, state in self._hooks.items():
            _load_hook(name, state)
        return leaks
