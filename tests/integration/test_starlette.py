"""Starlette under uvicorn on 127.0.0.1, driven by real clients."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTasks
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.sync.client import connect

import ctxlog
from ctxlog.asgi import RequestContextMiddleware
from ctxlog.headers import is_valid_request_id
from tests.integration.conftest import LineCapture, UvicornServer

log = logging.getLogger("tests.starlette")
N_OF = re.compile(r"\bn=(\S+)")
LIFESPAN: dict[str, Any] = {}


async def work(request: Request) -> Response:
    n = request.path_params["n"]
    log.info("start n=%s", n)

    async def sub(i: int) -> None:
        await asyncio.sleep(random.random() / 200)
        log.info("sub n=%s i=%s", n, i)

    await asyncio.gather(*(sub(i) for i in range(3)))
    await run_in_threadpool(log.info, "thread n=%s", n)
    log.info("end n=%s", n)
    return JSONResponse({"n": n, "request_id": ctxlog.get("request_id")})


async def stream(request: Request) -> Response:
    n = request.path_params["n"]

    async def body() -> AsyncIterator[bytes]:
        for i in range(5):
            await asyncio.sleep(0.002)
            log.info("chunk n=%s i=%s", n, i)
            yield f"{ctxlog.get('request_id')}\n".encode()

    return StreamingResponse(body(), media_type="text/plain")


def sync_background(n: str) -> None:
    log.info("sync background n=%s", n)


async def async_background(n: str) -> None:
    await asyncio.sleep(0.01)
    log.info("async background n=%s", n)


async def background(request: Request) -> Response:
    n = request.path_params["n"]
    tasks = BackgroundTasks()
    tasks.add_task(async_background, n)
    tasks.add_task(sync_background, n)
    return PlainTextResponse("queued", background=tasks)


async def boom(request: Request) -> Response:
    n = request.path_params["n"]
    log.info("about to fail n=%s", n)
    msg = f"failure n={n}"
    raise RuntimeError(msg)


async def echo_ws(websocket: WebSocket) -> None:
    n = websocket.path_params["n"]
    await websocket.accept()
    async for text in websocket.iter_text():
        log.info("ws n=%s got %s", n, text)
        await websocket.send_text(str(ctxlog.get("request_id")))


async def on_error(request: Request, exc: Exception) -> Response:
    log.error("handled %s", exc)
    # Added with add_middleware, the middleware's echo cannot reach this
    # response (Starlette sends it from outside): the handler sets the header,
    # from the binding that is still on.
    headers = {"X-Request-ID": ctxlog.get("request_id") or ""}
    return PlainTextResponse("custom 500", status_code=500, headers=headers)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    LIFESPAN["started"] = True
    LIFESPAN["request_id"] = ctxlog.get("request_id")
    yield


ROUTES = [
    Route("/jobs/{n}", work),
    Route("/stream/{n}", stream),
    Route("/background/{n}", background),
    Route("/boom/{n}", boom),
    WebSocketRoute("/ws/{n}", echo_ws),
]


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornServer]:
    """The application wrapped whole, as recommended: Starlette's 500 handler runs inside."""
    app = RequestContextMiddleware(
        Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers={Exception: on_error})
    )
    with UvicornServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def added_server() -> Iterator[UvicornServer]:
    """The same routes with ``middleware=[Middleware(RequestContextMiddleware)]``: Starlette's
    500 handler then runs outside it, and answers."""
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(RequestContextMiddleware)],
        exception_handlers={Exception: on_error},
    )
    with UvicornServer(app) as running:
        yield running


def app_lines(lines: LineCapture) -> list[tuple[str, str, str]]:
    """(n, request_id, message) of every line the application wrote."""
    out = []
    for line in lines.of(log.name):
        match = N_OF.search(line.message)
        assert match, line
        out.append((match.group(1), line.request_id, line.message))
    return out


HOSTILE: list[str | bytes] = ["has space", "x" * 200, "a\tb", b"caf\xe9", "", "a,b"]


def test_lifespan_passes_through(server: UvicornServer) -> None:
    assert LIFESPAN == {"started": True, "request_id": None}


