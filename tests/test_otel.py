"""ctxlog.otel: the active span's ids in every reader, with the real OpenTelemetry SDK."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import io
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import ctxlog
import ctxlog.otel
from ctxlog import structlog as cs
from ctxlog.headers import parse_traceparent
from tests.conftest import THREADS_INHERIT_CONTEXT, Captured, import_error_without

LINE = "%(trace_id)s|%(span_id)s|%(request_id)s|%(message)s"
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


class Tracing:
    """A real SDK tracer provider exporting finished spans to memory."""

    def __init__(self, *, sampled: bool = True) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=None if sampled else ALWAYS_OFF)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("ctxlog.tests")

    def finished(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.exporter.get_finished_spans() if s.name == name]
        return span


def ids_of(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


@pytest.fixture
def tracing() -> Iterator[Tracing]:
    tracing = Tracing()
    yield tracing
    tracing.provider.shutdown()


@pytest.fixture
def otel() -> Iterator[None]:
    ctxlog.otel.install()
    yield
    ctxlog.otel.uninstall()


@pytest.fixture
def text(captured: Captured) -> Captured:
    captured.handler.setFormatter(logging.Formatter(LINE))
    captured.handler.addFilter(
        ctxlog.ContextFilter(defaults={"trace_id": "-", "span_id": "-", "request_id": "-"})
    )
    return captured


# --------------------------------------------------------------------------
# stdlib logging
# --------------------------------------------------------------------------


def test_lines_carry_the_active_span_ids(otel: None, tracing: Tracing, text: Captured) -> None:
    text.logger.info("before")
    with tracing.tracer.start_as_current_span("outer"):
        text.logger.info("in outer")
        with tracing.tracer.start_as_current_span("inner"), ctxlog.bind(request_id="r-1"):
            text.logger.info("in inner")
        text.logger.info("outer again")
    text.logger.info("after")
    outer, inner = ids_of(tracing.finished("outer")), ids_of(tracing.finished("inner"))
    assert outer[0] == inner[0]
    assert outer[1] != inner[1]
    assert text.lines() == [
        "-|-|-|before",
        f"{outer[0]}|{outer[1]}|-|in outer",
        f"{inner[0]}|{inner[1]}|r-1|in inner",
        f"{outer[0]}|{outer[1]}|-|outer again",
        "-|-|-|after",
    ]
    assert HEX32.fullmatch(outer[0])
    assert HEX16.fullmatch(outer[1])


def test_works_whatever_the_order_of_setup(tracing: Tracing) -> None:
    """Installed before any logging configuration, then logging set up later (the
    OpenTelemetry logging instrumentation only works after basicConfig)."""
    ctxlog.otel.install()
    try:
        stream = io.StringIO()
        logging.basicConfig(stream=stream, format="%(trace_id)s %(message)s", force=True)
        logging.getLogger().handlers[0].addFilter(ctxlog.ContextFilter(defaults={"trace_id": "-"}))
        log = logging.getLogger("ctxlog.tests.otel.order")
        with tracing.tracer.start_as_current_span("late"):
            log.warning("configured after install")
        trace_id, _ = ids_of(tracing.finished("late"))
        assert stream.getvalue().splitlines() == [f"{trace_id} configured after install"]
    finally:
        ctxlog.otel.uninstall()


def test_installed_after_logging_is_configured(tracing: Tracing, text: Captured) -> None:
    with tracing.tracer.start_as_current_span("s"):
        text.logger.info("not yet")
        ctxlog.otel.install()
        try:
            text.logger.info("now")
        finally:
            ctxlog.otel.uninstall()
        text.logger.info("no more")
    trace_id, span_id = ids_of(tracing.finished("s"))
    assert text.lines() == ["-|-|-|not yet", f"{trace_id}|{span_id}|-|now", "-|-|-|no more"]


def test_record_factory_and_json_lines(otel: None, tracing: Tracing) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ctxlog.stdlib.json_formatter())
    log = logging.getLogger("ctxlog.tests.otel.factory")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    ctxlog.install_record_factory()
    try:
        with tracing.tracer.start_as_current_span("f"), ctxlog.bind(request_id="r-2"):
            log.info("json")
        log.info("none")
    finally:
        ctxlog.uninstall_record_factory()
        log.removeHandler(handler)
    trace_id, span_id = ids_of(tracing.finished("f"))
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["trace_id"] == trace_id
    assert first["span_id"] == span_id
    assert first["request_id"] == "r-2"
    assert "trace_id" not in second
    assert "span_id" not in second


# --------------------------------------------------------------------------
# structlog
# --------------------------------------------------------------------------


def test_structlog_processor(otel: None, tracing: Tracing) -> None:
    sio = io.StringIO()
    structlog.configure(
        processors=[cs.merge_context, structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(sio),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger()
        with tracing.tracer.start_as_current_span("sl"):
            log.info("inside", user="u")
            with ctxlog.bind(span_id="explicit"):
                log.info("bound wins")
            log.info("call wins", trace_id="from-call")
        log.info("outside")
    finally:
        structlog.reset_defaults()
    trace_id, span_id = ids_of(tracing.finished("sl"))
    lines = [json.loads(line) for line in sio.getvalue().splitlines()]
    assert lines[0] == {"trace_id": trace_id, "span_id": span_id, "user": "u", "event": "inside"}
    assert lines[1]["span_id"] == "explicit"
    assert lines[1]["trace_id"] == trace_id
    assert lines[2]["trace_id"] == "from-call"
    assert lines[3] == {"event": "outside"}


# --------------------------------------------------------------------------
# the core readers
# --------------------------------------------------------------------------


def test_current_get_snapshot(otel: None, tracing: Tracing) -> None:
    assert dict(ctxlog.current()) == {}
    assert ctxlog.get("trace_id", "none") == "none"
    with tracing.tracer.start_as_current_span("c") as span:
        ctx = span.get_span_context()
        trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
        assert dict(ctxlog.current()) == {"trace_id": trace_id, "span_id": span_id}
        assert ctxlog.get("span_id") == span_id
        snap = ctxlog.snapshot()
        with ctxlog.unbind("trace_id"):
            assert dict(ctxlog.current()) == {"span_id": span_id}
            assert ctxlog.get("trace_id") is None
    assert dict(snap) == {"trace_id": trace_id, "span_id": span_id}
    # A snapshot is values: applied later (another process, a task) they are bound.
    with snap.apply():
        assert ctxlog.get("trace_id") == trace_id


def test_invalid_spans_give_nothing(otel: None, text: Captured) -> None:
    invalid = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
    with trace.use_span(trace.INVALID_SPAN):
        text.logger.info("invalid span")
        assert dict(ctxlog.current()) == {}
    with trace.use_span(invalid):
        text.logger.info("non-recording, invalid")
        assert "trace_id" not in ctxlog.current()
    assert text.lines() == ["-|-|-|invalid span", "-|-|-|non-recording, invalid"]


def test_non_recording_valid_span_is_merged(otel: None) -> None:
    """A remote parent (what a propagator extracts) has valid ids: they are merged."""
    remote = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=trace.TraceFlags(0),
    )
    with trace.use_span(trace.NonRecordingSpan(remote)):
        assert dict(ctxlog.current()) == {
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "span_id": "b7ad6b7169203331",
        }
        assert ctxlog.outgoing_headers()["traceparent"] == (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        )


class _BrokenSpan(trace.NonRecordingSpan):
    """A span whose context cannot be read (a faulty custom tracer)."""

    def get_span_context(self) -> trace.SpanContext:
        msg = "broken tracer"
        raise RuntimeError(msg)


def test_a_broken_span_never_breaks_a_read(otel: None, text: Captured) -> None:
    with trace.use_span(_BrokenSpan(trace.INVALID_SPAN_CONTEXT)):
        assert dict(ctxlog.current()) == {}
        text.logger.info("still logged")
    assert text.lines() == ["-|-|-|still logged"]


# --------------------------------------------------------------------------
# concurrency: the ids follow OpenTelemetry's own context
# --------------------------------------------------------------------------


def test_asyncio_tasks_see_their_own_span(otel: None, tracing: Tracing) -> None:
    seen: dict[str, dict[str, Any]] = {}

    async def work(name: str, with_span: bool) -> None:
        if with_span:
            with tracing.tracer.start_as_current_span(name):
                await asyncio.sleep(0.001)
                seen[name] = dict(ctxlog.current())
        else:
            await asyncio.sleep(0.001)
            seen[name] = dict(ctxlog.current())

    async def main() -> None:
        await asyncio.gather(*(work(f"t{i}", i % 2 == 0) for i in range(40)))

    asyncio.run(main())
    for i in range(40):
        name = f"t{i}"
        if i % 2 == 0:
            trace_id, span_id = ids_of(tracing.finished(name))
            assert seen[name] == {"trace_id": trace_id, "span_id": span_id}
        else:
            assert seen[name] == {}


def test_threads_and_pools(otel: None, tracing: Tracing) -> None:
    """ctxlog's hand-overs copy the whole context, OpenTelemetry's included."""
    results: list[dict[str, Any]] = []
    with tracing.tracer.start_as_current_span("parent"):
        thread = ctxlog.Thread(target=lambda: results.append(dict(ctxlog.current())))
        thread.start()
        thread.join(10)
        with ctxlog.ThreadPoolExecutor(2) as pool:
            results.extend(pool.map(lambda _: dict(ctxlog.current()), range(4)))
        plain = threading.Thread(target=lambda: results.append(dict(ctxlog.current())))
        plain.start()
        plain.join(10)
    trace_id, span_id = ids_of(tracing.finished("parent"))
    expected = {"trace_id": trace_id, "span_id": span_id}
    assert results[:5] == [expected] * 5
    # A plain thread starts from an empty context (no span, no ids), unless threads
    # inherit the context of the caller of start() (3.14+, thread_inherit_context).
    assert results[5] == (expected if THREADS_INHERIT_CONTEXT else {})


def test_many_threads_each_with_its_span(otel: None, tracing: Tracing) -> None:
    def work(i: int) -> tuple[str, str, str]:
        with tracing.tracer.start_as_current_span(f"w{i}") as span:
            ctx = span.get_span_context()
            got = ctxlog.current()
            assert got["trace_id"] == format(ctx.trace_id, "032x")
            return f"w{i}", got["trace_id"], got["span_id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(work, range(200)))
    for name, trace_id, span_id in rows:
        assert (trace_id, span_id) == ids_of(tracing.finished(name))


# --------------------------------------------------------------------------
# outgoing_headers
# --------------------------------------------------------------------------


def test_outgoing_headers_carry_the_span(otel: None, tracing: Tracing) -> None:
    assert ctxlog.outgoing_headers() == {}
    with tracing.tracer.start_as_current_span("out") as span, ctxlog.bind(request_id="r-9"):
        headers = ctxlog.outgoing_headers()
        ctx = span.get_span_context()
    parsed = parse_traceparent(headers["traceparent"])
    assert parsed is not None
    assert parsed.trace_id == format(ctx.trace_id, "032x")
    assert parsed.parent_id == format(ctx.span_id, "016x")
    assert parsed.flags == format(ctx.trace_flags, "02x")
    assert parsed.sampled
    assert headers["X-Request-ID"] == "r-9"


def test_outgoing_headers_keep_the_unsampled_flag(otel: None) -> None:
    tracing = Tracing(sampled=False)
    with tracing.tracer.start_as_current_span("off") as span:
        assert not span.is_recording()
        headers = ctxlog.outgoing_headers()
        trace_id = format(span.get_span_context().trace_id, "032x")
    parsed = parse_traceparent(headers["traceparent"])
    assert parsed is not None
    assert parsed.trace_id == trace_id
    assert not parsed.sampled
    tracing.provider.shutdown()


def test_outgoing_headers_for_a_bound_trace_that_is_not_the_span(
    otel: None, tracing: Tracing
) -> None:
    """A trace id bound by hand is another trace: its flags are not the span's."""
    other = "0af7651916cd43dd8448eb211c80319c"
    with tracing.tracer.start_as_current_span("s"), ctxlog.bind(trace_id=other):
        header = ctxlog.outgoing_headers()["traceparent"]
    assert header.startswith(f"00-{other}-")
    assert header.endswith("-01")


