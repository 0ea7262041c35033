"""ctxlog.otel.logging_handler over OTLP/HTTP to a receiver on 127.0.0.1.

The receiver is a plain ``http.server`` in a thread that keeps each request
body; the test decodes it with ``opentelemetry-proto``, as a Collector would.
"""

from __future__ import annotations

import http.server
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import ctxlog
import ctxlog.otel


class Receiver(http.server.ThreadingHTTPServer):
    """Keeps the body of every POST to /v1/logs."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[tuple[str, str, bytes]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the signature it overrides
        """Quiet: the test's own lines only."""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def plain(value: AnyValue) -> Any:
    """An OTLP AnyValue as the Python value it holds."""
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    return None if kind is None else getattr(value, kind)


def test_records_reach_the_collector_with_context_and_ids(receiver: Receiver) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "ctxlog-tests"}))
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{receiver.port}/v1/logs", timeout=10)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = ctxlog.otel.logging_handler(provider)
    logger = logging.getLogger(f"tests.otlp.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    tracer = TracerProvider().get_tracer("tests.otlp")
    ctxlog.otel.install()
    try:
        with (
            tracer.start_as_current_span("checkout") as span,
            ctxlog.bind(request_id="r-otlp", user_id=42, cart={"items": [1, 2], "total": 3.5}),
        ):
            logger.warning("paid", extra={"attempt": 2})
        logger.info("after")
    finally:
        ctxlog.otel.uninstall()
        logger.removeHandler(handler)
        provider.shutdown()
    assert receiver.bodies
    assert {(path, kind) for path, kind, _ in receiver.bodies} == {
        ("/v1/logs", "application/x-protobuf")
    }
    records: list[LogRecord] = []
    for _, _, body in receiver.bodies:
        request = ExportLogsServiceRequest()
        request.ParseFromString(body)
        for resource_logs in request.resource_logs:
            service = {kv.key: plain(kv.value) for kv in resource_logs.resource.attributes}
            assert service["service.name"] == "ctxlog-tests"
            for scope_logs in resource_logs.scope_logs:
                records.extend(scope_logs.log_records)
    paid, after = sorted(records, key=lambda r: r.time_unix_nano)
    span_context = span.get_span_context()
    assert paid.body.string_value == "paid"
    assert paid.severity_text == "WARN"
    assert paid.trace_id == span_context.trace_id.to_bytes(16, "big")
    assert paid.span_id == span_context.span_id.to_bytes(8, "big")
    assert paid.flags & 0x01  # sampled
    keys = [kv.key for kv in paid.attributes]
    assert sorted(keys) == ["attempt", "cart", "request_id", "user_id"]  # each once, no ids
    attributes = {kv.key: plain(kv.value) for kv in paid.attributes}
    assert attributes == {
        "request_id": "r-otlp",
        "user_id": 42,
        "cart": {"items": [1, 2], "total": 3.5},
        "attempt": 2,
    }
    assert after.trace_id == b""
    assert after.span_id == b""
    assert [kv.key for kv in after.attributes] == []
