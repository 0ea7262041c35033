"""ctxlog.django: Django's test clients, then real servers (uvicorn for ASGI,
werkzeug's threaded server for WSGI) on 127.0.0.1 under concurrent load."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from typing import Any

import httpx
import pytest

from tests.integration import django_site

django_site.setup()

from django.core.asgi import get_asgi_application  # noqa: E402 -- after settings.configure()
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.test import AsyncClient, Client, RequestFactory, override_settings  # noqa: E402

import ctxlog  # noqa: E402
import ctxlog.celery  # noqa: E402
from ctxlog.django import RequestContextMiddleware, logging_settings  # noqa: E402
from ctxlog.headers import is_valid_request_id  # noqa: E402
from ctxlog.testing import assert_every_line_has, assert_no_crossing, capture  # noqa: E402
from tests.integration.conftest import ServingThread, UvicornServer  # noqa: E402

N_OF = re.compile(r"\bn=(\S+)")


def of(lines: list[dict[str, Any]], logger: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == logger]


def test_sync_view_orm_and_async_to_sync() -> None:
    with capture(level="DEBUG") as lines:
        response = Client().get("/view/s1", headers={"X-Request-ID": "dj-1"})
    assert response["X-Request-ID"] == "dj-1"
    body = response.json()
    assert body["header"] == "dj-1"
    # The documented pattern: the user annotated on the request's unit.
    assert body["context"] == {"request_id": "dj-1", "user_id": 7}
    app = of(lines, "tests.django")
    assert [line["message"] for line in app] == ["view n=s1", "async_to_sync n=s1"]
    sql = of(lines, "django.db.backends")
    assert sql
    assert any("q-s1" in str(line.get("params", line["message"])) for line in sql)
    for line in [*app, *sql]:
        assert (line["request_id"], line["user_id"]) == ("dj-1", 7), line
    # Nothing stays bound after the request.
    assert dict(ctxlog.current()) == {}


@pytest.mark.parametrize("client", ["sync", "async"])
def test_django_request_lines_after_and_inside_the_chain(client: str) -> None:
    """The 404 warning Django logs after the middleware chain, and the 500
    traceback, carry the id."""

    async def both() -> list[Any]:
        c = AsyncClient(raise_request_exception=False)
        return [
            await c.get("/missing", headers={"X-Request-ID": "dj-404"}),
            await c.get("/boom", headers={"X-Request-ID": "dj-500"}),
        ]

    with capture(level="INFO") as lines:
        if client == "sync":
            c = Client(raise_request_exception=False)
            responses = [
                c.get("/missing", headers={"X-Request-ID": "dj-404"}),
                c.get("/boom", headers={"X-Request-ID": "dj-500"}),
            ]
        else:
            responses = asyncio.run(both())
    assert [r.status_code for r in responses] == [404, 500]
    assert [r["X-Request-ID"] for r in responses] == ["dj-404", "dj-500"]
    django_lines = of(lines, "django.request")
    by_message = {line["message"].split(":")[0]: line for line in django_lines}
    assert by_message["Not Found"]["request_id"] == "dj-404"
    assert by_message["Not Found"]["user_id"] == 7
    assert by_message["Internal Server Error"]["request_id"] == "dj-500"
    assert "RuntimeError: boom" in by_message["Internal Server Error"]["exception"]
    assert of(lines, "tests.django")[0]["request_id"] == "dj-500"


def test_async_view_and_sync_to_async_both_ways() -> None:
    async def call() -> Any:
        return await AsyncClient().get("/async/a1", headers={"X-Request-ID": "dj-a"})

    with capture(level="DEBUG") as lines:
        response = asyncio.run(call())
    assert response["X-Request-ID"] == "dj-a"
    assert response.json()["context"] == {"request_id": "dj-a", "user_id": 7}
    messages = [(line["message"], line["request_id"]) for line in of(lines, "tests.django")]
    assert messages == [
        ("async view n=a1", "dj-a"),
        ("sync_to_async sensitive n=a1", "dj-a"),
        ("sync_to_async free n=a1", "dj-a"),
    ]
    sql = of(lines, "django.db.backends")
    assert len(sql) >= 2
    assert all(line["request_id"] == "dj-a" for line in sql)


def test_hostile_headers_never_reach_a_line() -> None:
    hostile = "evil\nINFO forged line " + "x" * 300
    with capture() as lines:
        response = Client().get("/view/h1", HTTP_X_REQUEST_ID=hostile)
    chosen = response["X-Request-ID"]
    assert is_valid_request_id(chosen)
    assert response.json()["header"] == chosen  # the view sees the id the lines carry
    (warning,) = of(lines, "ctxlog.django")
    assert warning["message"].startswith("Rejected the X-Request-ID request header")
    assert all(hostile[:20] not in str(line) for line in lines)
    assert all(line["request_id"] == chosen for line in of(lines, "tests.django"))


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"HTTP_X-Request-ID": "dg-1"}, "dg-1"),
        ({"HTTP_x_request_id": "dg-2"}, "dg-2"),
        # Both spellings: request.headers finds the last one; so does ctxlog.
        ({"HTTP_X_REQUEST_ID": "dg-3a", "HTTP_X-Request-ID": "dg-3b"}, "dg-3b"),
        ({"HTTP_X-Request-ID": "dg-4a", "HTTP_X_REQUEST_ID": "dg-4b"}, "dg-4b"),
    ],
)
def test_the_header_is_read_as_request_headers_reads_it(
    meta: dict[str, str], expected: str
) -> None:
    """Django's test Client puts ``**{"HTTP_X-Request-ID": v}`` into META verbatim
    (django-guid's tests send ids that way): the id is taken, not replaced."""
    with capture(level="DEBUG") as lines:
        response = Client().get("/view/m1", **meta)
    assert response["X-Request-ID"] == expected
    body = response.json()
    assert (body["header"], body["headers"]) == (expected, expected)
    assert body["context"]["request_id"] == expected
    assert [line["request_id"] for line in of(lines, "tests.django")] == [expected] * 2
    assert not of(lines, "ctxlog.django")  # nothing rejected


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_exception_out_of_the_chain_leaves_nothing_bound(mode: str) -> None:
    """Django turns a view's error into a response inside the chain; what still
    escapes it (a BaseException, or a chain built by hand) ends the unit."""
    seen: list[object] = []

    class Escapes(BaseException):
        pass

    def fails(request: Any) -> Any:
        seen.append(ctxlog.get("request_id"))
        raise Escapes

    async def async_fails(request: Any) -> Any:
        return fails(request)

    request = RequestFactory().get("/", headers={"X-Request-ID": "esc-1"})
    with pytest.raises(Escapes):
        if mode == "sync":
            RequestContextMiddleware(fails)(request)
        else:
            asyncio.run(RequestContextMiddleware(async_fails)(request))
    assert seen == ["esc-1"]
    assert dict(ctxlog.current()) == {}


def test_django_guid_s_way_of_sending_its_header_in_tests() -> None:
    with override_settings(CTXLOG={"header": "Correlation-ID", "key": "correlation_id"}):
        response = Client().get("/view/g1", **{"HTTP_Correlation-ID": "guid-1"})
    assert response["Correlation-ID"] == "guid-1"
    assert response.json()["context"]["correlation_id"] == "guid-1"


def test_settings_options_and_ignore_urls() -> None:
    with override_settings(
        CTXLOG={"header": "X-Correlation-ID", "key": "correlation_id", "ignore_urls": ["/health"]}
    ):
        client = Client()
        response = client.get("/view/o1", headers={"X-Correlation-ID": "c-1"})
        assert response["X-Correlation-ID"] == "c-1"
        assert response.json()["context"]["correlation_id"] == "c-1"
        health = client.get("/health", headers={"X-Correlation-ID": "c-2"})
        assert not health.has_header("X-Correlation-ID")


def test_settings_baggage_binds_those_keys() -> None:
    with override_settings(CTXLOG={"baggage": ["tenant"]}), capture(level="DEBUG") as lines:
        response = Client().get(
            "/view/b1", headers={"X-Request-ID": "dj-b", "baggage": "tenant=acme%20eu,plan=x"}
        )
    assert response.json()["context"] == {"request_id": "dj-b", "user_id": 7, "tenant": "acme eu"}
    app = of(lines, "tests.django")
    assert app
    assert all(line["tenant"] == "acme eu" and "plan" not in line for line in app)


def lowered(value: str) -> str:
    """A transformer named by its dotted path in the settings."""
    return value.lower()


def test_settings_transformer_by_dotted_path_and_validator_none() -> None:
    options = {"transformer": f"{__name__}.lowered", "validator": None}
    with override_settings(CTXLOG=options):
        response = Client().get("/view/t1", headers={"X-Request-ID": "ABC{1}"})
    assert response["X-Request-ID"] == "abc{1}"  # validator=None: beyond the default alphabet
    assert response.json()["context"]["request_id"] == "abc{1}"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"transformer": "no.such.function"}, "cannot be imported"),
        ({"headr": "X"}, "unknown option"),
        ({"validator": "no.such.function"}, "cannot be imported"),
        ({"ignore_urls": "/health"}, "list of URL paths"),
        ({"echo": "yes"}, "give True or False"),
        ({"request_fields": ["body"]}, "unknown field"),
        ({"baggage": ["bad key"]}, "not a baggage key"),
    ],
)
def test_bad_settings_are_a_context_error(options: dict[str, Any], match: str) -> None:
    with override_settings(CTXLOG=options), pytest.raises(ctxlog.ContextError, match=match):
        RequestContextMiddleware(lambda _request: None)