# --------------------------------------------------------------------------
# install / uninstall
# --------------------------------------------------------------------------


def test_custom_keys_and_reinstall(tracing: Tracing) -> None:
    ctxlog.otel.install(trace_key="otel.trace", span_key=None)
    try:
        assert ctxlog.otel.installed()
        with tracing.tracer.start_as_current_span("k"):
            assert set(ctxlog.current()) == {"otel.trace"}
            ctxlog.otel.install(trace_key="t", span_key="s")
            assert set(ctxlog.current()) == {"t", "s"}
    finally:
        ctxlog.otel.uninstall()
    assert not ctxlog.otel.installed()
    ctxlog.otel.uninstall()  # twice: nothing to do


def test_key_conflicts(tracing: Tracing) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("trace_id")
    ctxlog.register(var)
    with pytest.raises(ctxlog.ContextError, match="already used"):
        ctxlog.otel.install()
    assert not ctxlog.otel.installed()
    ctxlog.unregister(var)

    ctxlog.otel.install(trace_key="trace_id")
    try:
        with pytest.raises(ctxlog.ContextError, match="already used"):
            ctxlog.register(var)
        taken: contextvars.ContextVar[str] = contextvars.ContextVar("other")
        ctxlog.register(taken, "mine")
        # A failed re-install keeps the installation that was there.
        with pytest.raises(ctxlog.ContextError, match="already used"):
            ctxlog.otel.install(trace_key="t2", span_key="mine")
        with tracing.tracer.start_as_current_span("kept"):
            assert set(ctxlog.current()) == {"trace_id", "span_id"}
        ctxlog.unregister(taken)
    finally:
        ctxlog.otel.uninstall()
    with pytest.raises(ctxlog.ContextError, match="not registered"):
        ctxlog.unregister(var)


