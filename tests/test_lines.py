"""Every output path writes exactly one true, strict-JSON line per log call,
whatever is bound: configure(), every JSON file in config/, structlog's chain,
QueueHandler + listener, and the record factory."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import logging.handlers
import queue
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import ctxlog
import ctxlog.structlog as cs
from ctxlog.stdlib import Serializer, json_formatter
from tests import strategies

CONFIG = Path(__file__).resolve().parent.parent / "config"
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z").fullmatch
# Nothing a line may hold raw: controls, DEL, C1, the line separators, surrogates.
RAW = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def refuse(constant: str) -> None:
    msg = f"not strict JSON: {constant}"
    raise ValueError(msg)


def check_line(text: str, level: str, logger: str, message: str) -> dict[str, Any]:
    """One line as a user's pipeline reads it: strict JSON, its own fields true."""
    assert RAW.search(text) is None, ascii(text)
    text.encode("utf-8")  # valid UTF-8 once written
    line = json.loads(text, parse_constant=refuse)
    assert isinstance(line, dict)
    assert (line["level"], line["logger"], line["message"]) == (level, logger, message)
    assert TIME(line["time"]), line["time"]
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    return line


class Output:
    """One output path: log with a context bound, get back what was written."""

    def __init__(self, logger: logging.Logger, stream: io.StringIO) -> None:
        self.logger = logger
        self.stream = stream
        logger.setLevel(logging.DEBUG)

    def log(self, level: str, context: dict[str, Any], extra: dict[str, Any]) -> list[str]:
        self.stream.seek(0)
        self.stream.truncate()
        with ctxlog.bind(**context):
            self.logger.log(logging.getLevelName(level), "the message", extra=extra)
        self.flush()
        return self.stream.getvalue().splitlines()

    def flush(self) -> None:
        """Nothing to wait for: the handler wrote on the logging thread."""


def own_logger(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"ctxlog.test.lines.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger


def from_configure() -> Output:
    stream = io.StringIO()
    ctxlog.configure(stream=stream, level="DEBUG")
    return Output(logging.getLogger("ctxlog.test.lines.configure"), stream)


def from_file(name: str) -> Output:
    path = CONFIG / name
    with path.open(encoding="utf-8") as fh:
        config = yaml.safe_load(fh) if name.endswith(".yaml") else json.load(fh)
    logging.config.dictConfig(config)
    (handler,) = logging.getLogger().handlers[-1:]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    return Output(logging.getLogger(f"ctxlog.test.lines.{name}"), stream)


class QueuedOutput(Output):
    """ctxlog.QueueHandler on the logging thread; the listener's handler writes
    on another thread, where no context is."""

    def __init__(self) -> None:
        self.records: queue.Queue[logging.LogRecord] = queue.Queue()
        stream = io.StringIO()
        target = logging.StreamHandler(stream)
        target.setFormatter(json_formatter())
        self.listener = logging.handlers.QueueListener(self.records, target)
        super().__init__(own_logger("queued", ctxlog.QueueHandler(self.records)), stream)

    def flush(self) -> None:
        def drain() -> None:
            while not self.records.empty():
                self.listener.handle(self.records.get_nowait())

        thread = threading.Thread(target=drain)
        thread.start()
        thread.join()


def from_record_factory() -> Output:
    ctxlog.install_record_factory()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())  # no filter: the factory added the context
    return Output(own_logger("factory", handler), stream)


def with_serializer(serializer: Serializer) -> Output:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter(serializer))
    handler.addFilter(ctxlog.ContextFilter())
    return Output(own_logger(serializer, handler), stream)


PATHS: dict[str, Callable[[], Output]] = {
    "configure": from_configure,
    "serializer-json": lambda: with_serializer("json"),
    "serializer-orjson": lambda: with_serializer("orjson"),
    "logging-json.json": lambda: from_file("logging-json.json"),
    "logging-json.yaml": lambda: from_file("logging-json.yaml"),
    "structlog-json.json": lambda: from_file("structlog-json.json"),
    "structlog-json.yaml": lambda: from_file("structlog-json.yaml"),
    "queue-listener": QueuedOutput,
    "record-factory": from_record_factory,
}


@pytest.fixture
def outputs() -> Iterator[dict[str, Output]]:
    """The paths made in one test, reused across its Hypothesis examples."""
    made: dict[str, Output] = {}
    yield made
    ctxlog.uninstall_record_factory()


