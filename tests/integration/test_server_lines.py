"""Real servers started as the docs start them with the shipped JSON config —
uvicorn with ``--log-config`` on ``python -m ctxlog config logging-json.json``,
gunicorn with uvicorn workers and with gthread workers, each with the
``logconfig_dict`` of the servers page, read from the page — write their own
access lines and the error tracebacks with the request id."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ctxlog._check import check_files

APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ctxlog.asgi import RequestContextMiddleware


async def ok(request):
    return PlainTextResponse("ok")


async def boom(request):
    raise RuntimeError("boom")


app = RequestContextMiddleware(Starlette(routes=[Route("/", ok), Route("/boom", boom)]))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail("the server did not start")


@contextlib.contextmanager
def serving(command: list[str], cwd: Path, port: int, stderr: Path) -> Iterator[str]:
    """Run the server *command* in *cwd*, its stderr into *stderr*, until the block
    ends; yield its base URL once it accepts connections on *port*."""
    with stderr.open("wb") as err:
        proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_until_up(port, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


DOCS = Path(__file__).resolve().parents[2] / "docs"
SERVERS_PAGE = DOCS / "servers.md"
FRAGMENT = re.compile(r"^```py\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def recipe(first_line: str, page: Path = SERVERS_PAGE) -> str:
    """The file shown on a docs page (a ``gunicorn.conf.py`` of the servers page)
    whose block starts with *first_line*."""
    found = [
        block
        for block in FRAGMENT.findall(page.read_text(encoding="utf-8"))
        if block.startswith(first_line)
    ]
    assert len(found) == 1, f"docs/{page.name}: no single block starting {first_line!r}"
    block: str = found[0]
    return block


def print_config(folder: Path) -> None:
    """``python -m ctxlog config logging-json.json > log.json``, as the docs say."""
    config = subprocess.run(
        [sys.executable, "-m", "ctxlog", "config", "logging-json.json"],
        capture_output=True,
        check=True,
        cwd=folder,
    )
    (folder / "log.json").write_bytes(config.stdout)


def server_command(server: str, tmp_path: Path, port: int) -> list[str]:
    if server == "uvicorn":
        print_config(tmp_path)
        return [
            *(sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1"),
            *("--port", str(port), "--log-config", "log.json"),
        ]
    conf = recipe("# gunicorn.conf.py -- uvicorn workers")
    (tmp_path / "gunicorn.conf.py").write_text(conf, encoding="utf-8")
    return [
        *(sys.executable, "-m", "gunicorn", "app:app", "-c", "gunicorn.conf.py"),
        *("--bind", f"127.0.0.1:{port}", "--workers", "1"),
    ]


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_server_lines_with_the_shipped_config(tmp_path: Path, server: str) -> None:
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    port = free_port()
    stderr = tmp_path / "stderr.jsonl"
    with serving(server_command(server, tmp_path, port), tmp_path, port, stderr) as base:
        assert httpx.get(base, headers={"X-Request-ID": "r-ok"}).status_code == 200
        failed = httpx.get(f"{base}/boom", headers={"X-Request-ID": "r-boom"})
        assert failed.status_code == 500
        assert failed.headers["x-request-id"] == "r-boom"
        generated = httpx.get(base).headers["x-request-id"]
    lines: list[dict[str, Any]] = [json.loads(line) for line in stderr.read_text().splitlines()]
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert [line["request_id"] for line in access] == ["r-ok", "r-boom", generated]
    assert '"GET /boom HTTP/1.1" 500' in access[1]["message"]
    (traceback,) = [line for line in lines if "Exception in ASGI application" in line["message"]]
    assert traceback["request_id"] == "r-boom"
    assert "RuntimeError: boom" in traceback["exception"]
    # Start-up and shutdown lines belong to no request: the filter's default.
    assert all(
        line["request_id"] == "-"
        for line in lines
        if line["logger"] in {"uvicorn.error", "gunicorn.error"} and "ASGI" not in line["message"]
    )
    # ... and python -m ctxlog check passes the log as it stands: those lines
    # are outside any request, the traceback line carries its id.
    command = [sys.executable, "-m", "ctxlog", "check", str(stderr)]
    checked = subprocess.run(command, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout
    assert "missing id: 0  crossed: 0" in checked.stdout
    assert "outside requests: 0" not in checked.stdout


def test_hypercorn_error_line_with_the_shipped_config(tmp_path: Path) -> None:
    """hypercorn: its "Error in ASGI Framework" line goes through the JSON config
    (``--log-config json:log.json``) and carries the id."""
    (tmp_path / "app.py").write_text(APP, encoding="utf-8")
    print_config(tmp_path)
    port = free_port()
    stderr = tmp_path / "stderr.txt"
    command = [
        *(sys.executable, "-m", "hypercorn", "app:app"),
        *("--bind", f"127.0.0.1:{port}", "--log-config", "json:log.json"),
    ]
    with serving(command, tmp_path, port, stderr) as base:
        failed = httpx.get(f"{base}/boom", headers={"X-Request-ID": "h-err"})
        assert failed.status_code == 500
        assert failed.headers["x-request-id"] == "h-err"
    lines = [json.loads(line) for line in stderr.read_text().splitlines() if line.startswith("{")]
    (error,) = [line for line in lines if line["message"] == "Error in ASGI Framework"]
    assert error["request_id"] == "h-err"
    assert "RuntimeError: boom" in error["exception"]


FLASK_APP = """
import logging

