"""ctxlog.otel.logging_handler: stdlib records and structlog events to the
OpenTelemetry logs SDK (its in-memory exporter), with the context as attributes."""

from __future__ import annotations

import logging
import logging.handlers
import queue
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry import trace
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import ctxlog
import ctxlog.otel
from ctxlog import structlog as cs
from tests.conftest import import_error_without
from tests.test_otel import otel  # noqa: F401 -- the fixture, shared by name


class Sink:
    """A real SDK logger provider exporting to memory, and a logger handing it records."""

    def __init__(self, **filter_options: Any) -> None:
        self.exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated
        self.provider = LoggerProvider()
        self.provider.add_log_record_processor(SimpleLogRecordProcessor(self.exporter))
        self.handler = ctxlog.otel.logging_handler(self.provider, **filter_options)
        self.logger = logging.getLogger(f"tests.otel_logs.{uuid.uuid4().hex}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self.handler)

    def records(self) -> list[ReadableLogRecord]:
        return list(self.exporter.get_finished_logs())

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.provider.shutdown()


@pytest.fixture
def sink() -> Iterator[Sink]:
    sink = Sink()
    yield sink
    sink.close()


@pytest.fixture
def tracer() -> trace.Tracer:
    return TracerProvider().get_tracer("tests.otel_logs")


def ids(span: trace.Span) -> tuple[int, int]:
    ctx = span.get_span_context()
    return ctx.trace_id, ctx.span_id


@pytest.mark.usefixtures("otel")
def test_context_as_attributes_ids_as_the_records_own_fields(
    sink: Sink, tracer: trace.Tracer
) -> None:
    with tracer.start_as_current_span("s") as span, ctxlog.bind(request_id="r-1", user_id=7):
        sink.logger.warning("hello %s", "world", extra={"order": 12})
    (record,) = sink.records()
    log = record.log_record
    assert log.body == "hello world"
    assert log.severity_text == "WARN"
    assert dict(log.attributes or {}) == {"request_id": "r-1", "user_id": 7, "order": 12}
    assert (log.trace_id, log.span_id) == ids(span)
    assert log.trace_flags is not None
    assert log.trace_flags.sampled


@pytest.mark.usefixtures("otel")
def test_no_span_no_ids_and_an_unsampled_span_says_so(sink: Sink) -> None:
    sink.logger.info("outside")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("tests.otel_logs")
    with unsampled.start_as_current_span("off") as span:
        sink.logger.info("unsampled")
    outside, inside = (r.log_record for r in sink.records())
    assert (outside.trace_id, outside.span_id) == (0, 0)
    assert dict(outside.attributes or {}) == {}
    assert (inside.trace_id, inside.span_id) == ids(span)
    assert inside.trace_flags is not None
    assert not inside.trace_flags.sampled
    assert "trace_id" not in (inside.attributes or {})


def test_nested_values_keep_their_shape(sink: Sink) -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError

    bound = {
        "cart": {"items": [{"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}], "total": 9.5},
        "tags": ("x", "y"),
        "flag": True,
        "raw": b"\x00\x01",
        "odd": Opaque(),
        "broken": Broken(),
        "deep": {"": "empty key dropped", "keep": None},
    }
    with ctxlog.bind(**bound):
        sink.logger.info("shapes")
    (record,) = sink.records()
    attributes = dict(record.log_record.attributes or {})
    assert attributes == {
        "cart": {"items": ({"sku": "a-1", "qty": 2}, {"sku": "b-2", "qty": 1}), "total": 9.5},
        "tags": ("x", "y"),
        "flag": True,
        "raw": b"\x00\x01",
        "odd": "opaque",
        "broken": "<unrepresentable Broken>",
        "deep": {"keep": None},
    }


def test_filter_options(tracer: trace.Tracer) -> None:
    sink = Sink(fields=["request_id"], defaults={"request_id": "-"})
    try:
        sink.logger.info("no id")
        with ctxlog.bind(request_id="r-2", secret="s"):
            sink.logger.info("an id")
    finally:
        sink.close()
    assert [dict(r.log_record.attributes or {}) for r in sink.records()] == [
        {"request_id": "-"},
        {"request_id": "r-2"},
    ]
    nested = Sink(nest_under="context")
    try:
        with ctxlog.bind(request_id="r-3"):
            nested.logger.info("nested")
    finally:
        nested.close()
    (record,) = nested.records()
    assert dict(record.log_record.attributes or {}) == {"context": {"request_id": "r-3"}}
    with pytest.raises(ctxlog.ContextError):
        ctxlog.otel.logging_handler(nest_under="msg")


def test_custom_keys_are_left_out_too(sink: Sink, tracer: trace.Tracer) -> None:
    ctxlog.otel.install(trace_key="otel.trace", span_key="otel.span")
    try:
        with tracer.start_as_current_span("k") as span:
            sink.logger.info("custom keys")
    finally:
        ctxlog.otel.uninstall()
    (record,) = sink.records()
    assert dict(record.log_record.attributes or {}) == {}
    assert (record.log_record.trace_id, record.log_record.span_id) == ids(span)


@pytest.mark.usefixtures("otel")
def test_a_queue_handler_keeps_the_span_of_the_log_call(sink: Sink, tracer: trace.Tracer) -> None:
    """The record crosses to the listener's thread, outside the span: it still
    carries the span it was logged in, not the listener's (none)."""
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    logger = logging.getLogger(f"tests.otel_logs.queue.{uuid.uuid4().hex}")
    logger.propagate = False
    queue_handler = logging.handlers.QueueHandler(records)
    # The context is read on the logging thread, before the record is queued.
    queue_handler.addFilter(ctxlog.ContextFilter())
    logger.addHandler(queue_handler)
    listener = logging.handlers.QueueListener(records, sink.handler)
    listener.start()
    try:
        with tracer.start_as_current_span("q") as span, ctxlog.bind(request_id="r-q"):
            logger.warning("queued")
    finally:
        listener.stop()
        logger.removeHandler(queue_handler)
    (record,) = sink.records()
    assert (record.log_record.trace_id, record.log_record.span_id) == ids(span)
    assert dict(record.log_record.attributes or {}) == {"request_id": "r-q"}


def test_a_trace_id_from_an_incoming_traceparent(sink: Sink) -> None:
    """No OpenTelemetry span: the trace id the middleware bound is the record's."""
    with ctxlog.bind(request_id="r-t", trace_id="4bf92f3577b34da6a3ce929d0e0e4736"):
        sink.logger.info("from traceparent")
    with ctxlog.bind(trace_id="not-hex"):
        sink.logger.info("not an id")
    first, second = (r.log_record for r in sink.records())
    assert first.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert first.span_id == 0
    assert dict(first.attributes or {}) == {"request_id": "r-t"}
    assert (second.trace_id, dict(second.attributes or {})) == (0, {})


@pytest.mark.usefixtures("otel")
def test_opentelemetry_instrumentations_ids_are_not_repeated(
    sink: Sink, tracer: trace.Tracer
) -> None:
    instrumentor = LoggingInstrumentor()
    instrumentor.instrument(inject_trace_context=True)
    try:
        with tracer.start_as_current_span("i") as span:
            sink.logger.info("instrumented")
    finally:
        instrumentor.uninstrument()
    (record,) = sink.records()
    attributes = dict(record.log_record.attributes or {})
    assert not {"otelTraceID", "otelSpanID", "otelTraceSampled", "trace_id", "span_id"} & set(
        attributes
    )
    assert (record.log_record.trace_id, record.log_record.span_id) == ids(span)


@pytest.mark.usefixtures("otel")
def test_structlog_events_through_the_stdlib(sink: Sink, tracer: trace.Tracer) -> None:
    log = structlog.wrap_logger(
        sink.logger,
        processors=[
            cs.merge_context,
            structlog.stdlib.add_log_level,
            structlog.stdlib.render_to_log_kwargs,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    with tracer.start_as_current_span("st") as span, ctxlog.bind(request_id="r-s"):
        log.info("order placed", order={"id": 5, "lines": [1, 2]})
    (record,) = sink.records()
    attributes = dict(record.log_record.attributes or {})
    assert record.log_record.body == "order placed"
    assert attributes["request_id"] == "r-s"
    assert attributes["order"] == {"id": 5, "lines": (1, 2)}
    assert "trace_id" not in attributes
    assert "span_id" not in attributes
    assert (record.log_record.trace_id, record.log_record.span_id) == ids(span)


def test_never_configures_logging_behind_the_users_back() -> None:
    """Making the handler touches no logger: no basicConfig, no root handler."""
    code = (
        "import logging, logging.config\n"
        "basic, dict_config = logging.basicConfig, logging.config.dictConfig\n"
        "import ctxlog.otel\n"
        "handler = ctxlog.otel.logging_handler()\n"
        "root = logging.getLogger()\n"
        "print(root.handlers == [], logging.basicConfig is basic,"
        " logging.config.dictConfig is dict_config, root.level)\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["True", "True", "True", str(logging.WARNING)]
    assert out.stderr == ""


def test_missing_logs_pieces_name_the_extra() -> None:
    message = import_error_without(
        "opentelemetry.instrumentation.logging", "import ctxlog.otel; ctxlog.otel.logging_handler()"
    )
    assert "pip install 'ctxlog-correlation[otel]'" in message


def test_redact_covers_every_attribute_and_the_exception(tracer: trace.Tracer) -> None:
    sink = Sink(redact=ctxlog.Redactor(patterns=[ctxlog.BEARER_TOKEN]))
    try:
        with ctxlog.bind(password="p4ss", user={"name": "ada", "token": "t0k"}):
            try:
                raise RuntimeError("Bearer abc.def")
            except RuntimeError:
                sink.logger.exception("sent Bearer xyz", extra={"api_key": "k3y"})
        (record,) = sink.records()
        attributes = dict(record.log_record.attributes or {})
        text = repr(attributes) + repr(record.log_record.body)
        for secret in ("p4ss", "t0k", "k3y", "abc.def", "xyz"):
            assert secret not in text
        assert attributes["password"] == "[REDACTED]"
        assert attributes["api_key"] == "[REDACTED]"
        assert attributes["user"] == {"name": "ada", "token": "[REDACTED]"}
        assert record.log_record.body == "sent [REDACTED]"
    finally:
        sink.close()
