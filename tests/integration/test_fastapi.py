"""FastAPI under uvicorn on 127.0.0.1 (``add_middleware``), with async SQLAlchemy on aiosqlite."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import ctxlog
from ctxlog.asgi import RequestContextMiddleware
from tests.integration.conftest import LineCapture, UvicornServer, capture_lines

log = logging.getLogger("tests.fastapi")
N_OF = re.compile(r"\bn=(\S+)")

metadata = sa.MetaData()
hits = sa.Table(
    "hits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tag", sa.String(64)),
)


def make_app(engine: AsyncEngine) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(RequestContextMiddleware, request_fields=["method", "path"])

    def sync_dependency(n: str) -> str:
        log.info("sync dependency n=%s", n)
        return n

    @app.get("/sync/{n}")
    def sync_endpoint(n: str, dep: str = Depends(sync_dependency)) -> dict[str, Any]:
        # FastAPI runs this in its thread pool.
        log.info("sync endpoint n=%s", n)
        return {"context": dict(ctxlog.current())}

    @app.get("/async/{n}")
    async def async_endpoint(n: str) -> dict[str, Any]:
        async def sub(i: int) -> None:
            await asyncio.sleep(0.001)
            log.info("async sub n=%s i=%s", n, i)

        await asyncio.gather(sub(0), sub(1))
        return {"context": dict(ctxlog.current())}

    @app.get("/db/{n}")
    async def db_endpoint(n: str) -> dict[str, Any]:
        async with engine.begin() as conn:
            await conn.execute(hits.insert().values(tag=f"tag-{n}"))
            result = await conn.execute(
                sa.select(sa.func.count()).select_from(hits).where(hits.c.tag == f"tag-{n}")
            )
            return {"count": result.scalar_one()}

    def authenticated(user: str, how: str = "annotate") -> str:
        # A sync dependency: FastAPI runs it in its thread pool, on a copy of
        # the request's context.
        if how == "annotate":
            ctxlog.annotate(user_id=user)
        else:
            ctxlog.set(user_id=user)  # lost with the copy: the contrast
        log.info("authenticated n=%s", user)
        return user

    @app.get("/me/{user}")
    async def me_endpoint(user: str = Depends(authenticated)) -> dict[str, Any]:
        await asyncio.sleep(0)
        log.info("endpoint n=%s", user)
        return {"context": dict(ctxlog.current())}

    @app.get("/boom/{n}")
    async def boom_endpoint(n: str) -> dict[str, Any]:
        log.info("about to fail n=%s", n)
        msg = f"failure n={n}"
        raise RuntimeError(msg)

    return app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UvicornServer]:
    path = tmp_path_factory.mktemp("fastapi") / "app.sqlite"
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 30})
    with UvicornServer(make_app(engine)) as running:
        yield running
    asyncio.run(engine.dispose())


def app_lines(lines: LineCapture) -> list[tuple[str, str, str]]:
    out = []
    for line in lines.of(log.name):
        match = N_OF.search(line.message)
        assert match, line
        out.append((match.group(1), line.request_id, line.message))
    return out


def test_sync_endpoint_in_the_thread_pool(server: UvicornServer, lines: LineCapture) -> None:
    response = httpx.get(f"{server.url}/sync/s1", headers={"X-Request-ID": "fa-1"})
    assert response.headers["x-request-id"] == "fa-1"
    assert response.json()["context"] == {"request_id": "fa-1", "method": "GET", "path": "/sync/s1"}
    assert sorted(app_lines(lines)) == [
        ("s1", "fa-1", "sync dependency n=s1"),
        ("s1", "fa-1", "sync endpoint n=s1"),
    ]


def test_async_endpoint(server: UvicornServer, lines: LineCapture) -> None:
    response = httpx.get(f"{server.url}/async/a1", headers={"X-Request-ID": "fa-2"})
    assert response.json()["context"]["request_id"] == "fa-2"
    assert [rid for _, rid, _ in app_lines(lines)] == ["fa-2", "fa-2"]


def test_concurrent_sync_and_async_endpoints(server: UvicornServer, lines: LineCapture) -> None:
    async def main() -> dict[str, str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def one(n: int) -> tuple[str, str]:
                kind = "sync" if n % 2 else "async"
                response = await client.get(f"/{kind}/{n}")
                assert response.status_code == 200
                return str(n), response.headers["x-request-id"]

            return dict(await asyncio.gather(*(one(n) for n in range(100))))

    id_of = asyncio.run(main())
    written = app_lines(lines)
    assert len(written) == 200
    for n, request_id, message in written:
        assert request_id == id_of[n], message


def test_async_sqlalchemy_engine_logs_carry_the_id(server: UvicornServer) -> None:
    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *(client.get(f"/db/{n}", headers={"X-Request-ID": f"db-{n}"}) for n in range(20))
            )

    with capture_lines(("sqlalchemy.engine", logging.INFO)) as lines:
        responses = asyncio.run(main())
    assert all(r.json() == {"count": 1} for r in responses)
    engine_lines = [line for line in lines.snapshot() if line.logger.startswith("sqlalchemy")]
    with_params = 0
    for line in engine_lines:
        assert line.request_id.startswith("db-"), line
        match = re.search(r"'tag-(\d+)'", line.message)
        if match:
            with_params += 1
            assert line.request_id == f"db-{match.group(1)}", line
    assert with_params == 40


def test_a_raising_endpoint_gets_a_500_with_the_id(
    server: UvicornServer, lines: LineCapture
) -> None:
    response = httpx.get(f"{server.url}/boom/b1", headers={"X-Request-ID": "fa-err"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "fa-err"
    assert app_lines(lines) == [("b1", "fa-err", "about to fail n=b1")]
    # uvicorn's traceback line for the 500 carries the id too.
    logged = lines.wait_for(
        lambda line: line.logger == "uvicorn.error" and "Exception in ASGI" in line.message
    )
    assert [line.request_id for line in logged] == ["fa-err"]


def test_a_sync_dependency_annotates_the_whole_request(
    server: UvicornServer, lines: LineCapture
) -> None:
    """What a sync dependency (in the thread pool) annotates reaches the endpoint's
    lines; what it binds does not."""

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *(client.get(f"/me/u{n}", headers={"X-Request-ID": f"me-{n}"}) for n in range(50))
            )

    responses = asyncio.run(main())
    for n, response in enumerate(responses):
        assert response.json()["context"]["user_id"] == f"u{n}"
    written = [line for line in lines.of(log.name) if "n=u" in line.message]
    assert len(written) == 100
    for line in written:
        which = line.message.rsplit("n=u", 1)[1]
        assert (line.request_id, line.context.get("user_id")) == (f"me-{which}", f"u{which}")

    bound = httpx.get(f"{server.url}/me/b1", params={"how": "bind"}).json()
    assert "user_id" not in bound["context"]
