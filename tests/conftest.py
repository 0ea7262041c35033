"""Fixtures every test gets: logging left as it was found.

A clean context for each test, and the undoing of whatever a test leaves
bound or installed, come from ctxlog's own pytest plugin (``ctxlog_leaks``
in pyproject.toml makes a leak fail the test).
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Final

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# Shared, noisy machines: no per-example deadline.
settings.register_profile(
    "ctxlog", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=100
)
settings.register_profile("ci", parent=settings.get_profile("ctxlog"), max_examples=200)
settings.load_profile("ci" if os.environ.get("CI") else "ctxlog")

#: Whether a plain ``threading.Thread`` starts in a copy of the context of the caller of
#: ``start()`` rather than an empty one: Python 3.14+ with ``-X thread_inherit_context``
#: (``PYTHON_THREAD_INHERIT_CONTEXT=1``), the default of the free-threaded builds.  A plain
#: pool's worker thread then keeps the context of the ``submit()`` that started it.
THREADS_INHERIT_CONTEXT: Final = bool(getattr(sys.flags, "thread_inherit_context", 0))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_python(version): runs only on CPython >= version (a tuple); skipped before,"
        " and .ci/pythons fails if one of them did not run on the newer interpreters",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The marker travels into the JUnit report on every such test, run or skipped,
    # so that .ci/newer_tests_ran.py can prove they all ran where they must.
    for item in items:
        marker = item.get_closest_marker("needs_python")
        if marker is None:
            continue
        version = tuple(marker.args[0])
        needed = ".".join(map(str, version))
        item.user_properties.append(("needs_python", needed))
        if sys.version_info < version:
            item.add_marker(pytest.mark.skip(reason=f"needs CPython {needed}+"))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Root logger handlers/level and the record factory are restored after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory = logging.getLogRecordFactory()
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.setLogRecordFactory(factory)


class Captured:
    """A unique logger writing through one handler into a StringIO."""

    def __init__(self, logger: logging.Logger, handler: logging.Handler, stream: io.StringIO):
        self.logger = logger
        self.handler = handler
        self.stream = stream

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def captured() -> Iterator[Captured]:
    """A fresh logger (not propagating) with a plain handler and no filter yet."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(f"ctxlog.test.{uuid.uuid4().hex}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    yield Captured(logger, handler, stream)
    logger.removeHandler(handler)
    handler.close()


def import_error_without(package: str, statement: str) -> str:
    """The ImportError message *statement* raises in a fresh interpreter in which
    *package* cannot be imported (``""`` when it raises none)."""
    code = (
        "import sys\n"
        f"sys.modules[{package!r}] = None\n"
        "try:\n"
        f"    {statement}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    return subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
