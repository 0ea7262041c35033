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

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = ["pytester"]

# Shared, noisy machines: no per-example deadline.
settings.register_profile(
    "ctxlog", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=100
)
settings.register_profile("ci", parent=settings.get_profile("ctxlog"), max_examples=200)
settings.load_profile("ci" if os.environ.get("CI") else "ctxlog")


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
