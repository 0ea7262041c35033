"""ctxlog.django and streamed bodies: a ``StreamingHttpResponse`` whose generator
logs, produced after the middleware chain has returned, under real servers on
127.0.0.1: Django's threaded development server and werkzeug's one-thread
server (WSGI), uvicorn (ASGI; sync and async iterators, sync and async chains)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import httpx
import pytest

from tests.integration import django_site

django_site.setup()

from django.core.asgi import get_asgi_application  # noqa: E402 -- after settings.configure()
from django.core.signals import request_finished  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402

import ctxlog  # noqa: E402
from ctxlog.django import get_asgi_application as ctxlog_application  # noqa: E402
from ctxlog.testing import capture  # noqa: E402
from tests.integration.conftest import UvicornServer, WerkzeugServer  # noqa: E402
from tests.integration.test_django import RunserverServer  # noqa: E402

N_OF = re.compile(r"\bn=(\S+)")
BODY_ERROR = "Exception while producing the response body"


async def fetch(base_url: str, kind: str, names: list[str]) -> dict[str, str]:
    """GET /<kind>/<name> for every name at once, each with the id ``id-<name>``;
    the bodies, by name (a body cut short by its error counts as empty)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

        async def one(name: str) -> tuple[str, str]:
            headers = {"X-Request-ID": f"id-{name}", "Connection": "close"}
            try:
                response = await client.get(f"/{kind}/{name}", headers=headers)
            except httpx.HTTPError:
                return name, ""
            assert response.headers["x-request-id"] == f"id-{name}"
            return name, response.text

        return dict(await asyncio.gather(*(one(name) for name in names)))


def check_lines(lines: list[dict[str, Any]], names: list[str], *, user: bool = True) -> None:
    """Every line the bodies wrote (3 chunks and the close, per request) carries
    its request's id, and the user annotated on its unit."""
    body_lines = [line for line in lines if line["logger"] == "tests.django"]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for line in body_lines:
        match = N_OF.search(line["message"])
        assert match, line
        by_name.setdefault(match.group(1), []).append(line)
    assert sorted(by_name) == sorted(names)
    for name, found in by_name.items():
        assert [line["message"].split(" ")[0] for line in found] == [*["chunk"] * 3, "closed"]
        for line in found:
            assert line["request_id"] == f"id-{name}", line
            assert line.get("user_id") == (7 if user else None), line


def check_errors(lines: list[dict[str, Any]], names: list[str]) -> None:
    errors = [line for line in lines if line["message"] == BODY_ERROR]
    assert sorted(line["request_id"] for line in errors) == sorted(f"id-{n}" for n in names)
    for line in errors:
        assert line["logger"] == "ctxlog.django"
        assert f"RuntimeError: body {line['request_id'][3:]}" in line["exception"]


NAMES = [f"s{n}" for n in range(12)]


def test_wsgi_under_runserver_s_threaded_server() -> None:
    names = [*NAMES, "boom1"]
    with capture(level="INFO") as lines, RunserverServer() as server:
        bodies = asyncio.run(fetch(server.url, "stream", names))
    for name in NAMES:
        assert bodies[name] == f"id-{name}\n" * 3
    check_lines(lines, names)
    check_errors(lines, ["boom1"])
    assert dict(ctxlog.current()) == {}


