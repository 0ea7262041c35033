"""ctxlog.testing: capture(), the checks, and Isolation (what the pytest plugin uses)."""

from __future__ import annotations

import contextvars
import logging
import subprocess
import sys
from typing import Any

import pytest
import structlog

import ctxlog
import ctxlog.otel
import ctxlog.structlog
from ctxlog.testing import (
    Isolation,
    assert_every_line_has,
    assert_no_crossing,
    capture,
    check,
)


class TestCapture:
    def test_one_dict_per_record_with_its_context(self) -> None:
        log = logging.getLogger("ctxlog.test.capture")
        with capture(level=logging.DEBUG) as lines:
            log.debug("outside %s", "any request")
            with ctxlog.bind(request_id="r-1"), ctxlog.scope():
                ctxlog.annotate(user_id="u")
                log.info("placed %d", 3, extra={"order": 7})
                thread = ctxlog.Thread(target=log.warning, args=("from a thread",))
                thread.start()
                thread.join()
                try:
                    1 / 0  # noqa: B018 -- the error to log
                except ZeroDivisionError:
                    log.exception("failed")
        log.info("after the block")  # not captured: the handler is gone
        assert [{k: v for k, v in line.items() if k != "exception"} for line in lines] == [
            {"message": "outside any request", "level": "DEBUG", "logger": log.name},
            {
                "request_id": "r-1",
                "user_id": "u",
                "order": 7,
                "message": "placed 3",
                "level": "INFO",
                "logger": log.name,
            },
            {
                "request_id": "r-1",
                "user_id": "u",
                "message": "from a thread",
                "level": "WARNING",
                "logger": log.name,
            },
            {
                "request_id": "r-1",
                "user_id": "u",
                "message": "failed",
                "level": "ERROR",
                "logger": log.name,
            },
        ]
        assert "ZeroDivisionError" in lines[-1]["exception"]
        assert not [
            h for h in logging.getLogger().handlers if type(h).__name__ == "_CaptureHandler"
        ]

    def test_context_keys_never_replace_the_lines_own(self) -> None:
        with capture() as lines, ctxlog.bind(level="gold", message="m", logger="l"):
            logging.getLogger("ctxlog.test.capture").warning("real")
        (line,) = lines
        assert (line["level"], line["message"], line["logger"]) == (
            "WARNING",
            "real",
            "ctxlog.test.capture",
        )
        assert (line["ctx_level"], line["ctx_message"], line["ctx_logger"]) == ("gold", "m", "l")

    def test_structlog_events_through_the_stdlib(self) -> None:
        structlog.configure(
            processors=[
                ctxlog.structlog.merge_context,
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        try:
            with capture() as lines, ctxlog.bind(request_id="r-s"):
                structlog.get_logger("ctxlog.test.structlog").warning("shipped", order=9)
        finally:
            structlog.reset_defaults()
        assert lines == [
            {
                "request_id": "r-s",
                "order": 9,
                "message": "shipped",
                "level": "WARNING",
                "logger": "ctxlog.test.structlog",
            }
        ]

    def test_a_named_logger_and_levels_are_restored(self) -> None:
        target = logging.getLogger("ctxlog.test.named")
        target.setLevel(logging.ERROR)
        target.propagate = False
        try:
            with capture(logger="ctxlog.test.named", level="debug") as lines:
                target.debug("seen")
            assert target.level == logging.ERROR
            assert [line["message"] for line in lines] == ["seen"]
        finally:
            target.propagate = True
            target.setLevel(logging.NOTSET)

    def test_every_level_by_default_whatever_the_root_level(self) -> None:
        root = logging.getLogger()
        root.setLevel(logging.WARNING)  # the stdlib's default; put back by conftest
        log = logging.getLogger("ctxlog.test.levels")
        with capture() as lines:
            log.debug("debug")
            log.info("info")
            log.log(5, "below debug")
        assert [line["message"] for line in lines] == ["debug", "info", "below debug"]
        assert (root.level, log.level) == (logging.WARNING, logging.NOTSET)
        with capture(level="info") as narrowed:
            log.debug("debug")
            log.info("info")
        assert [line["message"] for line in narrowed] == ["info"]
        assert root.level == logging.WARNING

    def test_a_logger_s_own_level_holds_unless_captured_on_it(self) -> None:
        quiet = logging.getLogger("ctxlog.test.quiet")
        quiet.setLevel(logging.WARNING)  # the application's own configuration
        child = logging.getLogger("ctxlog.test.quiet.child")  # NOTSET: inherits it
        chatty = logging.getLogger("ctxlog.test.chatty")
        chatty.setLevel(logging.DEBUG)
        try:
            with capture() as on_root:
                quiet.info("dropped by its own level")
                child.info("dropped too")
                quiet.warning("kept")
            assert [line["message"] for line in on_root] == ["kept"]
            with capture(logger="ctxlog.test.quiet") as on_it:
                quiet.info("seen")
                child.debug("seen from below")
            assert [line["message"] for line in on_it] == ["seen", "seen from below"]
            assert (quiet.level, child.level) == (logging.WARNING, logging.NOTSET)
            # level= narrows on the handler too: a logger set lower is left out.
            with capture(level="warning") as narrowed:
                chatty.debug("below the capture's level")
                chatty.error("kept")
            assert [line["message"] for line in narrowed] == ["kept"]
            assert chatty.level == logging.DEBUG
        finally:
            quiet.setLevel(logging.NOTSET)
            chatty.setLevel(logging.NOTSET)

    def test_a_named_logger_left_notset_is_notset_again(self) -> None:
        target = logging.getLogger("ctxlog.test.notset")
        with capture(logger="ctxlog.test.notset") as lines:
            target.debug("seen")
        assert [line["message"] for line in lines] == ["seen"]
        assert target.level == logging.NOTSET
        assert target.getEffectiveLevel() == logging.getLogger().getEffectiveLevel()

    def test_lifts_logging_disable_for_the_block(self) -> None:
        log = logging.getLogger("ctxlog.test.disabled")
        logging.disable(logging.INFO)
        try:
            with capture() as lines:
                log.info("seen")
            with capture(level="error") as narrowed:
                log.error("seen")
            log.info("not seen")
            assert logging.root.manager.disable == logging.INFO
        finally:
            logging.disable(logging.NOTSET)
        assert [line["message"] for line in [*lines, *narrowed]] == ["seen", "seen"]

    def test_imports_the_standard_library_only(self) -> None:
        code = (
            "import sys, ctxlog.testing\n"
            "bad = {'pytest', 'structlog', 'pythonjsonlogger'} & set(sys.modules)\n"
            "assert not bad, bad\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True)


class TestChecks:
    def lines(self) -> list[dict[str, Any]]:
        log = logging.getLogger("ctxlog.test.checks")
        with capture(level=logging.INFO) as lines:
            for rid in ("r-1", "r-2"):
                with ctxlog.bind(request_id=rid):
                    log.info("handling %s", rid)
        return lines

    def test_clean_lines_pass(self) -> None:
        lines = self.lines()
        assert_every_line_has(lines)
        assert_no_crossing(lines)
        assert check(lines).ok

    def test_a_missing_id_fails(self) -> None:
        lines: list[dict[str, Any]] = [*self.lines(), {"message": "lost", "logger": "x"}]
        with pytest.raises(AssertionError, match="1 of 3 lines carry no request_id"):
            assert_every_line_has(lines)
        assert_every_line_has(lines, ignore_loggers=["x"])
        assert check(lines).count("missing") == 1

    def test_a_crossed_id_fails(self) -> None:
        lines = self.lines()
        lines[1]["message"] = "handling r-1"  # the second request's line names the first
        with pytest.raises(AssertionError, match="cross units of work"):
            assert_no_crossing(lines)


class TestIsolation:
    def test_undoes_and_names_everything_left_behind(self) -> None:
        var = contextvars.ContextVar[str]("leaky_var")
        isolation = Isolation()
        with ctxlog.bind(outer="kept"):
            isolation.start()
            assert dict(ctxlog.current()) == {}  # a clean start
            ctxlog.set(request_id="r")
            ctxlog.scope().__enter__()
            ctxlog.register(var)
            ctxlog.install_record_factory()
            ctxlog.otel.install()
            leaks = isolation.finish()
            assert dict(ctxlog.current()) == {"outer": "kept"}
        assert ctxlog.otel.installed() is False
        assert "leaky_var" not in ctxlog.current()
        assert type(logging.getLogRecordFactory()).__module__ != "ctxlog.stdlib"
        text = " | ".join(leaks)
        for part in (
            "context keys still bound: request_id",
            "a unit of work still open",
            "still registered: leaky_var",
            "ctxlog.otel.install() still in effect",
            "ctxlog's record factory still installed",
        ):
            assert part in text, text

    def test_nothing_left_says_nothing(self) -> None:
        isolation = Isolation()
        isolation.start()
        with ctxlog.bind(a=1), ctxlog.scope():
            ctxlog.annotate(b=2)
        assert isolation.finish() == []