@pytest.mark.parametrize(
    ("trace_key", "span_key", "match"),
    [("", "span_id", "non-empty"), ("trace_id", "", "non-empty"), ("x", "x", "different")],
)
def test_bad_keys(trace_key: str, span_key: str, match: str) -> None:
    with pytest.raises(ctxlog.ContextError, match=match):
        ctxlog.otel.install(trace_key=trace_key, span_key=span_key)
    assert not ctxlog.otel.installed()


def test_unbind_then_uninstall_leaves_no_marker(tracing: Tracing, text: Captured) -> None:
    ctxlog.otel.install()
    with tracing.tracer.start_as_current_span("h"), ctxlog.unbind("trace_id"):
        ctxlog.otel.uninstall()
        text.logger.info("hidden then uninstalled")
        assert dict(ctxlog.current()) == {}
    assert text.lines() == ["-|-|-|hidden then uninstalled"]


def test_provider_repr(otel: None) -> None:
    from ctxlog._store import store  # noqa: PLC0415 -- the providers are what is inspected here

    names = [repr(source) for source, _ in store.providers]
    assert any("trace id" in name and "'trace_id'" in name for name in names)
    assert any("span id" in name and "'span_id'" in name for name in names)
    ctxlog.otel.install(baggage=["tenant"])
    names = [repr(source) for source, _ in store.providers]
    assert any("baggage entry 'tenant'" in name for name in names)