def test_wsgi_one_thread_carries_nothing_to_the_next_request() -> None:
    """werkzeug without threads serves every request on one thread: its own
    access lines, written there after each response, carry no id, and the
    request after a streamed one binds only its own."""
    finished = logging.getLogger("tests.finished")

    def on_finished(**_: object) -> None:
        finished.info("request_finished")

    one_thread = WerkzeugServer(get_wsgi_application(), threaded=False)
    request_finished.connect(on_finished)
    try:
        with capture(level="INFO") as lines, one_thread as server:
            asyncio.run(fetch(server.url, "stream", ["one"]))
            after = httpx.get(f"{server.url}/view/two", headers={"Connection": "close"})
    finally:
        request_finished.disconnect(on_finished)
    check_lines([line for line in lines if "n=two" not in line["message"]], ["one"])
    # Django closes the streamed response in the request's context: its
    # request_finished receivers' lines carry the id.
    ids = [line.get("request_id") for line in lines if line["logger"] == finished.name]
    assert ids.count("id-one") == 1, ids
    assert after.json()["context"] == {"request_id": after.headers["x-request-id"], "user_id": 7}
    access = [line for line in lines if line["logger"] == "werkzeug"]
    assert len(access) == 2
    assert all(set(line) == {"message", "level", "logger"} for line in access), access


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume synchronous iterators")
@pytest.mark.parametrize("body", ["stream", "astream"])
@pytest.mark.parametrize("chain", ["sync", "async"])
@pytest.mark.parametrize("application", ["django", "ctxlog"])
def test_asgi_under_uvicorn(body: str, chain: str, application: str) -> None:
    """Django's own ASGI application, and ctxlog.django.get_asgi_application(),
    under uvicorn: the site's chain (sync middlewares: ctxlog's runs in a
    thread) or an async one. Through ctxlog's, uvicorn's access lines carry
    the id too."""
    # (A body that raises is left to the uvicorn subprocess test of
    # ctxlog.django.get_asgi_application: Django's ASGI handler then leaves the
    # request's body file unclosed, a ResourceWarning this process would fail on.)
    middleware = django_site.MIDDLEWARE if chain == "sync" else django_site.MIDDLEWARE[:1]
    with override_settings(MIDDLEWARE=middleware):
        app = get_asgi_application() if application == "django" else ctxlog_application()
        with capture(level="INFO") as lines, UvicornServer(app, lifespan="off") as server:
            bodies = asyncio.run(fetch(server.url, body, NAMES))
    for name in NAMES:
        assert bodies[name] == f"id-{name}\n" * 3
    check_lines(lines, NAMES, user=chain == "sync")
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert len(access) == len(NAMES)
    for line in access:
        if application == "django":
            assert "request_id" not in line, line
        else:
            assert f"/{body}/{line['request_id'][3:]} " in line["message"], line
    assert dict(ctxlog.current()) == {}


def test_django_s_test_clients_stream_in_the_request_s_context() -> None:
    """Django's Client and AsyncClient consume a streamed body as a server does
    and close the response after it."""

    async def async_get() -> bytes:
        response = await AsyncClient().get("/astream/c2", headers={"X-Request-ID": "id-c2"})
        return b"".join([part async for part in response.streaming_content])

    with capture(level="INFO") as lines:
        response = Client().get("/stream/c1", headers={"X-Request-ID": "id-c1"})
        assert b"".join(response.streaming_content) == b"id-c1\n" * 3
        assert asyncio.run(async_get()) == b"id-c2\n" * 3
    check_lines(lines, ["c1", "c2"])
    assert dict(ctxlog.current()) == {}


@pytest.mark.parametrize("application", ["django", "ctxlog"])
def test_asgi_a_client_that_leaves_mid_body(application: str) -> None:
    """The client leaves while an async body waits: Django cancels the task
    sending it, and the body's clean-up runs, and logs, in the request's context."""
    with override_settings(MIDDLEWARE=django_site.MIDDLEWARE[:1]):
        app = get_asgi_application() if application == "django" else ctxlog_application()
        with capture(level="INFO") as lines, UvicornServer(app, lifespan="off") as server:
            headers = {"X-Request-ID": "id-slow1"}
            with httpx.stream("GET", f"{server.url}/astream/slow1", headers=headers) as response:
                assert next(response.iter_raw()) == b"id-slow1\n"
            deadline = time.monotonic() + 10
            while not any(line["message"] == "closed n=slow1" for line in lines):
                assert time.monotonic() < deadline, lines
                time.sleep(0.01)
    (closed,) = [line for line in lines if line["message"] == "closed n=slow1"]
    assert closed["request_id"] == "id-slow1"
    assert not [line for line in lines if line["message"] == BODY_ERROR]


def test_ctxlog_s_asgi_application_passes_the_rest_through() -> None:
    """Lifespan goes to Django as it is (Django refuses it, uvicorn carries on
    without); an ignored URL is sent with no id, as Django's own would."""
    options = {"MIDDLEWARE": django_site.MIDDLEWARE[:1], "CTXLOG": {"ignore_urls": ["/health"]}}
    with override_settings(**options):
        app = ctxlog_application()
        assert repr(app).startswith("ctxlog.django.get_asgi_application() around ")
        with capture(level="INFO") as lines, UvicornServer(app, lifespan="auto") as server:
            health = httpx.get(f"{server.url}/health")
            view = httpx.get(f"{server.url}/view/p1", headers={"X-Request-ID": "id-p1"})
    assert (health.text, health.headers.get("x-request-id")) == ("ok", None)
    assert view.headers["x-request-id"] == "id-p1"
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert [line.get("request_id") for line in access] == [None, "id-p1"]
    assert any("lifespan" in line["message"] for line in lines if line["logger"] == "uvicorn.error")
