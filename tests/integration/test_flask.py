"""Flask under werkzeug's server on 127.0.0.1, with SQLAlchemy on SQLite, driven by requests."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from flask import Flask, Response, stream_with_context

import ctxlog
from ctxlog.headers import is_valid_request_id
from ctxlog.wsgi import RequestContextMiddleware
from tests.integration.conftest import LineCapture, WerkzeugServer, capture_lines

log = logging.getLogger("tests.flask")
N_OF = re.compile(r"\bn=(\S+)")


def make_app(engine: sa.Engine) -> Flask:
    app = Flask(__name__)
    metadata = sa.MetaData()
    hits = sa.Table(
        "hits",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tag", sa.String(64)),
    )
    metadata.create_all(engine)

    @ctxlog.memoize
    def profile(user: str) -> str:
        log.info("profile loaded n=%s", user)
        return user.upper()

    @app.get("/sync/<n>")
    def sync_view(n: str) -> dict[str, object]:
        log.info("sync n=%s", n)
        profile(n)
        profile(n)
        return {"request_id": ctxlog.get("request_id"), "context": dict(ctxlog.current())}

    @app.get("/annotated/<n>")
    def annotated_view(n: str) -> dict[str, object]:
        # A unit of work is open for the request: a pool thread annotates it.
        with ctxlog.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(ctxlog.annotate, user_id=f"u{n}").result()
        log.info("annotated n=%s", n)
        return {"context": dict(ctxlog.current())}

    @app.get("/async/<n>")
    async def async_view(n: str) -> dict[str, object]:
        async def sub(i: int) -> None:
            await asyncio.sleep(0.001)
            log.info("async sub n=%s i=%s", n, i)

        await asyncio.gather(sub(0), sub(1))
        return {"request_id": ctxlog.get("request_id")}

    @app.get("/thread/<n>")
    def thread_view(n: str) -> dict[str, object]:
        seen: list[object] = []

        def work() -> None:
            log.info("worker thread n=%s", n)
            seen.append(ctxlog.get("request_id"))

        worker = ctxlog.Thread(target=work)
        worker.start()
        worker.join(10)
        return {"request_id": ctxlog.get("request_id"), "thread": seen[0]}

    @app.get("/stream/<n>")
    def stream_view(n: str) -> Response:
        def body() -> Iterator[str]:
            for i in range(4):
                log.info("chunk n=%s i=%s", n, i)
                yield f"{ctxlog.get('request_id')}\n"

        return Response(stream_with_context(body()), mimetype="text/plain")

    @app.get("/db/<n>")
    def db_view(n: str) -> dict[str, object]:
        with engine.begin() as conn:
            conn.execute(hits.insert().values(tag=f"tag-{n}"))
            count = conn.execute(
                sa.select(sa.func.count()).select_from(hits).where(hits.c.tag == f"tag-{n}")
            ).scalar_one()
        return {"count": count}

    @app.get("/boom/<n>")
    def boom_view(n: str) -> str:
        log.info("about to fail n=%s", n)
        msg = f"failure n={n}"
        raise RuntimeError(msg)

    @app.get("/leak/<n>")
    def leak_view(n: str) -> dict[str, object]:
        # A view that binds and never resets: the next request must not see it.
        before = dict(ctxlog.current())
        ctxlog.set(user=f"user-{n}")
        profile(n)
        return {"before": before}

    app.wsgi_app = RequestContextMiddleware(app.wsgi_app)  # type: ignore[method-assign]  # the documented Flask hook
    return app


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    path: Path = tmp_path_factory.mktemp("flask") / "app.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def server(engine: sa.Engine) -> Iterator[WerkzeugServer]:
    with WerkzeugServer(make_app(engine)) as running:
        yield running


@pytest.fixture(scope="module")
def single_thread_server(engine: sa.Engine) -> Iterator[WerkzeugServer]:
    with WerkzeugServer(make_app(engine), threaded=False) as running:
        yield running


def app_lines(lines: LineCapture) -> list[tuple[str, str, str]]:
    out = []
    for line in lines.of(log.name):
        match = N_OF.search(line.message)
        assert match, line
        out.append((match.group(1), line.request_id, line.message))
    return out


def test_sync_view_and_memoize(server: WerkzeugServer, lines: LineCapture) -> None:
    response = requests.get(f"{server.url}/sync/a1", headers={"X-Request-ID": "f-1"}, timeout=10)
    assert response.headers["X-Request-ID"] == "f-1"
    assert response.json()["context"] == {"request_id": "f-1"}
    assert [(rid, msg) for _, rid, msg in app_lines(lines)] == [
        ("f-1", "sync n=a1"),
        ("f-1", "profile loaded n=a1"),  # memoized: once per request
    ]


def test_each_request_is_a_unit_of_work(server: WerkzeugServer, lines: LineCapture) -> None:
    for n in ("x", "y"):
        response = requests.get(
            f"{server.url}/annotated/{n}", headers={"X-Request-ID": f"f-{n}"}, timeout=10
        )
        assert response.json()["context"] == {"request_id": f"f-{n}", "user_id": f"u{n}"}
    written = [line for line in lines.of(log.name) if "annotated" in line.message]
    assert [(line.request_id, line.context["user_id"]) for line in written] == [
        ("f-x", "ux"),
        ("f-y", "uy"),
    ]


def test_async_view(server: WerkzeugServer, lines: LineCapture) -> None:
    response = requests.get(f"{server.url}/async/a2", headers={"X-Request-ID": "f-2"}, timeout=10)
    assert response.json() == {"request_id": "f-2"}
    assert response.headers["X-Request-ID"] == "f-2"
    assert sorted(app_lines(lines)) == [
        ("a2", "f-2", "async sub n=a2 i=0"),
        ("a2", "f-2", "async sub n=a2 i=1"),
    ]


def test_thread_started_from_a_view(server: WerkzeugServer, lines: LineCapture) -> None:
    response = requests.get(f"{server.url}/thread/a3", headers={"X-Request-ID": "f-3"}, timeout=10)
    assert response.json() == {"request_id": "f-3", "thread": "f-3"}
    assert app_lines(lines) == [("a3", "f-3", "worker thread n=a3")]


def test_streamed_response(server: WerkzeugServer, lines: LineCapture) -> None:
    response = requests.get(f"{server.url}/stream/a4", headers={"X-Request-ID": "f-4"}, timeout=10)
    assert response.text.splitlines() == ["f-4"] * 4
    assert response.headers["X-Request-ID"] == "f-4"
    assert [rid for _, rid, _ in app_lines(lines)] == ["f-4"] * 4


def test_a_raising_view_gets_a_500_with_the_id(server: WerkzeugServer, lines: LineCapture) -> None:
    response = requests.get(f"{server.url}/boom/a5", headers={"X-Request-ID": "f-5"}, timeout=10)
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "f-5"
    assert app_lines(lines) == [("a5", "f-5", "about to fail n=a5")]
    # Flask logs the exception from inside the application: it carries the id.
    (error,) = [line for line in lines.snapshot() if "Exception on /boom/a5" in line.message]
    assert error.request_id == "f-5"


def test_sqlalchemy_engine_logs_carry_the_id(server: WerkzeugServer) -> None:
    def get(n: int) -> requests.Response:
        return requests.get(f"{server.url}/db/{n}", headers={"X-Request-ID": f"db-{n}"}, timeout=30)

    with capture_lines(("sqlalchemy.engine", logging.INFO)) as lines, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(get, range(24)))
    assert all(r.json() == {"count": 1} for r in responses)
    engine_lines = [line for line in lines.snapshot() if line.logger.startswith("sqlalchemy")]
    assert engine_lines
    with_params = 0
    for line in engine_lines:
        assert line.request_id.startswith("db-"), line
        match = re.search(r"'tag-(\d+)'", line.message)
        if match:
            with_params += 1
            assert line.request_id == f"db-{match.group(1)}", line
    assert with_params == 48  # one INSERT and one SELECT per request


def test_200_concurrent_requests_do_not_cross(server: WerkzeugServer, lines: LineCapture) -> None:
    def one(n: int) -> tuple[int, str, str | None]:
        sent = f"c-{n}" if n % 2 else None
        headers = {"X-Request-ID": sent} if sent else {}
        path = ("sync", "thread", "async")[n % 3]
        response = requests.get(f"{server.url}/{path}/{n}", headers=headers, timeout=30)
        assert response.status_code == 200
        return n, response.headers["X-Request-ID"], sent

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(200)))
    id_of = {str(n): request_id for n, request_id, _ in results}
    assert len(set(id_of.values())) == 200
    for _, request_id, sent in results:
        assert request_id == sent if sent else is_valid_request_id(request_id)
    written = app_lines(lines)
    assert len(written) == sum((2, 1, 2)[n % 3] for n in range(200))
    for n, request_id, message in written:
        assert request_id == id_of[n], message


def test_one_thread_server_carries_nothing_over(
    single_thread_server: WerkzeugServer, lines: LineCapture
) -> None:
    url = single_thread_server.url
    with requests.Session() as http:
        for n in range(10):
            headers = {"X-Request-ID": f"one-{n}"} if n % 2 else {}
            response = http.get(f"{url}/leak/{n}", headers=headers, timeout=10)
            before = response.json()["before"]
            request_id = response.headers["X-Request-ID"]
            # only what the middleware bound: no user, no id from the request before
            assert before == {"request_id": request_id}
    loaded = [message for _, _, message in app_lines(lines)]
    assert loaded == [f"profile loaded n={n}" for n in range(10)]
