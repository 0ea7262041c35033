"""gRPC benchmark: what ctxlog's interceptors add to a unary call on loopback.

Two servers on 127.0.0.1 answer the same unary method (bytes in, bytes out,
one log call below the level, as a handler has): one without interceptors,
one with ``ctxlog.grpc.ServerInterceptor`` (``AsyncServerInterceptor`` for
``grpc.aio``).  The client calls the first on a plain channel with an
``x-request-id`` of its own, and the second through ``ClientInterceptor``
(``AsyncClientInterceptor``) from inside a bound request id, so the same
metadata goes out both ways: the figure is the interceptors' cost, both
sides, echo included.  One call at a time (latency), in alternating rounds
(the order rotating); the ratio is the median of the ratios within a round.
Target: under 5 % (ratio <= 1.05).  Run it with ``python benchmarks/run.py
grpc`` (``--quick`` for a rough pass) or alone.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any

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


def _report(label: str, plain: list[float], ours: list[float]) -> None:
    ratio = median_ratio(ours, plain)
    print(
        f"  {label:<8} no interceptor {statistics.median(plain) / 1000:7.1f} us/call,"
        f" ctxlog {statistics.median(ours) / 1000:7.1f} us/call   {verdict(ratio, TARGET)}"
    )


def bench_sync() -> None:
    servers = []
    ports = []
    server_interceptors: tuple[list[Any], ...] = ([], [ServerInterceptor()])
    for interceptors in server_interceptors:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=interceptors)
        server.add_generic_rpc_handlers(_handlers(_unary))
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    plain_channel = grpc.insecure_channel(f"127.0.0.1:{ports[0]}")
    ours_channel = grpc.intercept_channel(
        grpc.insecure_channel(f"127.0.0.1:{ports[1]}"), ClientInterceptor()
    )
    plain: Any = plain_channel.unary_unary(METHOD)
    ours: Any = ours_channel.unary_unary(METHOD)
    metadata = (("x-request-id", REQUEST_ID),)

    def time_plain(calls: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            plain(b"x", metadata=metadata)
        return (time.perf_counter_ns() - start) / calls

    def time_ours(calls: int) -> float:
        with ctxlog.bind(request_id=REQUEST_ID):
            start = time.perf_counter_ns()
            for _ in range(calls):
                ours(b"x")
            return (time.perf_counter_ns() - start) / calls

    rounds, calls = _rounds()
    time_plain(calls)  # warm both up
    time_ours(calls)
    plain_ns: list[float] = []
    ours_ns: list[float] = []
    for n in range(rounds):
        if n % 2:
            ours_ns.append(time_ours(calls))
            plain_ns.append(time_plain(calls))
        else:
            plain_ns.append(time_plain(calls))
            ours_ns.append(time_ours(calls))
    _report("sync", plain_ns, ours_ns)
    plain_channel.close()
    ours_channel.close()
    for server in servers:
        server.stop(None).wait(5)


async def _bench_aio() -> None:
    servers = []
    ports = []
    aio_interceptors: tuple[list[Any], ...] = ([], [AsyncServerInterceptor()])
    for interceptors in aio_interceptors:
        server = grpc.aio.server(interceptors=interceptors)
        server.add_generic_rpc_handlers(_handlers(_async_unary))
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        servers.append(server)
    plain_channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports[0]}")
    ours_channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{ports[1]}", interceptors=[*AsyncClientInterceptor()]
    )
    plain: Any = plain_channel.unary_unary(METHOD)
    ours: Any = ours_channel.unary_unary(METHOD)
    metadata = (("x-request-id", REQUEST_ID),)

    async def time_plain(calls: int) -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            await plain(b"x", metadata=metadata)
        return (time.perf_counter_ns() - start) / calls

    async def time_ours(calls: int) -> float:
        with ctxlog.bind(request_id=REQUEST_ID):
            start = time.perf_counter_ns()
            for _ in range(calls):
                await ours(b"x")
            return (time.perf_counter_ns() - start) / calls

    rounds, calls = _rounds()
    await time_plain(calls)
    await time_ours(calls)
    plain_ns: list[float] = []
    ours_ns: list[float] = []
    order: tuple[Callable[[int], Awaitable[float]], ...]
    for n in range(rounds):
        order = (time_ours, time_plain) if n % 2 else (time_plain, time_ours)
        for timer in order:
            (ours_ns if timer is time_ours else plain_ns).append(await timer(calls))
    _report("grpc.aio", plain_ns, ours_ns)
    await plain_channel.close()
    await ours_channel.close()
    for server in servers:
        await server.stop(None)


def main() -> None:
    print("gRPC: one unary call on loopback, ctxlog's interceptors (both sides) vs none")
    bench_sync()
    asyncio.run(_bench_aio())


if __name__ == "__main__":
    main()