def test_logging_settings_is_a_dictconfig() -> None:
    config = logging_settings(sql=True)
    assert config["loggers"]["django.db.backends"]["level"] == "DEBUG"
    assert config["handlers"]["stderr"]["filters"] == ["context"]


def test_a_task_published_from_a_view_carries_the_id() -> None:
    from celery import Celery, signals  # noqa: PLC0415 -- this test only

    from tests.integration.test_celery import Published, as_task, run_as_worker  # noqa: PLC0415

    app = Celery("django-views", broker="memory://", backend="cache+memory://")
    ctxlog.celery.install()
    published = Published()
    signals.before_task_publish.connect(published, weak=False)
    seen: list[dict[str, Any]] = []

    def who() -> None:
        seen.append(dict(ctxlog.current()))

    task = as_task(app, "views.who", who)
    try:
        from django.urls import path  # noqa: PLC0415

        def publishing_view(request: Any) -> Any:
            from django.http import HttpResponse  # noqa: PLC0415

            task.delay()
            return HttpResponse("queued")

        django_site.urlpatterns.append(path("publish", publishing_view))
        response = Client().get("/publish", headers={"X-Request-ID": "dj-celery"})
        assert response["X-Request-ID"] == "dj-celery"
        header = published.headers[-1]
        context = published.context()
        assert context == {"request_id": "dj-celery", "user_id": 7}
        run_as_worker(task, {ctxlog.celery.CONTEXT_HEADER: header[ctxlog.celery.CONTEXT_HEADER]})
        assert seen[0]["request_id"] == "dj-celery"
    finally:
        django_site.urlpatterns.pop()
        signals.before_task_publish.disconnect(published)
        ctxlog.celery.uninstall()
        app.close()


