"""Web benchmark: requests per second under ctxlog's ASGI middleware.

One small application, three ways: no middleware, asgi-correlation-id's
``CorrelationIdMiddleware`` (the anchor) and ``ctxlog.asgi.RequestContextMiddleware``,
all in this process and driven by the same client:

* **in process**: an ASGI driver calls the application directly (no sockets),
  for a bare ASGI app and for a one-route Starlette app, so the middleware's
  own cost shows;
* **over loopback**: each variant served by uvicorn on 127.0.0.1 (in a
  thread), loaded by one asyncio HTTP/1.1 client with 16 keep-alive
  connections (a minimal client, so that the server's side is what is timed:
  httpx's own cost per request is several times uvicorn's).

Each request either sends a valid ``X-Request-ID`` (a UUID4 in hex, which both
middlewares accept) or none (both generate one).  Variants are measured
side by side in many short rounds (the order rotating); the figures are
medians over the rounds, and each ratio is the median of the ratios measured
within a round, so that a burst of load elsewhere hits both sides of it.
Target: ctxlog >= 1.0x asgi-correlation-id.  Run it with
``python benchmarks/run.py web`` (``--quick`` for a rough pass) or alone.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable

import uvicorn
from _harness import median_ratio, quick
from asgi_correlation_id import CorrelationIdMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ctxlog.asgi import ASGIApp, Message, Receive, RequestContextMiddleware, Scope, Send

__all__ = ["main"]

TARGET = 1.0
REQUEST_ID = uuid.uuid4().hex


# --------------------------------------------------------------------------
# the applications
# --------------------------------------------------------------------------

_BODY = b"ok"


async def bare_app(_scope: Scope, _receive: Receive, send: Send) -> None:
    """A minimal ASGI application: one response, no framework."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": _BODY})


async def _home(_request: Request) -> Response:
    return PlainTextResponse("ok")


def starlette_app() -> ASGIApp:
    return Starlette(routes=[Route("/", _home)])


def variants(app: ASGIApp) -> dict[str, ASGIApp]:
    return {
        "no middleware": app,
        "asgi-correlation-id": CorrelationIdMiddleware(app),
        "ctxlog": RequestContextMiddleware(app),
    }


# --------------------------------------------------------------------------
# in process
# --------------------------------------------------------------------------


async def _drive(app: ASGIApp, count: int, headers: list[tuple[bytes, bytes]]) -> float:
    """Call *app* *count* times as a server would; return requests per second."""
    request: Message = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> Message:
        return request

    async def send(_message: Message) -> None:
        return None

    started = time.perf_counter()
    for _ in range(count):
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "root_path": "",
            "headers": list(headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send)
    return count / (time.perf_counter() - started)


Samples = dict[tuple[str, bool], list[float]]


