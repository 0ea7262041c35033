"""gRPC benchmark: what ctxlog's interceptors add to a unary call on loopback.

Two servers on 127.0.0.1 answer the same unary method (bytes in, bytes out,
one log call below the level, as a handler has): one without interceptors,
one with ``ctxlog.grpc.ServerInterceptor`` (``AsyncServerInterceptor`` for
``grpc.aio``).  The client calls the first on a plain channel with an
``x-request-id`` of its own, and the second through ``ClientInterceptor``
(``AsyncClientInterceptor``) from inside a bound request id, so the same
metadata goes out both ways: the figure is the interceptors' cost, both
sides, with the echo (the id sent back in the initial metadata, which grpc
sends as a batch of its own) and without it (``echo=False``).  One call at
a time, in rounds (the order rotating); what is timed is the CPU time of the
process, client and server both, per call (on a shared machine it is far
steadier than the wall clock, which mostly measures the neighbours); each
ratio is the median of the ratios within a round.  ctxlog's own work per
call, without the network, is printed first.
Target: under 5 % (ratio <= 1.05).  Run it with ``python benchmarks/run.py
grpc`` (``--quick`` for a rough pass) or alone.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import timeit
from collections.abc import Callable
from concurrent import futures
from typing import Any, Final, NamedTuple

import grpc
import grpc.aio
from _harness import median_ratio, quick, verdict

import ctxlog
from ctxlog.grpc import (
    AsyncClientInterceptor,
    AsyncServerInterceptor,
    ClientInterceptor,
    ServerInterceptor,
)

__all__ = ["main"]

TARGET = 1.05
REQUEST_ID = "6f1c2a9e3d414b8f9a570c2e8d7b1f34"
METHOD = "/bench.S/Unary"
_log = logging.getLogger("bench.grpc")


def _unary(request: bytes, _context: Any) -> bytes:
    _log.debug("handled")
    return request


async def _async_unary(request: bytes, _context: Any) -> bytes:
    _log.debug("handled")
    return request


def _handlers(behaviour: Callable[..., Any]) -> tuple[grpc.GenericRpcHandler]:
    handler: Any = grpc.unary_unary_rpc_method_handler(behaviour)
    return (grpc.method_handlers_generic_handler("bench.S", {"Unary": handler}),)


def _rounds() -> tuple[int, int]:
    """(rounds, calls per round)."""
    return (5, 100) if quick() else (21, 300)


#: The servers' interceptors, by variant: the reference first.
_VARIANTS: Final = ("no interceptor", "ctxlog", "ctxlog, echo=False")


def _report(label: str, samples: dict[str, list[float]]) -> None:
    reference = samples[_VARIANTS[0]]
    print(f"  {label}: no interceptor {statistics.median(reference) / 1000:.1f} us CPU/call")
    for variant in _VARIANTS[1:]:
        ratio = median_ratio(samples[variant], reference)
        print(
            f"    {variant:<20} {statistics.median(samples[variant]) / 1000:7.1f} us CPU/call"
            f"   {verdict(ratio, TARGET)}"
        )


def _order(n: int) -> tuple[int, ...]:
    """The variants' order in round *n*: rotating, so that none always goes first."""
    count = len(_VARIANTS)
    return tuple((n + i) % count for i in range(count))


def bench_sync() -> None:
    servers = []
    callables: list[Any] = []
    channels: list[grpc.Channel] = []
    server_interceptors: tuple[list[Any], ...] = (
        [],
        [ServerInterceptor()],
        [ServerInterceptor(echo=False)],
    )
    for n, interceptors in enumerate(server_interceptors):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
        server.add_generic_rpc_handlers(_handlers(_unary))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        if n:
            channel = grpc.intercept_channel(channel, ClientInterceptor())
        channels.append(channel)
        callables.append(channel.unary_unary(METHOD))
    metadata = (("x-request-id", REQUEST_ID),)

    def timed(n: int, calls: int) -> float:
        call = callables[n]
        # The reference sends the same metadata the interceptor adds.
        given = None if n else metadata
        with ctxlog.bind(request_id=REQUEST_ID):
            start = time.process_time_ns()
            for _ in range(calls):
                call(b"x", metadata=given)
            return (time.process_time_ns() - start) / calls

    rounds, calls = _rounds()
    samples: dict[str, list[float]] = {variant: [] for variant in _VARIANTS}
    for n in range(len(_VARIANTS)):  # warm up
        timed(n, calls)
    for round_ in range(rounds):
        for n in _order(round_):
            samples[_VARIANTS[n]].append(timed(n, calls))
    _report("grpc.server", samples)
    for channel in channels:
        channel.close()
    for server in servers:
        server.stop(None).wait(5)