async def _hammer(base_url: str, count: int, prefix: str, connections: int = 50) -> dict[str, str]:
    limits = httpx.Limits(max_connections=connections)
    # No limit on waiting for a free connection: all the requests are queued at
    # once, and the last ones wait for the others (slow under coverage tracing).
    timeout = httpx.Timeout(60, pool=None)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:

        async def one(n: int) -> tuple[str, str]:
            kind = "async" if n % 2 else "view"
            headers = {"X-Request-ID": f"{prefix}-{n}"} if n % 3 else {}
            # A connection per request: on a loaded machine a kept-alive one can
            # be closed by the server just as the next request is sent on it.
            headers["Connection"] = "close"
            response = await client.get(f"/{kind}/{prefix}{n}", headers=headers)
            assert response.status_code == 200
            return f"{prefix}{n}", response.headers["x-request-id"]

        return dict(await asyncio.gather(*(one(n) for n in range(count))))


def _check_concurrent(lines: list[dict[str, Any]], ids: dict[str, str]) -> None:
    app = of(lines, "tests.django")
    assert len(app) >= len(ids)
    for line in app:
        match = N_OF.search(line["message"])
        assert match
        assert line["request_id"] == ids[match.group(1)], line
    sql = of(lines, "django.db.backends")
    assert sql
    assert_every_line_has(app + sql)
    assert_no_crossing(app + sql)


