"""ctxlog.grpc against real grpcio servers and channels on 127.0.0.1.

Three server flavours answer the same calls: ``grpc.server`` with plain
handlers, ``grpc.aio.server`` with ``async def`` handlers and async
generators, and ``grpc.aio.server`` with plain ``def`` handlers and
generators, which grpc.aio runs in its thread pool (grpc #37881).  Each
flavour is two services: A's ``Relay`` calls B through the client
interceptor.  Handlers are generic, with bytes in and out.  A probe
interceptor outside ctxlog's records what grpc's own thread or task sees
once each step of a handler is over: it must be nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import grpc.aio
import h2.config
import h2.connection
import h2.events
import pytest

import ctxlog
import ctxlog.grpc
from ctxlog.testing import capture, check

A = "test.A"
B = "test.B"
LOG_A = logging.getLogger("svc.a")
LOG_B = logging.getLogger("svc.b")
OURS = ("svc.a", "svc.b", "ctxlog.grpc")
#: The W3C baggage keys both services bind, and A passes on to B.
BAGGAGE = ("tenant",)


def rid() -> bytes:
    return str(ctxlog.get("request_id")).encode()


# --------------------------------------------------------------------------
# handlers: plain (sync server and grpc.aio's thread pool) and async
# --------------------------------------------------------------------------


def table(*behaviours: Callable[..., Any]) -> dict[str, Any]:
    """The method handlers of a service, from its behaviours in the order of ``SHAPES``."""
    return {
        name: make(behaviour) for (name, make), behaviour in zip(SHAPES, behaviours, strict=True)
    }


SHAPES: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("Unary", grpc.unary_unary_rpc_method_handler),
    ("ServerStream", grpc.unary_stream_rpc_method_handler),
    ("ClientStream", grpc.stream_unary_rpc_method_handler),
    ("Bidi", grpc.stream_stream_rpc_method_handler),
    ("Fail", grpc.unary_unary_rpc_method_handler),
    ("FailStream", grpc.unary_stream_rpc_method_handler),
    ("Abort", grpc.unary_unary_rpc_method_handler),
    ("Annotate", grpc.unary_unary_rpc_method_handler),
    ("Slow", grpc.unary_unary_rpc_method_handler),
    ("Meta", grpc.unary_unary_rpc_method_handler),
    ("SlowStream", grpc.unary_stream_rpc_method_handler),
)


def plain_handlers(log: logging.Logger, relay: Callable[[], bytes] | None) -> dict[str, Any]:
    def unary(request: bytes, context: Any) -> bytes:
        log.info("unary")
        return rid()

    def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
        for step in range(3):
            with ctxlog.bind(step=step):  # held across the yield
                log.info("item")
                yield rid()
        log.info("stream done")

    def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
        for _ in requests:
            log.info("got")
        return rid()

    def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for _ in requests:
            log.info("echo")
            yield rid()

    def fail(request: bytes, context: Any) -> bytes:
        log.info("about to fail")
        raise ValueError("boom")

    def fail_stream(request: bytes, context: Any) -> Iterator[bytes]:
        yield rid()
        log.info("about to fail")
        raise ValueError("boom")

    def abort(request: bytes, context: Any) -> bytes:
        log.info("aborting")
        context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")
        raise AssertionError  # abort raises

    def annotate(request: bytes, context: Any) -> bytes:
        ctxlog.annotate(user="u1")

        def work() -> None:
            ctxlog.annotate(tenant="t1")
            log.info("worker")

        with ctxlog.ThreadPoolExecutor(1) as pool:
            pool.submit(work).result()
        log.info("after worker")
        return rid()

    def slow(request: bytes, context: Any) -> bytes:
        log.info("slow start")
        time.sleep(0.4)
        log.info("slow end")
        return rid()

    def meta(request: bytes, context: Any) -> bytes:
        context.send_initial_metadata([("x-own", "1")])
        return rid()

    def slow_stream(request: bytes, context: Any) -> Iterator[bytes]:
        try:
            for _ in range(40):
                yield rid()
                time.sleep(0.05)
        finally:
            log.info("stream closed")

    handlers = table(
        unary,
        server_stream,
        client_stream,
        bidi,
        fail,
        fail_stream,
        abort,
        annotate,
        slow,
        meta,
        slow_stream,
    )
    if relay is not None:
        call_b = relay

        def relayed(request: bytes, context: Any) -> bytes:
            log.info("relay")
            answer = call_b()
            log.info("relayed")
            return rid() + b"|" + answer

        handlers["Relay"] = grpc.unary_unary_rpc_method_handler(relayed)
    return handlers


def async_handlers(
    log: logging.Logger, relay: Callable[[], Awaitable[bytes]] | None
) -> dict[str, Any]:
    async def unary(request: bytes, context: Any) -> bytes:
        await asyncio.sleep(0)
        log.info("unary")
        return rid()

    async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for step in range(3):
            with ctxlog.bind(step=step):  # held across the yield
                await asyncio.sleep(0)
                log.info("item")
                yield rid()
        log.info("stream done")

    async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
        async for _ in requests:
            log.info("got")
        return rid()

    async def bidi(requests: AsyncIterator[bytes], context: Any) -> None:
        # the reader/writer API
        async for _ in requests:
            log.info("echo")
            await context.write(rid())

    async def fail(request: bytes, context: Any) -> bytes:
        log.info("about to fail")
        raise ValueError("boom")

    async def fail_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield rid()
        log.info("about to fail")
        raise ValueError("boom")

    async def abort(request: bytes, context: Any) -> bytes:
        log.info("aborting")
        await context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")
        raise AssertionError  # abort raises

    async def annotate(request: bytes, context: Any) -> bytes:
        ctxlog.annotate(user="u1")

        def work() -> None:
            ctxlog.annotate(tenant="t1")
            log.info("worker")

        await asyncio.get_running_loop().run_in_executor(None, ctxlog.wrap(work))
        log.info("after worker")
        return rid()

    async def slow(request: bytes, context: Any) -> bytes:
        log.info("slow start")
        try:
            await asyncio.sleep(0.4)
        finally:
            log.info("slow end")
        return rid()

    async def meta(request: bytes, context: Any) -> bytes:
        await context.send_initial_metadata([("x-own", "1")])
        return rid()

    async def slow_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        try:
            for _ in range(40):
                yield rid()
                await asyncio.sleep(0.05)
        finally:
            log.info("stream closed")

    handlers = table(
        unary,
        server_stream,
        client_stream,
        bidi,
        fail,
        fail_stream,
        abort,
        annotate,
        slow,
        meta,
        slow_stream,
    )
    if relay is not None:
        call_b = relay

        async def relayed(request: bytes, context: Any) -> bytes:
            log.info("relay")
            answer = await call_b()
            log.info("relayed")
            return rid() + b"|" + answer

        handlers["Relay"] = grpc.unary_unary_rpc_method_handler(relayed)
    return handlers


# --------------------------------------------------------------------------
# the probe: what grpc's side sees after each step of a handler
# --------------------------------------------------------------------------


class Probe:
    """Wraps every behaviour outside ctxlog's wrapper; records the context
    grpc's thread or task has after each step."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(self) -> None:
        with self._lock:
            self.seen.append(dict(ctxlog.current()))

    def leaked(self) -> list[dict[str, Any]]:
        with self._lock:
            return [seen for seen in self.seen if seen]

    def wrap(self, handler: Any) -> Any:
        if handler is None:
            return None
        shape = (handler.request_streaming, handler.response_streaming)
        name, make = {
            (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
            (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
            (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
            (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
        }[shape]
        inner = getattr(handler, name)
        record = self.record
        wrapped: Callable[..., Any]
        if inspect.isasyncgenfunction(inner):

            async def agen(request: Any, context: Any) -> AsyncIterator[Any]:
                try:
                    async for item in inner(request, context):
                        record()
                        yield item
                finally:
                    record()

            wrapped = agen
        elif inspect.iscoroutinefunction(inner):

            async def coro(request: Any, context: Any) -> Any:
                try:
                    return await inner(request, context)
                finally:
                    record()

            wrapped = coro
        elif handler.response_streaming:

            def gen(request: Any, context: Any) -> Iterator[Any]:
                try:
                    for item in inner(request, context):
                        record()
                        yield item
                finally:
                    record()

            wrapped = gen
        else:

            def call(request: Any, context: Any) -> Any:
                try:
                    return inner(request, context)
                finally:
                    record()

            wrapped = call
        return make(wrapped, handler.request_deserializer, handler.response_serializer)


class SyncProbe(grpc.ServerInterceptor):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        return self.probe.wrap(continuation(handler_call_details))


class AsyncProbe(grpc.aio.ServerInterceptor):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        return self.probe.wrap(await continuation(handler_call_details))


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------


class Services:
    """Service A (with the probe) and service B of one flavour, on loopback."""

    def __init__(self, flavour: str, port_a: int, port_b: int, probe: Probe) -> None:
        self.flavour = flavour
        self.port_a = port_a
        self.port_b = port_b
        self.probe = probe
        # Any: the stubs type a multicallable's request as Never without serializers
        self.channel: Any = grpc.insecure_channel(f"127.0.0.1:{port_a}")

    def unary(self, method: str) -> Any:
        return self.channel.unary_unary(f"/{A}/{method}")

    def close(self) -> None:
        self.channel.close()


def start_sync(interceptors: list[Any], handlers: dict[str, Any], service: str) -> tuple[Any, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=24), interceptors=interceptors)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@contextlib.contextmanager
def sync_services() -> Iterator[Services]:
    probe = Probe()
    server_b, port_b = start_sync(
        [ctxlog.grpc.ServerInterceptor(baggage=BAGGAGE)], plain_handlers(LOG_B, None), B
    )
    channel_b = grpc.intercept_channel(
        grpc.insecure_channel(f"127.0.0.1:{port_b}"),
        ctxlog.grpc.ClientInterceptor(baggage=BAGGAGE),
    )
    call_b: Any = channel_b.unary_unary(f"/{B}/Unary")
    server_a, port_a = start_sync(
        [SyncProbe(probe), ctxlog.grpc.ServerInterceptor(baggage=BAGGAGE)],
        plain_handlers(LOG_A, lambda: call_b(b"x")),
        A,
    )
    services = Services("sync", port_a, port_b, probe)
    try:
        yield services
    finally:
        services.close()
        server_a.stop(None).wait(5)
        server_b.stop(None).wait(5)
        channel_b.close()


class LoopThread:
    """An event loop running in a thread of its own, for grpc.aio servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[Any]) -> Any:
        async def wrapper() -> Any:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(20)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class DaemonPool(futures.Executor):
    """A thread pool whose threads do not hold the interpreter at exit.

    After a cancel, grpc.aio leaves the pool thread of a plain ``def`` stream
    handler waiting for good (see `test_cancelled_stream_closes_in_its_context`);
    ``concurrent.futures.ThreadPoolExecutor`` joins its threads at exit, so the
    test process would never end.
    """

    def __init__(self, workers: int) -> None:
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> futures.Future[Any]:
        future: futures.Future[Any] = futures.Future()
        self._work.put((future, fn, args, kwargs))
        return future

    def _run(self) -> None:
        while (item := self._work.get()) is not None:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:  # noqa: ARG002 -- Executor's signature
        for _ in self._threads:
            self._work.put(None)


async def start_aio(interceptors: list[Any], handlers: dict[str, Any], service: str) -> Any:
    server = grpc.aio.server(DaemonPool(24), interceptors=interceptors)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@contextlib.contextmanager
def aio_services(kind: str) -> Iterator[Services]:
    probe = Probe()
    loop = LoopThread()
    closers: list[Callable[[], Any]] = []

    async def setup() -> tuple[int, int]:
        interceptor = ctxlog.grpc.AsyncServerInterceptor(baggage=BAGGAGE)
        if kind == "async":
            server_b, port_b = await start_aio([interceptor], async_handlers(LOG_B, None), B)
            channel_b = grpc.aio.insecure_channel(
                f"127.0.0.1:{port_b}",
                interceptors=[*ctxlog.grpc.AsyncClientInterceptor(baggage=BAGGAGE)],
            )
            call_b: Any = channel_b.unary_unary(f"/{B}/Unary")

            async def relay() -> bytes:
                answer: bytes = await call_b(b"x")
                return answer

            server_a, port_a = await start_aio(
                [AsyncProbe(probe), interceptor], async_handlers(LOG_A, relay), A
            )
            closers.append(channel_b.close)
        else:
            server_b, port_b = await start_aio([interceptor], plain_handlers(LOG_B, None), B)
            sync_b = grpc.intercept_channel(
                grpc.insecure_channel(f"127.0.0.1:{port_b}"),
                ctxlog.grpc.ClientInterceptor(baggage=BAGGAGE),
            )
            plain_b: Any = sync_b.unary_unary(f"/{B}/Unary")
            server_a, port_a = await start_aio(
                [AsyncProbe(probe), interceptor],
                plain_handlers(LOG_A, lambda: plain_b(b"x")),
                A,
            )

            async def close_sync() -> None:
                sync_b.close()

            closers.append(close_sync)
        closers.append(lambda: server_a.stop(None))
        closers.append(lambda: server_b.stop(None))
        return port_a, port_b

    port_a, port_b = loop.run(setup())
    services = Services(f"aio-{kind}", port_a, port_b, probe)
    try:
        yield services
    finally:
        services.close()
        for close in closers:
            loop.run(close())
        loop.close()


@pytest.fixture(scope="module", params=["sync", "aio-async", "aio-def"])
def services(request: pytest.FixtureRequest) -> Iterator[Services]:
    flavour: str = request.param
    if flavour == "sync":
        with sync_services() as found:
            yield found
    else:
        with aio_services(flavour.removeprefix("aio-")) as found:
            yield found


def ours(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] in OURS]


def initial(call: Any) -> list[tuple[str, str | bytes]]:
    """The initial metadata a call (or its error) came back with, as pairs."""
    return [tuple(m) for m in call.initial_metadata()]


def settle() -> None:
    """Lines of a cancelled handler may come a little after the client's error."""
    time.sleep(0.05)


# --------------------------------------------------------------------------
# server: every arity
# --------------------------------------------------------------------------


def test_unary_unary(services: Services) -> None:
    with capture(level="INFO") as lines:
        answer, call = services.unary("Unary").with_call(
            b"x", metadata=[("x-request-id", "req-uu")]
        )
    assert answer == b"req-uu"
    assert ("x-request-id", "req-uu") in initial(call)
    got = ours(lines)
    assert [(line["message"], line["request_id"]) for line in got] == [("unary", "req-uu")]
    assert services.probe.leaked() == []


def test_unary_stream_with_bind_across_yields(services: Services) -> None:
    stream = services.channel.unary_stream(f"/{A}/ServerStream")
    with capture(level="INFO") as lines:
        call = stream(b"x", metadata=[("x-request-id", "req-us")])
        answers = list(call)
        settle()
    assert answers == [b"req-us"] * 3
    assert ("x-request-id", "req-us") in initial(call)
    got = ours(lines)
    assert [line["message"] for line in got] == ["item", "item", "item", "stream done"]
    assert {line["request_id"] for line in got} == {"req-us"}
    assert [line.get("step") for line in got] == [0, 1, 2, None]
    assert services.probe.leaked() == []


def test_stream_unary(services: Services) -> None:
    stream = services.channel.stream_unary(f"/{A}/ClientStream")
    with capture(level="INFO") as lines:
        answer, call = stream.with_call(
            iter([b"1", b"2", b"3"]), metadata=[("x-request-id", "req-su")]
        )
    assert answer == b"req-su"
    assert ("x-request-id", "req-su") in initial(call)
    got = ours(lines)
    assert [(line["message"], line["request_id"]) for line in got] == [("got", "req-su")] * 3
    assert services.probe.leaked() == []


def test_stream_stream(services: Services) -> None:
    stream = services.channel.stream_stream(f"/{A}/Bidi")
    with capture(level="INFO") as lines:
        call = stream(iter([b"1", b"2"]), metadata=[("x-request-id", "req-ss")])
        answers = list(call)
        settle()
    assert answers == [b"req-ss"] * 2
    assert ("x-request-id", "req-ss") in initial(call)
    got = ours(lines)
    assert [(line["message"], line["request_id"]) for line in got] == [("echo", "req-ss")] * 2
    assert services.probe.leaked() == []


def test_generated_id_echoed_and_traceparent(services: Services) -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    with capture(level="INFO") as lines:
        answer, call = services.unary("Unary").with_call(
            b"x", metadata=[("traceparent", f"00-{trace}-b7ad6b7169203331-01")]
        )
    echoed = dict(initial(call))["x-request-id"]
    assert answer.decode() == echoed
    assert len(echoed) == 32
    [line] = ours(lines)
    assert line["request_id"] == echoed
    assert line["trace_id"] == trace


def test_handler_metadata_keeps_its_own_and_gets_the_id(services: Services) -> None:
    _, call = services.unary("Meta").with_call(b"x", metadata=[("x-request-id", "req-meta")])
    metadata = initial(call)
    assert ("x-own", "1") in metadata
    assert ("x-request-id", "req-meta") in metadata


def test_annotate_from_handler_and_its_threads(services: Services) -> None:
    with capture(level="INFO") as lines:
        answer = services.unary("Annotate")(b"x", metadata=[("x-request-id", "req-ann")])
    assert answer == b"req-ann"
    got = {line["message"]: line for line in ours(lines)}
    assert got["worker"]["request_id"] == "req-ann"
    assert got["worker"]["user"] == "u1"
    assert got["after worker"]["tenant"] == "t1"
    assert got["after worker"]["user"] == "u1"
    assert services.probe.leaked() == []


# --------------------------------------------------------------------------
# server: errors, aborts, cancels, deadlines
# --------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["Fail", "FailStream"])
def test_error_line_carries_the_id(services: Services, method: str) -> None:
    with capture(level="INFO") as lines:
        if method == "Fail":
            with pytest.raises(grpc.RpcError) as raised:
                services.unary(method)(b"x", metadata=[("x-request-id", "req-fail")])
        else:
            stream = services.channel.unary_stream(f"/{A}/{method}")
            with pytest.raises(grpc.RpcError) as raised:
                list(stream(b"x", metadata=[("x-request-id", "req-fail")]))
        settle()
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert "boom" in error.details()
    assert ("x-request-id", "req-fail") in initial(error)
    errors = [line for line in lines if line["level"] == "ERROR"]
    # one error line, ours, with the id and the traceback; none from grpc without it
    assert [(line["logger"], line["request_id"]) for line in errors] == [
        ("ctxlog.grpc", "req-fail")
    ]
    assert "ValueError: boom" in errors[0]["exception"]
    assert services.probe.leaked() == []


def test_abort_is_not_an_error(services: Services) -> None:
    with capture(level="INFO") as lines:
        with pytest.raises(grpc.RpcError) as raised:
            services.unary("Abort")(b"x", metadata=[("x-request-id", "req-abort")])
        settle()
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "nothing here"
    assert ("x-request-id", "req-abort") in initial(error)
    assert [line for line in lines if line["level"] == "ERROR"] == []
    assert [(line["message"], line["request_id"]) for line in ours(lines)] == [
        ("aborting", "req-abort")
    ]
    assert services.probe.leaked() == []


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_cancel_and_deadline_leave_nothing_bound(services: Services, how: str) -> None:
    with capture(level="INFO") as lines:
        if how == "deadline":
            with pytest.raises(grpc.RpcError) as raised:
                services.unary("Slow")(b"x", metadata=[("x-request-id", "req-gone")], timeout=0.1)
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        else:
            future = services.unary("Slow").future(b"x", metadata=[("x-request-id", "req-gone")])
            time.sleep(0.1)
            future.cancel()
        # the handler goes on (sync) or is cancelled (aio); either way it ends
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "slow end" not in [line["message"] for line in lines]:
            time.sleep(0.02)
        time.sleep(0.05)
        # the next call on the same server starts clean
        answer = services.unary("Unary")(b"x", metadata=[("x-request-id", "req-next")])
    assert answer == b"req-next"
    got = [(line["message"], line["request_id"]) for line in ours(lines)]
    assert ("slow start", "req-gone") in got
    assert ("slow end", "req-gone") in got
    assert ("unary", "req-next") in got
    assert services.probe.leaked() == []


def test_cancelled_stream_closes_in_its_context(services: Services) -> None:
    stream = services.channel.unary_stream(f"/{A}/SlowStream")
    with capture(level="INFO") as lines:
        call = stream(b"x", metadata=[("x-request-id", "req-closed")])
        assert next(call) == b"req-closed"
        call.cancel()
        deadline = time.monotonic() + (0.5 if services.flavour == "aio-def" else 5)
        while time.monotonic() < deadline and "stream closed" not in [
            line["message"] for line in lines
        ]:
            time.sleep(0.02)
    closed = [line["request_id"] for line in ours(lines) if line["message"] == "stream closed"]
    if services.flavour == "aio-def":
        # grpc.aio feeds a plain generator's items through a queue of one from
        # a pool thread; once the call is cancelled that thread waits on the
        # full queue for good, and the generator is never closed: nothing of
        # it runs again, in any context.
        assert closed == []
    else:
        assert closed == ["req-closed"]
    assert services.probe.leaked() == []


def test_cancelled_client_stream_is_not_an_error(services: Services) -> None:
    stream = services.channel.stream_unary(f"/{A}/ClientStream")
    sent = threading.Event()

    def requests() -> Iterator[bytes]:
        yield b"1"
        sent.set()
        time.sleep(0.5)
        yield b"2"

    with capture(level="INFO") as lines:
        future = stream.future(requests(), metadata=[("x-request-id", "req-client-gone")])
        sent.wait(5)
        time.sleep(0.1)
        future.cancel()
        time.sleep(0.6)
    assert [line for line in lines if line["level"] == "ERROR"] == []
    got = [(line["message"], line["request_id"]) for line in ours(lines)]
    assert got == [("got", "req-client-gone")]
    assert services.probe.leaked() == []


# --------------------------------------------------------------------------
# two services, 100 concurrent calls
# --------------------------------------------------------------------------


def test_two_services_under_concurrency(services: Services) -> None:
    relay = services.unary("Relay")
    ids = [f"req-{services.flavour}-{n:03d}" for n in range(100)]
    with capture(level="INFO") as lines:
        with futures.ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(
                pool.map(
                    lambda i: relay(
                        b"x",
                        metadata=[("x-request-id", i), ("baggage", f"tenant=t-{i}")],
                        timeout=30,
                    ),
                    ids,
                )
            )
        settle()
    assert answers == [f"{i}|{i}".encode() for i in ids]
    got = ours(lines)
    report = check(got)
    assert report.lines == 300
    assert [p for p in report.problems if p.kind == "missing"] == []
    assert [p for p in report.problems if p.kind == "crossed"] == []
    by_logger: dict[str, set[str]] = {"svc.a": set(), "svc.b": set()}
    for line in got:
        by_logger[line["logger"]].add(line["request_id"])
        assert line["tenant"] == f"t-{line['request_id']}"  # baggage, in A and on to B
    assert by_logger == {"svc.a": set(ids), "svc.b": set(ids)}
    assert services.probe.leaked() == []


# --------------------------------------------------------------------------
# hostile metadata
# --------------------------------------------------------------------------


def raw_call(port: int, path: str, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A unary gRPC call over a raw HTTP/2 connection, sending *headers* as given;
    the response's headers and trailers."""
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    out: list[tuple[bytes, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        stream_id = conn.get_next_available_stream_id()
        request = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.encode()),
            (b":authority", b"127.0.0.1"),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *headers,
        ]
        conn.send_headers(stream_id, request)
        conn.send_data(stream_id, b"\x00\x00\x00\x00\x01x", end_stream=True)
        sock.sendall(conn.data_to_send())
        done = False
        while not done:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    out.extend((bytes(k), bytes(v)) for k, v in event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
    return out


SECRET = "sekrit\nINFO forged line"

HOSTILE: dict[str, list[tuple[bytes, bytes]]] = {
    "oversized": [(b"x-request-id", b"a" * 6000)],
    "non-ascii": [(b"x-request-id", "r\u00e9q-\u2603\u00ff".encode())],
    "non-ascii-latin1": [(b"x-request-id", b"req-\xe9\xff")],
    "control": [(b"x-request-id", SECRET.encode())],
    "repeated": [(b"x-request-id", b"req-one"), (b"x-request-id", b"req-two")],
    "binary-key": [(b"x-request-id-bin", b"AAEC"), (b"traceparent-bin", b"AAEC")],
    "binary-key-and-id": [(b"x-request-id-bin", b"c2Vrcml0"), (b"x-request-id", b"req-bin")],
    "bad-traceparent": [(b"traceparent", b"00-" + b"f" * 600)],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_metadata(services: Services, name: str) -> None:
    sent = HOSTILE[name]
    with capture(level="INFO") as lines:
        answer = raw_call(services.port_a, f"/{A}/Unary", sent)
        settle()
    response = dict(answer)
    got = ours(lines)
    assert response.get(b"grpc-status") == b"0"  # the call went through, the value with it
    [unary] = [line for line in got if line["message"] == "unary"]
    request_id = unary["request_id"]
    assert response[b"x-request-id"].decode() == request_id
    if name == "binary-key-and-id":
        assert request_id == "req-bin"
    else:
        assert len(request_id) == 32
        assert request_id.isalnum()
    for line in got:
        text = repr(line)
        for _, value in sent:
            if len(value) > 8:
                assert value.decode("latin-1") not in text
                assert value.decode("latin-1") not in str(line.get("message"))
        assert "\n" not in line["message"]
    assert services.probe.leaked() == []


def test_binary_header_option() -> None:
    """A ``-bin`` header option: the bytes are validated like any value."""
    server, port = start_sync(
        [ctxlog.grpc.ServerInterceptor(header="x-request-id-bin")],
        plain_handlers(LOG_A, None),
        A,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary: Any = channel.unary_unary(f"/{A}/Unary")
            with capture(level="INFO") as lines:
                good = unary(b"x", metadata=[("x-request-id-bin", b"req-bytes")])
                bad, call = unary.with_call(b"x", metadata=[("x-request-id-bin", b"\x00\xff\n")])
    finally:
        server.stop(None).wait(5)
    assert good == b"req-bytes"
    assert len(bad) == 32
    assert dict(initial(call))["x-request-id-bin"] == bad
    [warning] = [line for line in lines if line["level"] == "WARNING"]
    assert "\x00" not in warning["message"]
    assert warning["request_id"] == bad.decode()


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metadata_server() -> Iterator[int]:
    """A server with no ctxlog at all, answering with the metadata it received."""

    def show(metadata: Any) -> bytes:
        return repr(sorted((m.key, m.value) for m in metadata)).encode()

    def unary(request: bytes, context: Any) -> bytes:
        return show(context.invocation_metadata())

    def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
        yield show(context.invocation_metadata())

    def client_stream(requests: Iterator[bytes], context: Any) -> bytes:
        list(requests)
        return show(context.invocation_metadata())

    def bidi(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        list(requests)
        yield show(context.invocation_metadata())

    handlers: dict[str, Any] = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    }
    server, port = start_sync([], handlers, "test.M")
    yield port
    server.stop(None).wait(5)


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def expected(caller: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted([*caller, ("x-request-id", "req-client")])


def test_client_interceptor_all_arities(metadata_server: int) -> None:
    channel: Any = grpc.intercept_channel(
        grpc.insecure_channel(f"127.0.0.1:{metadata_server}"), ctxlog.grpc.ClientInterceptor()
    )
    own = [("x-caller", "1")]
    with channel:
        with ctxlog.bind(request_id="req-client", trace_id=TRACE):
            answers = [
                channel.unary_unary("/test.M/Unary")(b"x", metadata=own),
                *channel.unary_stream("/test.M/ServerStream")(b"x", metadata=own),
                channel.stream_unary("/test.M/ClientStream")(iter([b"x"]), metadata=own),
                *channel.stream_stream("/test.M/Bidi")(iter([b"x"]), metadata=own),
            ]
            # the caller's own id wins: never sent twice
            mine = channel.unary_unary("/test.M/Unary")(
                b"x", metadata=[("x-request-id", "req-mine")]
            )
        bare = channel.unary_unary("/test.M/Unary")(b"x")
    for answer in answers:
        received = dict(eval(answer))  # noqa: S307 -- our own server's repr of metadata
        assert received["x-request-id"] == "req-client"
        assert received["x-caller"] == "1"
        assert received["traceparent"].startswith(f"00-{TRACE}-")
    assert eval(mine).count(("x-request-id", "req-mine")) == 1  # noqa: S307 -- as above
    assert "x-request-id" not in bare.decode()


def test_async_client_interceptor_all_arities(metadata_server: int) -> None:
    async def scenario() -> list[bytes]:
        channel: Any = grpc.aio.insecure_channel(
            f"127.0.0.1:{metadata_server}", interceptors=[*ctxlog.grpc.AsyncClientInterceptor()]
        )
        own = (("x-caller", "1"),)
        async with channel:
            with ctxlog.bind(request_id="req-client", trace_id=TRACE):
                answers = [
                    await channel.unary_unary("/test.M/Unary")(b"x", metadata=own),
                    *[
                        item
                        async for item in channel.unary_stream("/test.M/ServerStream")(
                            b"x", metadata=own
                        )
                    ],
                    await channel.stream_unary("/test.M/ClientStream")(iter([b"x"]), metadata=own),
                    *[
                        item
                        async for item in channel.stream_stream("/test.M/Bidi")(
                            iter([b"x"]), metadata=own
                        )
                    ],
                    await channel.unary_unary("/test.M/Unary")(
                        b"x", metadata=(("x-request-id", "req-mine"),)
                    ),
                ]
            answers.append(await channel.unary_unary("/test.M/Unary")(b"x"))
        # passed as it is, the object itself intercepts (unary-unary at least)
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{metadata_server}", interceptors=[ctxlog.grpc.AsyncClientInterceptor()]
        ) as plain_channel:
            plain: Any = plain_channel
            with ctxlog.bind(request_id="req-client", trace_id=TRACE):
                answers.insert(0, await plain.unary_unary("/test.M/Unary")(b"x", metadata=own))
        return answers

    *answers, mine, bare = asyncio.run(scenario())
    for answer in answers:
        received = dict(eval(answer))  # noqa: S307 -- our own server's repr of metadata
        assert received["x-request-id"] == "req-client"
        assert received["x-caller"] == "1"
        assert received["traceparent"].startswith(f"00-{TRACE}-")
    assert eval(mine).count(("x-request-id", "req-mine")) == 1  # noqa: S307 -- as above
    assert "x-request-id" not in bare.decode()


# --------------------------------------------------------------------------
# options and the module itself
# --------------------------------------------------------------------------


def test_request_fields_and_options() -> None:
    interceptor = ctxlog.grpc.ServerInterceptor(
        request_fields=("path", "client"), key="rid", header="X-Correlation-ID"
    )
    assert "X-Correlation-ID" in repr(interceptor)
    server, port = start_sync([interceptor], plain_handlers(LOG_A, None), A)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary: Any = channel.unary_unary(f"/{A}/Unary")
            with capture(level="INFO") as lines:
                _, call = unary.with_call(b"x", metadata=[("x-correlation-id", "req-opts")])
    finally:
        server.stop(None).wait(5)
    [line] = ours(lines)
    assert line["rid"] == "req-opts"
    assert line["path"] == f"/{A}/Unary"
    assert line["client"].startswith("ipv4:127.0.0.1:")
    assert ("x-correlation-id", "req-opts") in initial(call)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ctxlog.grpc.ServerInterceptor(header="x request id"),
        lambda: ctxlog.grpc.AsyncServerInterceptor(max_length=0),
        lambda: ctxlog.grpc.ServerInterceptor(validator="no"),  # type: ignore[arg-type]
        lambda: ctxlog.grpc.ClientInterceptor(header=""),
        lambda: ctxlog.grpc.AsyncClientInterceptor(header="a\nb"),
    ],
)
def test_invalid_options_are_refused_at_construction(make: Callable[[], object]) -> None:
    with pytest.raises(ctxlog.ContextError):
        make()


def test_status_code_set_before_an_error_is_kept() -> None:
    def coded(request: bytes, context: Any) -> bytes:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        raise RuntimeError("not ready")

    handlers: dict[str, Any] = {"Coded": grpc.unary_unary_rpc_method_handler(coded)}
    server, port = start_sync([ctxlog.grpc.ServerInterceptor()], handlers, A)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: Any = channel.unary_unary(f"/{A}/Coded")
            with capture(level="INFO") as lines, pytest.raises(grpc.RpcError) as raised:
                call(b"x", metadata=[("x-request-id", "req-coded")])
    finally:
        server.stop(None).wait(5)
    error: Any = raised.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not ready" in error.details()
    [line] = [line for line in lines if line["level"] == "ERROR"]
    assert line["request_id"] == "req-coded"


def test_the_unit_of_work_ends_with_the_call() -> None:
    """A thread the handler started and left running cannot annotate a call that ended."""
    left: list[Callable[[], None]] = []

    def unary(request: bytes, context: Any) -> bytes:
        left.append(ctxlog.wrap(lambda: ctxlog.annotate(late=True)))
        return rid()

    handlers: dict[str, Any] = {"Unary": grpc.unary_unary_rpc_method_handler(unary)}
    server, port = start_sync([ctxlog.grpc.ServerInterceptor()], handlers, A)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call: Any = channel.unary_unary(f"/{A}/Unary")
            assert call(b"x", metadata=[("x-request-id", "req-ended")]) == b"req-ended"
    finally:
        server.stop(None).wait(5)
    [late] = left
    with pytest.raises(ctxlog.ContextError, match="already ended"):
        late()


def test_missing_grpcio_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['grpc'] = None\n"
        "try:\n"
        "    import ctxlog.grpc\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'ctxlog-correlation[grpc]'" in out


def test_baggage_keys_come_in_as_on_http() -> None:
    interceptor = ctxlog.grpc.ServerInterceptor(baggage=("tenant", "plan"))

    server, port = start_sync([interceptor], plain_handlers(LOG_A, None), A)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary: Any = channel.unary_unary(f"/{A}/Unary")
            with capture(level="INFO") as lines:
                unary(
                    b"x",
                    metadata=[
                        ("x-request-id", "req-bag"),
                        ("baggage", "tenant=acme,other=nope"),
                        ("baggage", "plan=gold%0Aforged,junk"),
                    ],
                )
    finally:
        server.stop(None).wait(5)
    [line] = ours(lines)
    assert line["request_id"] == "req-bag"
    assert line["tenant"] == "acme"
    assert "other" not in line
    assert "plan" not in line  # a line break, once decoded: left out