async def _bench_aio() -> None:
    servers = []
    callables: list[Any] = []
    channels: list[grpc.aio.Channel] = []
    aio_interceptors: tuple[list[Any], ...] = (
        [],
        [AsyncServerInterceptor()],
        [AsyncServerInterceptor(echo=False)],
    )
    for n, interceptors in enumerate(aio_interceptors):
        server = grpc.aio.server(interceptors=interceptors)
        server.add_generic_rpc_handlers(_handlers(_async_unary))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        client = [*AsyncClientInterceptor()] if n else None
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", interceptors=client)
        channels.append(channel)
        callables.append(channel.unary_unary(METHOD))
    metadata = (("x-request-id", REQUEST_ID),)

    async def timed(n: int, calls: int) -> float:
        call = callables[n]
        given = None if n else metadata
        with ctxlog.bind(request_id=REQUEST_ID):
            start = time.process_time_ns()
            for _ in range(calls):
                await call(b"x", metadata=given)
            return (time.process_time_ns() - start) / calls

    rounds, calls = _rounds()
    samples: dict[str, list[float]] = {variant: [] for variant in _VARIANTS}
    for n in range(len(_VARIANTS)):
        await timed(n, calls)
    for round_ in range(rounds):
        for n in _order(round_):
            samples[_VARIANTS[n]].append(await timed(n, calls))
    _report("grpc.aio.server", samples)
    for channel in channels:
        await channel.close()
    for server in servers:
        await server.stop(None)


class _Metadatum(NamedTuple):
    key: str
    value: str


class _StandIn:
    """What a handler's servicer context gives the interceptor, with no call behind it."""

    metadata = (
        _Metadatum("user-agent", "grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)"),
        _Metadatum("x-request-id", REQUEST_ID),
    )

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return self.metadata

    def send_initial_metadata(self, metadata: object) -> None:
        pass


class _Details:
    """The call's details, as grpc gives them to a server interceptor."""

    def __init__(self, method: str, metadata: tuple[_Metadatum, ...]) -> None:
        self.method = method
        self.invocation_metadata: Any = metadata


def _best_us(fn: Callable[[], object]) -> float:
    """Microseconds per call: the best of several runs (the least disturbed)."""
    number = 2_000 if quick() else 20_000
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def bench_own_work() -> None:
    """ctxlog's own work per call, without the network: the server interceptor
    (find the wrapped handler, open and close the unit, the echo's call into
    grpc) and the client's metadata, beside the bare handler call."""
    handler: Any = grpc.unary_unary_rpc_method_handler(_unary)
    context = _StandIn()
    details = _Details(METHOD, context.metadata)

    def found(_details: object) -> Any:
        return handler

    interceptor = ServerInterceptor()

    def bare() -> None:
        found(details).unary_unary(b"x", context)

    def ours() -> None:
        interceptor.intercept_service(found, details).unary_unary(b"x", context)

    client = ClientInterceptor()
    call_details = _ClientDetails(METHOD, None, None, None, None, None)

    def continuation(_details: object, _request: object) -> None:
        return None

    def outgoing() -> None:
        client.intercept_unary_unary(continuation, call_details, b"x")

    def passing() -> None:
        continuation(call_details, b"x")

    with ctxlog.bind(request_id=REQUEST_ID):
        server_us = _best_us(ours) - _best_us(bare)
        client_us = _best_us(outgoing) - _best_us(passing)
    print(
        f"  ctxlog's own work per call, no network: server {server_us:.1f} us,"
        f" client {client_us:.1f} us"
    )


class _ClientDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


def main() -> None:
    print("gRPC: one unary call on loopback, ctxlog's interceptors (both sides) vs none")
    print("  (echo: the id sent back in the initial metadata, one more batch per call)")
    bench_own_work()
    bench_sync()
    asyncio.run(_bench_aio())


if __name__ == "__main__":
    main()