def test_asgi_under_uvicorn_1000_concurrent_requests() -> None:
    asgi = get_asgi_application()
    server_options = {"lifespan": "off", "timeout_keep_alive": 60, "backlog": 4096}
    with capture(level="DEBUG") as lines, UvicornServer(asgi, **server_options) as server:
        ids = asyncio.run(_hammer(server.url, 1000, "u"))
    assert len(set(ids.values())) == 1000
    _check_concurrent(lines, ids)


class RunserverServer(ServingThread):
    """Django's own development server (what runserver serves with: a threaded
    wsgiref server) on 127.0.0.1, in a thread of its own."""

    def __init__(self) -> None:
        server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
        server.set_app(get_wsgi_application())
        super().__init__(server)


def test_wsgi_under_runserver_s_threaded_server_concurrent_requests() -> None:
    with capture(level="DEBUG") as lines, RunserverServer() as server:
        # Fewer connections at once than the server's listen backlog (10).
        ids = asyncio.run(_hammer(server.url, 300, "w", connections=8))
    assert len(set(ids.values())) == 300
    _check_concurrent(lines, ids)
    # runserver's own access line is written after the response, outside the
    # request: it carries no id (see the docs).
    access = of(lines, "django.server")
    assert access
    assert all("request_id" not in line for line in access)
    assert dict(ctxlog.current()) == {}


def test_tail_sampling_keeps_the_lines_of_failed_requests_only() -> None:
    """A 500 (a view that raises) and a streamed body that raises count as
    failed units: their held lines are written; a clean request's are not."""
    stream = io.StringIO()
    target = logging.StreamHandler(stream)
    target.setFormatter(ctxlog.stdlib.json_formatter())
    target.addFilter(ctxlog.ContextFilter())
    sampled = ctxlog.TailSamplingHandler(target)
    site_log = logging.getLogger("tests.django")
    old_level, old_propagate = site_log.level, site_log.propagate
    site_log.addHandler(sampled)
    site_log.setLevel(logging.INFO)
    site_log.propagate = False
    try:
        client = Client(raise_request_exception=False)
        assert client.get("/view/ok", headers={"X-Request-ID": "ok-1"}).status_code == 200
        assert client.get("/boom", headers={"X-Request-ID": "boom-1"}).status_code == 500
        response = client.get("/stream/boom-s", headers={"X-Request-ID": "stream-1"})
        with pytest.raises(RuntimeError, match="body boom-s"):
            b"".join(response.streaming_content)
        response.close()
    finally:
        site_log.removeHandler(sampled)
        site_log.setLevel(old_level)
        site_log.propagate = old_propagate
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_id: dict[str, list[str]] = {}
    for line in lines:
        by_id.setdefault(line["request_id"], []).append(line["message"])
    assert "ok-1" not in by_id
    assert by_id["boom-1"] == ["about to fail"]
    assert by_id["stream-1"] == [
        "chunk n=boom-s i=0",
        "chunk n=boom-s i=1",
        "chunk n=boom-s i=2",
        "closed n=boom-s",
    ]