from flask import Flask

from ctxlog.wsgi import RequestContextMiddleware

app = Flask(__name__)
app.wsgi_app = RequestContextMiddleware(app.wsgi_app)
log = logging.getLogger("shop")


@app.get("/items/<int:n>")
def item(n):
    log.info("item %d", n)
    return {"n": n}


@app.get("/boom")
def boom():
    raise RuntimeError("boom")
"""


def gthread(
    tmp_path: Path, source: str, target: str, *, workers: int, threads: int
) -> tuple[list[str], int, Path]:
    """gunicorn with gthread workers and the servers page's ``gunicorn.conf.py``,
    serving *target* of an ``app.py`` holding *source*: the command, the port,
    and the file its stderr goes to."""
    (tmp_path / "app.py").write_text(source, encoding="utf-8")
    conf = recipe("# gunicorn.conf.py -- gthread workers")
    (tmp_path / "gunicorn.conf.py").write_text(conf, encoding="utf-8")
    port = free_port()
    command = [
        *(sys.executable, "-m", "gunicorn", target, "-c", "gunicorn.conf.py"),
        *("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads)),
    ]
    return command, port, tmp_path / "stderr.jsonl"


def test_gunicorn_gthread_recipe(tmp_path: Path) -> None:
    """gthread workers with the page's logconfig_dict: access lines carry the id
    through AccessLogFilter, the application's lines and Flask's error traceback
    through the middleware's context."""
    command, port, stderr = gthread(tmp_path, FLASK_APP, "app:app", workers=2, threads=4)
    with serving(command, tmp_path, port, stderr) as base:

        def get(n: int) -> httpx.Response:
            headers = {"X-Request-ID": f"g-{n}"} if n % 3 else {}
            return httpx.get(f"{base}/items/{n}", headers=headers, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(get, range(60)))
        failed = httpx.get(f"{base}/boom", headers={"X-Request-ID": "g-boom"}, timeout=30)
        assert failed.status_code == 500
        assert failed.headers["x-request-id"] == "g-boom"
    ids = {n: response.headers["x-request-id"] for n, response in enumerate(responses)}
    assert all(ids[n] == f"g-{n}" for n in ids if n % 3)
    assert len(set(ids.values())) == 60
    lines: list[dict[str, Any]] = [json.loads(line) for line in stderr.read_text().splitlines()]
    app_lines = {line["message"]: line["request_id"] for line in lines if line["logger"] == "shop"}
    assert app_lines == {f"item {n}": ids[n] for n in ids}
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert len(access) == 61
    for line in access:
        match = re.search(r"GET /items/(\d+) ", line["message"])
        expected = ids[int(match.group(1))] if match else "g-boom"
        assert line["request_id"] == expected, line
    # Flask answers its own 500 and logs the traceback, in the request's context.
    (traceback,) = [line for line in lines if line["message"] == "Exception on /boom [GET]"]
    assert traceback["request_id"] == "g-boom"
    assert "RuntimeError: boom" in traceback["exception"]
    others = [line for line in lines if line["logger"] == "gunicorn.error"]
    assert others  # start-up and shutdown
    assert all(line["request_id"] == "-" for line in others)
    report = check_files([stderr])
    assert report.ok, report.problems
    assert report.outside == len(others)


STREAMING_APP = """
import logging

from flask import Flask, Response, stream_with_context

from ctxlog.wsgi import RequestContextMiddleware

app = Flask(__name__)
log = logging.getLogger("shop")


@app.get("/flask")
def flask_stream():
    @stream_with_context
    def body():
        yield "one\\n"
        log.info("halfway")
        raise RuntimeError("flask body")

    return Response(body())


def plain(environ, start_response):
    if environ["PATH_INFO"] != "/plain":
        return app(environ, start_response)

    def body():
        yield b"one\\n"
        raise ValueError("plain body")

    start_response("200 OK", [("Content-Type", "text/plain")])
    return body()


application = RequestContextMiddleware(plain)
"""