def test_200_concurrent_requests_do_not_cross(server: UvicornServer, lines: LineCapture) -> None:
    async def one(client: httpx.AsyncClient, n: int) -> tuple[int, str, str | bytes | None]:
        headers: dict[bytes, bytes] = {}
        sent: str | bytes | None = None
        if n % 3 == 0:
            sent = f"req-{n}"
        elif n % 3 == 1:
            sent = HOSTILE[n % len(HOSTILE)]
        if sent is not None:
            headers[b"X-Request-ID"] = sent if isinstance(sent, bytes) else sent.encode()
        response = await client.get(f"/jobs/{n}", headers=headers)
        assert response.status_code == 200
        assert response.json()["request_id"] == response.headers["x-request-id"]
        return n, response.headers["x-request-id"], sent

    async def main() -> list[tuple[int, str, str | bytes | None]]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(one(client, n) for n in range(200)))

    results = asyncio.run(main())
    id_of = {str(n): request_id for n, request_id, _ in results}
    assert len(set(id_of.values())) == 200
    for _, request_id, sent in results:
        if isinstance(sent, str) and is_valid_request_id(sent):
            assert request_id == sent
        else:
            assert is_valid_request_id(request_id)
            assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    written = app_lines(lines)
    assert len(written) == 200 * 6
    for n, request_id, message in written:
        assert request_id == id_of[n], message
    rejected = lines.of("ctxlog.asgi")
    assert len(rejected) == sum(
        1
        for _, _, sent in results
        if sent is not None and not (isinstance(sent, str) and is_valid_request_id(sent))
    )
    assert {line.request_id for line in rejected} <= set(id_of.values())
    # uvicorn's access lines are written while the response starts: they carry the id too.
    access = lines.of("uvicorn.access")
    assert len(access) == 200
    assert {line.request_id for line in access} == set(id_of.values())
    for line in lines.snapshot():
        assert "has space" not in line.text
        assert "\t" not in line.text


def test_streamed_body_keeps_the_id(server: UvicornServer, lines: LineCapture) -> None:
    with httpx.Client(base_url=server.url) as client:
        with client.stream("GET", "/stream/s1", headers={"X-Request-ID": "stream-1"}) as response:
            body = response.read().decode()
        assert response.headers["x-request-id"] == "stream-1"
    assert body.splitlines() == ["stream-1"] * 5
    chunks = [line for line in lines.of(log.name) if "chunk n=s1" in line.message]
    assert [line.request_id for line in chunks] == ["stream-1"] * 5


def test_concurrent_streams_do_not_cross(server: UvicornServer, lines: LineCapture) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.url) as client:

            async def one(n: int) -> None:
                response = await client.get(f"/stream/c{n}", headers={"X-Request-ID": f"st-{n}"})
                assert response.text.splitlines() == [f"st-{n}"] * 5

            await asyncio.gather(*(one(n) for n in range(20)))

    asyncio.run(main())
    for n, request_id, _ in app_lines(lines):
        assert request_id == f"st-{n[1:]}"


def test_background_tasks_keep_the_id(server: UvicornServer, lines: LineCapture) -> None:
    with httpx.Client(base_url=server.url) as client:
        response = client.get("/background/b1", headers={"X-Request-ID": "bg-1"})
    assert response.text == "queued"
    assert response.headers["x-request-id"] == "bg-1"
    done = lines.wait_for(lambda line: "background n=b1" in line.message, count=2)
    assert sorted(line.message for line in done) == [
        "async background n=b1",
        "sync background n=b1",
    ]
    assert {line.request_id for line in done} == {"bg-1"}