def test_otel_context_detached_by_hand(otel: None, tracing: Tracing) -> None:
    span = tracing.tracer.start_span("manual")
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        assert ctxlog.get("span_id") == format(span.get_span_context().span_id, "016x")
    finally:
        otel_context.detach(token)
        span.end()
    assert ctxlog.get("span_id") is None


# --------------------------------------------------------------------------
# cost: a span's ids are formatted once, and records are served from a cache
# --------------------------------------------------------------------------


class CountingId(int):
    """A span id that counts how often it is formatted (OpenTelemetry takes any int)."""

    formatted = 0

    def __format__(self, spec: str) -> str:
        CountingId.formatted += 1
        return super().__format__(spec)


def test_a_spans_ids_are_formatted_once_per_span(otel: None, text: Captured) -> None:
    """Many records, and contexts that differ but show the same span (a value
    set in OpenTelemetry's context, another thread), format its ids once."""
    CountingId.formatted = 0
    span_ctx = trace.SpanContext(
        trace_id=CountingId(0x4BF92F3577B34DA6A3CE929D0E0E4736),
        span_id=CountingId(0x00F067AA0BA902B7),
        is_remote=False,
        trace_flags=trace.TraceFlags(1),
    )
    span_token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_ctx)))
    try:
        span_only = otel_context.get_current()
        with_value = otel_context.set_value("ctxlog.tests", 1, span_only)
        for n in range(20):
            token = otel_context.attach(with_value if n % 2 else span_only)
            try:
                text.logger.info("line %d", n)
            finally:
                otel_context.detach(token)
        worker = ctxlog.Thread(target=text.logger.info, args=("thread",))
        worker.start()
        worker.join()
    finally:
        otel_context.detach(span_token)
    lines = text.lines()
    assert len(lines) == 21
    ids = "4bf92f3577b34da6a3ce929d0e0e4736|00f067aa0ba902b7|"
    assert all(line.startswith(ids) for line in lines)
    assert CountingId.formatted == 2  # the trace id and the span id, once each