def test_an_error_in_a_streamed_body_is_logged_with_the_id(tmp_path: Path) -> None:
    """Under gunicorn's gthread workers, an error raised while the body is being
    produced (Flask's stream_with_context, a plain generator) is logged by the
    middleware in the request's context, then reaches gunicorn as before."""
    command, port, stderr = gthread(
        tmp_path, STREAMING_APP, "app:application", workers=1, threads=2
    )
    with serving(command, tmp_path, port, stderr) as base:
        for path, request_id in (("/flask", "s-flask"), ("/plain", "s-plain")):
            with contextlib.suppress(httpx.HTTPError):  # the body is cut short
                response = httpx.get(f"{base}{path}", headers={"X-Request-ID": request_id})
                assert response.headers["x-request-id"] == request_id
        time.sleep(0.5)  # the worker logs after the connection broke
    lines: list[dict[str, Any]] = [json.loads(line) for line in stderr.read_text().splitlines()]
    errors = [line for line in lines if line["logger"] == "ctxlog.wsgi"]
    assert [line["message"] for line in errors] == [
        "Exception while producing the response body"
    ] * 2
    assert [line["request_id"] for line in errors] == ["s-flask", "s-plain"]
    assert "RuntimeError: flask body" in errors[0]["exception"]
    assert "ValueError: plain body" in errors[1]["exception"]
    (halfway,) = [line for line in lines if line["message"] == "halfway"]
    assert halfway["request_id"] == "s-flask"
    # gunicorn still gets the error, as before: its own line, in the worker thread.
    assert len([line for line in lines if line["message"] == "Error handling request"]) == 2


DJANGO_SETTINGS = """
import ctxlog.django

DEBUG = False
ALLOWED_HOSTS = ["*"]
SECRET_KEY = "ctxlog-tests"
ROOT_URLCONF = "mysite.urls"
INSTALLED_APPS = []
DATABASES = {}
MIDDLEWARE = ["ctxlog.django.RequestContextMiddleware"]
LOGGING = ctxlog.django.logging_settings()
"""

DJANGO_URLS = """
import asyncio
import logging

from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path

log = logging.getLogger("shop")


def item(request, n):
    log.info("item %s", n)
    return HttpResponse("ok")


async def stream(request, n):
    async def body():
        for i in range(3):
            await asyncio.sleep(0.001)
            log.info("chunk %s %s", n, i)
            yield "part"
        if n == "boom":
            raise RuntimeError("body boom")

    return StreamingHttpResponse(body())


urlpatterns = [path("items/<str:n>", item), path("stream/<str:n>", stream)]
"""


def test_django_under_uvicorn_access_lines(tmp_path: Path) -> None:
    """The Django page's set-up: ``mysite/asgi.py`` with
    ``ctxlog.django.get_asgi_application()``, uvicorn with ``--log-config`` on
    the shipped JSON config. Each of 50 concurrent requests' access lines
    carries its own id, streamed bodies too; a body's error is logged with it."""
    site = tmp_path / "mysite"
    site.mkdir()
    (site / "__init__.py").write_text("", encoding="utf-8")
    (site / "settings.py").write_text(DJANGO_SETTINGS, encoding="utf-8")
    (site / "urls.py").write_text(DJANGO_URLS, encoding="utf-8")
    asgi = recipe("# mysite/asgi.py", DOCS / "django.md")
    (site / "asgi.py").write_text(asgi, encoding="utf-8")
    print_config(tmp_path)
    port = free_port()
    stderr = tmp_path / "stderr.jsonl"
    command = [
        *(sys.executable, "-m", "uvicorn", "mysite.asgi:application", "--host", "127.0.0.1"),
        *("--port", str(port), "--log-config", "log.json"),
    ]

    async def hammer(base: str) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def one(path: str, request_id: str) -> None:
                headers = {"X-Request-ID": request_id}
                with contextlib.suppress(httpx.HTTPError):  # the boom body is cut short
                    response = await client.get(path, headers=headers)
                    assert response.headers["x-request-id"] == request_id

            await asyncio.gather(
                *(one(f"/items/{n}", f"dj-{n}") for n in range(50)),
                one("/stream/s", "dj-s"),
                one("/stream/boom", "dj-boom"),
            )

    with serving(command, tmp_path, port, stderr) as base:
        asyncio.run(hammer(base))
        time.sleep(0.3)  # uvicorn logs the boom request's traceback after the connection ends
    lines: list[dict[str, Any]] = [json.loads(line) for line in stderr.read_text().splitlines()]
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert len(access) == 52
    for line in access:
        path = re.search(r"GET /(\S+) HTTP", line["message"])
        assert path, line
        n = path.group(1).split("/")[1]
        assert line["request_id"] == f"dj-{n}", line
    shop = [line for line in lines if line["logger"] == "shop"]
    assert len(shop) == 50 + 6
    for line in shop:
        assert line["request_id"] == f"dj-{line['message'].split()[1]}", line
    (error,) = [line for line in lines if line["logger"] == "ctxlog.django"]
    assert error["message"] == "Exception while producing the response body"
    assert error["request_id"] == "dj-boom"
    assert "RuntimeError: body boom" in error["exception"]
    (traceback,) = [line for line in lines if "Exception in ASGI application" in line["message"]]
    assert traceback["request_id"] == "dj-boom"
    assert "RuntimeError: body boom" in traceback["exception"]
