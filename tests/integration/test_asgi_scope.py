"""ctxlog.asgi.RequestContextMiddleware keeps the one ASGI scope: what the
application writes into it (FastAPI's router: ``route``, ``endpoint``,
``path_params``; Starlette's AuthenticationMiddleware: ``user``) reaches the
pure-ASGI middlewares around it, whatever the request's id header was."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

import ctxlog
from ctxlog.asgi import ASGIApp, Receive, RequestContextMiddleware, Scope, Send
from tests.integration.conftest import LineCapture, UvicornServer


class Recorder:
    """An outer pure-ASGI middleware, as a metrics or tracing one is: it reads
    what the router and the auth middleware wrote into the scope, after the call."""

    seen: list[dict[str, Any]] = []  # noqa: RUF012 -- one list for the module's app

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            route = scope.get("route")
            user = scope.get("user")
            self.seen.append(
                {
                    "route": getattr(route, "path", None),
                    "endpoint": getattr(scope.get("endpoint"), "__name__", None),
                    "path_params": scope.get("path_params"),
                    "user": getattr(user, "username", None),
                    "header": dict(scope["headers"]).get(b"x-request-id"),
                }
            )


class Everyone(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser]:
        del conn  # everyone is ada
        return AuthCredentials(["authenticated"]), SimpleUser("ada")


app = FastAPI(
    middleware=[
        Middleware(Recorder),
        Middleware(RequestContextMiddleware),
        Middleware(AuthenticationMiddleware, backend=Everyone()),
    ]
)


@app.get("/items/{n}")
async def item(n: int, request: Request) -> dict[str, Any]:
    return {"n": n, "request_id": ctxlog.get("request_id")}


EXPECTED = {"route": "/items/{n}", "endpoint": "item", "path_params": {"n": "3"}, "user": "ada"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Request-ID": "has space"}, {"X-Request-ID": "ok-1"}],
    ids=["missing", "rejected", "valid"],
)
def test_the_router_s_writes_reach_outer_middlewares(headers: dict[str, str]) -> None:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/items/3", headers=headers)

    Recorder.seen.clear()
    response = asyncio.run(call())
    assert response.status_code == 200
    chosen = response.headers["x-request-id"]
    assert response.json() == {"n": 3, "request_id": chosen}
    (seen,) = Recorder.seen
    # The outer middleware sees the one scope: the router's and auth's writes,
    # and the id the lines carry in its headers.
    assert seen == {**EXPECTED, "header": chosen.encode()}


def test_under_uvicorn(lines: LineCapture) -> None:
    Recorder.seen.clear()
    with UvicornServer(app, lifespan="off") as server:
        ids = [
            httpx.get(f"{server.url}/items/3", headers=headers).headers["x-request-id"]
            for headers in ({}, {"X-Request-ID": "u-1"})
        ]
    assert ids[1] == "u-1"
    assert Recorder.seen == [{**EXPECTED, "header": chosen.encode()} for chosen in ids]
    access = lines.of("uvicorn.access")
    assert [line.request_id for line in access] == ids