def output_of(outputs: dict[str, Output], path: str) -> Output:
    if path not in outputs:
        outputs[path] = PATHS[path]()
    return outputs[path]


REUSED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def structlog_through_stdlib() -> Iterator[None]:
    structlog.configure(
        processors=[*cs.SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    yield
    structlog.reset_defaults()


def test_every_json_config_file_has_a_path() -> None:
    names = {p.name for p in CONFIG.iterdir() if "json" in p.stem}
    assert names <= set(PATHS)


@pytest.mark.parametrize("path", list(PATHS))
@REUSED
@given(
    level=st.sampled_from(LEVELS),
    context=strategies.contexts,
    extra=st.dictionaries(
        strategies.keys.filter(lambda k: k not in ctxlog.stdlib.RESERVED_ATTRS),
        strategies.values,
        max_size=3,
    ),
)
def test_one_true_strict_line_per_call(
    outputs: dict[str, Output],
    path: str,
    level: str,
    context: dict[str, Any],
    extra: dict[str, Any],
) -> None:
    output = output_of(outputs, path)
    (text,) = output.log(level, context, extra)
    check_line(text, level, output.logger.name, "the message")


@pytest.mark.usefixtures("structlog_through_stdlib")
@pytest.mark.parametrize("path", ["structlog-json.json", "structlog-json.yaml"])
@REUSED
@given(
    level=st.sampled_from(["debug", "info", "warning", "error", "critical"]),
    context=strategies.contexts,
    keywords=st.dictionaries(
        strategies.keys.filter(lambda k: k.isidentifier() and k != "event"),
        strategies.values,
        max_size=3,
    ),
)
# A keyword may be called _record, and hold a proxy whose __class__ raises.
@example(level="info", context={}, keywords={"_record": strategies.LazyProxy()})
def test_structlog_events_too(
    outputs: dict[str, Output],
    path: str,
    level: str,
    context: dict[str, Any],
    keywords: dict[str, Any],
) -> None:
    output = output_of(outputs, path)
    output.stream.seek(0)
    output.stream.truncate()
    with ctxlog.bind(**context):
        getattr(structlog.get_logger(output.logger.name), level)("the event", **keywords)
    (text,) = output.stream.getvalue().splitlines()
    check_line(text, level.upper(), output.logger.name, "the event")


@pytest.mark.parametrize("path", sorted(PATHS))
def test_uvicorns_color_message_stays_out(outputs: dict[str, Output], path: str) -> None:
    """uvicorn logs its message again with ANSI colour codes (``color_message``):
    a terminal's, not a JSON line's."""
    output = output_of(outputs, path)
    extra = {"color_message": "Started server process [\x1b[36m%d\x1b[0m]", "port": 8000}
    (text,) = output.log("INFO", {"request_id": "-"}, extra)
    line = json.loads(text)
    assert "color_message" not in line
    assert "\\u001b" not in text
    assert line["port"] == 8000  # the other extra= values are written


class TestTheLinesOwnFields:
    def test_context_never_replaces_them(self) -> None:
        stream = io.StringIO()
        ctxlog.configure(stream=stream)
        with ctxlog.bind(level="gold", time="yesterday", logger="billing", exception="no"):
            logging.getLogger("app").error("real", extra={"message_id": 1})
        (text,) = stream.getvalue().splitlines()
        line = check_line(text, "ERROR", "app", "real")
        assert (line["ctx_level"], line["ctx_time"], line["ctx_logger"]) == (
            "gold",
            "yesterday",
            "billing",
        )
        assert line["ctx_exception"] == "no"
        assert "exception" not in line

    def test_a_renamed_key_never_replaces_another(self, captured: Any) -> None:
        captured.handler.setFormatter(json_formatter())
        captured.handler.addFilter(ctxlog.ContextFilter())
        with ctxlog.bind(name="bound", ctx_name="given"):
            captured.logger.info("m")
        line = json.loads(captured.lines()[0])
        assert (line["ctx_name"], line["ctx_ctx_name"]) == ("given", "bound")

    def test_structlog_reserved_keys_are_renamed(self) -> None:
        with ctxlog.bind(_record="x", exc_info=True, event="e", request_id="r"):
            event = cs.merge_context(None, "info", {"event": "real"})
        assert event == {
            "event": "real",
            "ctx__record": "x",
            "ctx_exc_info": True,
            "ctx_event": "e",
            "request_id": "r",
        }
