"""The pytest plugin, registered by the installed package (entry point ``pytest11``).

No conftest is needed.  It gives every test:

* **isolation**: each test starts with an empty context, outside any unit of
  work; whatever it leaves bound, set, annotated, registered or installed
  (the record factory, the ``ctxlog.celery``, ``ctxlog.otel`` and
  ``ctxlog.structlog`` hooks) is undone after it, and a hook it uninstalled
  is installed again as it was;
* **a leak check**: ``--ctxlog-leaks={ignore,warn,fail}`` (or the ini option
  ``ctxlog_leaks``).  ``warn``, the default, lists the leaking tests at the
  end of the run and changes no outcome; ``fail`` fails a leaking test in its
  teardown, naming what leaked; ``ignore`` says nothing.  The marker
  ``@pytest.mark.ctxlog_leaks("ignore")`` sets it for one test or module;
* **caplog with the context**: ``caplog.records`` carry the context as
  attributes, as [`ctxlog.ContextFilter`][ctxlog.ContextFilter] adds it;
* the fixture **ctxlog_capture**: the list [`ctxlog.testing.capture`][ctxlog.testing.capture]
  fills for the running test.

Disable it with ``-p no:ctxlog``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any, Final

import pytest

from ctxlog.stdlib import ContextFilter
from ctxlog.testing import Isolation, capture

__all__ = ["ctxlog_capture"]

MODES: Final = ("ignore", "warn", "fail")

_PROPERTY: Final = "ctxlog_leaks"
_PATCHED: Final = "_ctxlog_context"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ctxlog")
    group.addoption(
        "--ctxlog-leaks",
        dest="ctxlog_leaks",
        choices=MODES,
        default=None,
        help=(
            "what to do when a test leaves context bound, units open, variables "
            "registered or hooks installed: ignore, warn (list them at the end; the "
            "default) or fail the test. Isolation happens whatever the mode."
        ),
    )
    parser.addini(
        "ctxlog_leaks",
        help="ignore, warn or fail: see --ctxlog-leaks (default: warn)",
        default="warn",
    )


def _mode(config: pytest.Config) -> str:
    mode = config.getoption("ctxlog_leaks") or config.getini("ctxlog_leaks")
    if mode not in MODES:
        msg = f"ctxlog_leaks = {mode!r}: use one of {', '.join(MODES)}."
        raise pytest.UsageError(msg)
    return str(mode)


def _marker_mode(marker: pytest.Mark) -> str:
    mode = marker.args[0] if marker.args else marker.kwargs.get("mode")
    if mode not in MODES:
        msg = f"@pytest.mark.ctxlog_leaks({mode!r}): use one of {', '.join(MODES)}."
        raise pytest.UsageError(msg)
    return str(mode)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "ctxlog_leaks(mode): ctxlog's leak check for this test: ignore, warn or fail "
        "(a test of code that binds on purpose, such as a hook that sets and never resets).",
    )
    # A bad value is a usage error at start-up, not in the first test.
    if _mode(config) == "warn":
        config.pluginmanager.register(_LeakReport(), "ctxlog-leak-report")


@pytest.fixture(autouse=True)
def _ctxlog_isolation(request: pytest.FixtureRequest) -> Iterator[None]:
    """A clean context for the test; what it leaves is undone, then reported."""
    isolation = Isolation()
    isolation.start()
    yield
    leaks = isolation.finish()
    if not leaks:
        return
    text = "; ".join(leaks)
    marker = request.node.get_closest_marker("ctxlog_leaks")
    mode = _mode(request.config) if marker is None else _marker_mode(marker)
    if mode == "fail":
        pytest.fail(f"ctxlog: the test leaked context: {text}", pytrace=False)
    elif mode == "warn":
        # Carried by the report, so that it also reaches the controller under xdist.
        request.node.user_properties.append((_PROPERTY, text))


@pytest.fixture
def ctxlog_capture() -> Iterator[list[dict[str, Any]]]:
    """Every record logged during the test, as [`ctxlog.testing.capture`][ctxlog.testing.capture]
    gives it."""
    with capture() as lines:
        yield lines


def _caplog_handlers() -> list[logging.Handler]:
    return [
        handler
        for handler in logging.getLogger().handlers
        if type(handler).__name__ == "LogCaptureHandler"
    ]


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_setup() -> Generator[None, None, None]:
    _with_context_on_caplog()
    yield


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call() -> Generator[None, None, None]:
    _with_context_on_caplog()
    yield


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown() -> Generator[None, None, None]:
    _with_context_on_caplog()
    yield


def _with_context_on_caplog() -> None:
    """Make the handlers pytest's logging plugin has just installed for this
    phase (new for every phase; this hook wrapper runs inside the logging
    plugin's) keep records that carry the context.

    Each keeps a copy of the record with the context added, as
    [`ctxlog.ContextFilter`][ctxlog.ContextFilter] adds it: a filter would add it to the
    record itself, which the test's own handlers also see.
    """
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "LogCaptureHandler" and not getattr(handler, _PATCHED, False):
            emit = handler.emit
            context = ContextFilter()

            def with_context(
                record: logging.LogRecord,
                emit: Callable[[logging.LogRecord], None] = emit,
                context: ContextFilter = context,
            ) -> None:
                kept = copy.copy(record)
                context.filter(kept)
                emit(kept)

            handler.emit = with_context  # type: ignore[method-assign]  # this instance only
            setattr(handler, _PATCHED, True)


class _LeakReport:
    """Collects the leaks reported with each test (also from xdist workers) and
    lists them at the end of the run."""

    def __init__(self) -> None:
        self.leaks: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for name, value in report.user_properties:
            if name == _PROPERTY:
                self.leaks.append((report.nodeid, str(value)))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.leaks:
            return
        terminalreporter.section("ctxlog: tests that leaked context", yellow=True)
        for nodeid, text in self.leaks:
            terminalreporter.line(f"{nodeid}: {text}")
        terminalreporter.line(
            f"{len(self.leaks)} test(s) left context behind; it was undone after each. "
            "Run with --ctxlog-leaks=fail to fail them."
        )