@pytest.mark.parametrize("which", ["server", "added_server"])
def test_a_raising_handler_still_carries_the_id(
    which: str, request: pytest.FixtureRequest, lines: LineCapture
) -> None:
    running: UvicornServer = request.getfixturevalue(which)
    with httpx.Client(base_url=running.url) as client:
        response = client.get("/boom/e1", headers={"X-Request-ID": "err-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "err-1"
    failing = lines.wait_for(lambda line: "about to fail n=e1" in line.message)
    assert [line.request_id for line in failing] == ["err-1"]
    # Starlette's 500 handler runs in the request's binding, inside the middleware
    # (wrapped whole) or after it (added): its lines carry the id either way.
    handled = lines.wait_for(lambda line: line.message == "handled failure n=e1")
    assert [line.request_id for line in handled] == ["err-1"]
    # Wrapped whole or added: the application's own handler answers (added, the
    # middleware leaves the response to it rather than send a plain 500 first).
    assert response.text == "custom 500"
    # The server still sees the exception, and its traceback line carries the id.
    logged = lines.wait_for(
        lambda line: line.logger == "uvicorn.error" and "Exception in ASGI" in line.message
    )
    assert [line.request_id for line in logged] == ["err-1"]
    assert "RuntimeError: failure n=e1" in logged[0].text


def test_websockets_carry_their_own_id(server: UvicornServer, lines: LineCapture) -> None:
    with (
        connect(f"{server.ws_url}/ws/w1", additional_headers={"X-Request-ID": "ws-1"}) as first,
        connect(f"{server.ws_url}/ws/w2", additional_headers={"X-Request-ID": "bad id"}) as second,
    ):
        assert first.response is not None
        assert second.response is not None
        assert first.response.headers["X-Request-ID"] == "ws-1"
        generated = second.response.headers["X-Request-ID"]
        assert is_valid_request_id(generated)
        assert generated != "bad id"
        for i in range(3):
            first.send(f"hello {i}")
            second.send(f"hello {i}")
            assert first.recv(timeout=10) == "ws-1"
            assert second.recv(timeout=10) == generated
    got = [line for line in lines.of(log.name) if line.message.startswith("ws n=")]
    assert len(got) == 6
    for line in got:
        assert line.request_id == ("ws-1" if "n=w1" in line.message else generated)


def test_requests_from_many_threads(server: UvicornServer, lines: LineCapture) -> None:
    """A synchronous client in threads: each thread's requests keep their own ids."""
    errors: list[BaseException] = []

    def client_thread(k: int) -> None:
        try:
            with httpx.Client(base_url=server.url) as client:
                for j in range(5):
                    response = client.get(f"/jobs/t{k}x{j}", headers={"X-Request-ID": f"t{k}x{j}"})
                    assert response.headers["x-request-id"] == f"t{k}x{j}"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client_thread, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    written = app_lines(lines)
    assert len(written) == 8 * 5 * 6
    for n, request_id, _ in written:
        assert request_id == n


async def view_fails(request: Request) -> Response:
    log.info("view n=h")
    msg = "view boom"
    raise RuntimeError(msg)


async def handler_fails(request: Request, exc: Exception) -> Response:
    log.info("handler n=h")
    msg = "handler boom"
    raise ValueError(msg)


@pytest.mark.parametrize("placement", ["wrapped", "added"])
def test_a_500_handler_that_raises(lines: LineCapture, placement: str) -> None:
    """The application's own 500 handler raises. Wrapped, the middleware runs
    outside Starlette's ServerErrorMiddleware, whose handler has failed by the
    time the error reaches it: its plain 500 carries the id. Added, the handler
    runs after the middleware has returned: uvicorn answers its own 500,
    without the header. Either way every line carries the id."""
    options: dict[str, Any] = {
        "routes": [Route("/fail", view_fails)],
        "exception_handlers": {500: handler_fails},
    }
    app: Any
    if placement == "wrapped":
        app = RequestContextMiddleware(Starlette(**options))
    else:
        app = Starlette(**options, middleware=[Middleware(RequestContextMiddleware)])
    with UvicornServer(app, lifespan="off") as server:
        response = httpx.get(f"{server.url}/fail", headers={"X-Request-ID": "h-1"})
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers.get("x-request-id") == ("h-1" if placement == "wrapped" else None)
    assert [(line.message, line.request_id) for line in lines.of(log.name)] == [
        ("view n=h", "h-1"),
        ("handler n=h", "h-1"),
    ]
    (traceback,) = [
        line for line in lines.of("uvicorn.error") if line.message.startswith("Exception in ASGI")
    ]
    assert traceback.request_id == "h-1"
    assert "RuntimeError: view boom" in traceback.text
    assert "ValueError: handler boom" in traceback.text
    (access,) = lines.of("uvicorn.access")
    assert access.request_id == "h-1"