def test_many_spans_each_show_their_own_ids(otel: None) -> None:
    """More spans than the formatted ids kept: each record still has its own span's."""
    for n in range(1, 600):
        span_ctx = trace.SpanContext(
            trace_id=n, span_id=n, is_remote=False, trace_flags=trace.TraceFlags(1)
        )
        token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span_ctx)))
        try:
            assert (ctxlog.get("trace_id"), ctxlog.get("span_id")) == (f"{n:032x}", f"{n:016x}")
        finally:
            otel_context.detach(token)


def test_the_filter_sees_a_new_span_and_a_reinstall(tracing: Tracing, text: Captured) -> None:
    """The filter's cache holds while the span does, and no longer."""
    ctxlog.otel.install()
    try:
        with tracing.tracer.start_as_current_span("a"):
            text.logger.info("a1")
            text.logger.info("a2")
            with tracing.tracer.start_as_current_span("b"):
                text.logger.info("b")
            text.logger.info("a3")
            ctxlog.otel.install(trace_key="trace_id", span_key=None)
            text.logger.info("trace only")
    finally:
        ctxlog.otel.uninstall()
    a, b = ids_of(tracing.finished("a")), ids_of(tracing.finished("b"))
    assert text.lines() == [
        f"{a[0]}|{a[1]}|-|a1",
        f"{a[0]}|{a[1]}|-|a2",
        f"{b[0]}|{b[1]}|-|b",
        f"{a[0]}|{a[1]}|-|a3",
        f"{a[0]}|-|-|trace only",
    ]


def test_a_registered_variable_beside_otel_is_read_every_time(
    otel: None, tracing: Tracing, text: Captured
) -> None:
    """A registered ContextVar cannot say it is unchanged: with it, nothing is
    served from a cache that would hide its new value."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    ctxlog.register(var)
    try:
        with tracing.tracer.start_as_current_span("v"):
            var.set("first")
            text.logger.info("one")
            var.set("second")
            text.logger.info("two")
    finally:
        ctxlog.unregister(var)
    trace_id, span_id = ids_of(tracing.finished("v"))
    assert text.lines() == [f"{trace_id}|{span_id}|first|one", f"{trace_id}|{span_id}|second|two"]


# --------------------------------------------------------------------------
# OpenTelemetry baggage
# --------------------------------------------------------------------------


def test_active_baggage_entries_are_merged(tracing: Tracing, text: Captured) -> None:
    from opentelemetry import baggage  # noqa: PLC0415 -- only this test uses it

    text.handler.setFormatter(logging.Formatter("%(tenant)s|%(plan)s|%(message)s"))
    text.handler.filters.clear()
    text.handler.addFilter(ctxlog.ContextFilter(defaults={"tenant": "-", "plan": "-"}))
    ctxlog.otel.install(baggage=["tenant", "plan"])
    try:
        ctx = baggage.set_baggage("tenant", "acme", baggage.set_baggage("other", "x"))
        token = otel_context.attach(ctx)
        try:
            text.logger.info("one")
            with tracing.tracer.start_as_current_span("s"):
                text.logger.info("in a span")
                assert ctxlog.outgoing_headers(baggage=["tenant"])["baggage"] == "tenant=acme"
            hostile = baggage.set_baggage("tenant", "a\nforged", baggage.set_baggage("plan", 7))
            inner = otel_context.attach(hostile)
            try:
                text.logger.info("unsafe values")
            finally:
                otel_context.detach(inner)
            with ctxlog.bind(tenant="bound"):
                text.logger.info("bound wins")
        finally:
            otel_context.detach(token)
        text.logger.info("none")
    finally:
        ctxlog.otel.uninstall()
    assert text.lines() == [
        "acme|-|one",
        "acme|-|in a span",
        "-|-|unsafe values",
        "bound|-|bound wins",
        "-|-|none",
    ]


@pytest.mark.parametrize(
    ("baggage", "match"),
    [("tenant", "not a string"), ([""], "non-empty"), (["span_id"], "already the trace")],
)
def test_bad_baggage_options(baggage: Any, match: str) -> None:
    with pytest.raises(ctxlog.ContextError, match=match):
        ctxlog.otel.install(baggage=baggage)
    assert not ctxlog.otel.installed()


# --------------------------------------------------------------------------
# imports
# --------------------------------------------------------------------------


def test_import_ctxlog_loads_no_opentelemetry() -> None:
    code = "import sys, ctxlog\nprint(sorted(m for m in sys.modules if 'opentelemetry' in m))"
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_missing_opentelemetry_names_the_extra() -> None:
    message = import_error_without("opentelemetry", "import ctxlog.otel")
    assert "pip install 'ctxlog-correlation[otel]'" in message