def in_process(apps: dict[str, ASGIApp], rounds: int, count: int) -> Samples:
    """Requests/s per (variant, header sent), one sample per round."""
    samples: Samples = {}
    base = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    with_id = [*base, (b"x-request-id", REQUEST_ID.encode())]

    async def run_all() -> None:
        for app in apps.values():  # warm-up
            await _drive(app, count // 10, with_id)
        names = list(apps)
        for round_ in range(rounds):
            # Rotate the order so no variant always runs right after another.
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for sent in (True, False):
                for name in order:
                    rps = await _drive(apps[name], count, with_id if sent else base)
                    samples.setdefault((name, sent), []).append(rps)

    asyncio.run(run_all())
    return samples


# --------------------------------------------------------------------------
# over loopback
# --------------------------------------------------------------------------


class _Server:
    """uvicorn serving one variant on 127.0.0.1, in a thread."""

    def __init__(self, app: ASGIApp) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_config=None, access_log=False, http="h11", lifespan="off", log_level="error"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                msg = "uvicorn did not start"
                raise RuntimeError(msg)
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


async def _client(port: int, count: int, request: bytes) -> None:
    """One keep-alive HTTP/1.1 connection sending *count* requests, one at a time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 "):  # pragma: no cover -- a broken variant
                msg = f"port {port}: {head[:40]!r}"
                raise RuntimeError(msg)
            length = 0
            for line in head.lower().split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


async def _load(port: int, count: int, in_flight: int, sent: bool) -> float:
    """Requests/s of *in_flight* connections sharing *count* requests."""
    header = b"X-Request-ID: " + REQUEST_ID.encode() + b"\r\n" if sent else b""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n" + header + b"\r\n"
    per_client = count // in_flight
    started = time.perf_counter()
    await asyncio.gather(*(_client(port, per_client, request) for _ in range(in_flight)))
    return per_client * in_flight / (time.perf_counter() - started)


def over_loopback(apps: dict[str, ASGIApp], rounds: int, count: int) -> Samples:
    servers = {name: _Server(app) for name, app in apps.items()}
    for server in servers.values():
        server.start()
    samples: Samples = {}
    try:
        for server in servers.values():  # warm-up
            asyncio.run(_load(server.port, count // 5, 16, sent=True))
        names = list(servers)
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for sent in (True, False):
                for name in order:
                    rps = asyncio.run(_load(servers[name].port, count, 16, sent=sent))
                    samples.setdefault((name, sent), []).append(rps)
    finally:
        for server in servers.values():
            server.stop()
    return samples


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


def _ratio(samples: Samples, name: str, other: str, sent: bool) -> float:
    """Median over rounds of the ratio measured side by side in each round."""
    return median_ratio(samples[name, sent], samples[other, sent])


def _table(title: str, samples: Samples) -> tuple[list[str], float]:
    out = [title, f"  {'variant':<28}{'X-Request-ID sent':>20}{'no header':>14}"]
    names = list(dict.fromkeys(name for name, _ in samples))
    medians = {key: statistics.median(values) for key, values in samples.items()}
    out.extend(
        f"  {name:<28}{medians[name, True]:>16,.0f} r/s{medians[name, False]:>10,.0f} r/s"
        for name in names
    )
    ratios = [_ratio(samples, "ctxlog", "asgi-correlation-id", sent) for sent in (True, False)]
    bare = [_ratio(samples, "ctxlog", "no middleware", sent) for sent in (True, False)]
    out.append(f"  {'ctxlog / asgi-correlation-id':<28}{ratios[0]:>18.2f}x{ratios[1]:>12.2f}x")
    out.append(f"  {'ctxlog / no middleware':<28}{bare[0]:>18.2f}x{bare[1]:>12.2f}x")
    return out, min(ratios)


def _verdict(ratio: float) -> str:
    mark = "ok" if ratio >= TARGET else "MISSED"
    return f"{ratio:.2f}x (target >= {TARGET:.1f}x) {mark}"


def main() -> None:
    """Measure and print the tables."""
    rough = quick()
    # Keep uvicorn and the anchor quiet: logging is not what is measured here.
    logging.getLogger("asgi_correlation_id").setLevel(logging.ERROR)
    rounds = 9 if rough else 41
    count = 1_000 if rough else 2_000
    http_rounds = 3 if rough else 9
    http_count = 320 if rough else 800

    results: list[tuple[str, float]] = []
    lines: list[str] = []
    cases: list[tuple[str, Callable[[], ASGIApp]]] = [
        ("bare ASGI app", lambda: bare_app),
        ("Starlette app", starlette_app),
    ]
    for label, make in cases:
        figures = in_process(variants(make()), rounds, count)
        table, worst = _table(
            f"in process, {label}: requests/s, medians of {rounds} rounds x {count:,}", figures
        )
        lines += [*table, ""]
        results.append((f"in process, {label}", worst))
    figures = over_loopback(variants(starlette_app()), http_rounds, http_count)
    table, worst = _table(
        f"uvicorn on 127.0.0.1, 16 keep-alive connections, Starlette app: requests/s, "
        f"medians of {http_rounds} rounds x {http_count:,}",
        figures,
    )
    lines += table
    results.append(("over loopback, Starlette app", worst))
    print("\n".join(lines))
    print("\ntargets (ctxlog / asgi-correlation-id, worse of the two header cases)")
    for label, ratio in results:
        print(f"  {label:<40}{_verdict(ratio)}")


if __name__ == "__main__":
    main()
