"""A small Django site for the tests: settings, views, URLs (configured once per process)."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import django
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path

import ctxlog

log = logging.getLogger("tests.django")

# A worker process of the task tests names the database of the test process.
DB = Path(
    os.environ.get("CTXLOG_TEST_DJANGO_DB")
    or Path(tempfile.mkdtemp(prefix="ctxlog-django-")) / "site.sqlite"
)

#: Django's tasks: the database backend (django-tasks-db), on the backport before Django 6.
TASK_APPS = ["django_tasks_db"] if django.VERSION >= (6,) else ["django_tasks", "django_tasks_db"]


def query(tag: str) -> None:
    """One ORM-level query: Django logs it on django.db.backends with its parameters.

    The connection is closed after it: the query may run in any thread (an
    executor's, under sync_to_async), where Django's end-of-request cleanup
    does not reach, and an unclosed SQLite connection is a ResourceWarning
    (Python 3.13) when its thread's objects are collected.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT %s", [tag])
    finally:
        connection.close()


def view(request: HttpRequest, n: str) -> JsonResponse:
    log.info("view n=%s", n)
    query(f"q-{n}")

    async def inner() -> None:
        await asyncio.sleep(0)
        log.info("async_to_sync n=%s", n)

    async_to_sync(inner)()
    return JsonResponse(
        {
            "context": dict(ctxlog.current()),
            "header": request.META.get("HTTP_X_REQUEST_ID"),
            "headers": request.headers.get("X-Request-ID"),
        }
    )


async def async_view(request: HttpRequest, n: str) -> JsonResponse:
    log.info("async view n=%s", n)

    def in_thread(where: str) -> None:
        log.info("sync_to_async %s n=%s", where, n)
        query(f"q-{n}")

    await sync_to_async(in_thread, thread_sensitive=True)("sensitive")
    await sync_to_async(in_thread, thread_sensitive=False)("free")
    return JsonResponse({"context": dict(ctxlog.current())})


def boom(request: HttpRequest) -> HttpResponse:
    log.info("about to fail")
    msg = "boom"
    raise RuntimeError(msg)


def parts(n: str) -> Iterator[str]:
    """A body that logs each part it makes, then its end (and raises first, for
    an ``n`` starting with ``boom``)."""
    try:
        for i in range(3):
            log.info("chunk n=%s i=%s", n, i)
            yield f"{ctxlog.get('request_id')}\n"
        if n.startswith("boom"):
            msg = f"body {n}"
            raise RuntimeError(msg)
    finally:
        log.info("closed n=%s", n)


def stream(request: HttpRequest, n: str) -> StreamingHttpResponse:
    """A streamed body, produced by the server after the middleware chain has returned."""
    return StreamingHttpResponse(parts(n), content_type="text/plain")


async def async_stream(request: HttpRequest, n: str) -> StreamingHttpResponse:
    """The same with an async iterator, from an async view (slow, for an ``n``
    starting with ``slow``: a client leaves before its end)."""

    async def body() -> AsyncIterator[str]:
        for part in parts(n):
            yield part
            await asyncio.sleep(10 if n.startswith("slow") else 0.001)

    return StreamingHttpResponse(body(), content_type="text/plain")


def fake_auth(get_response: Any) -> Any:
    """Stands in for AuthenticationMiddleware: a user on the request."""

    def middleware(request: HttpRequest) -> Any:
        request.user = SimpleNamespace(is_authenticated=True, pk=7)  # a stand-in user
        return get_response(request)

    return middleware


def annotate_user(get_response: Any) -> Any:
    """The documented pattern: after authentication, annotate the request's unit."""

    def middleware(request: HttpRequest) -> Any:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            ctxlog.annotate(user_id=user.pk)
        return get_response(request)

    return middleware


urlpatterns = [
    path("view/<str:n>", view),
    path("async/<str:n>", async_view),
    path("boom", boom),
    path("stream/<str:n>", stream),
    path("astream/<str:n>", async_stream),
    path("health", lambda _request: HttpResponse("ok")),
]

MIDDLEWARE = [
    "ctxlog.django.RequestContextMiddleware",
    "tests.integration.django_site.fake_auth",
    "tests.integration.django_site.annotate_user",
]


def setup() -> None:
    if settings.configured:
        return
    settings.configure(
        DEBUG=True,  # Django logs queries on django.db.backends only then
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="ctxlog-tests",
        ROOT_URLCONF=__name__,
        MIDDLEWARE=MIDDLEWARE,
        INSTALLED_APPS=TASK_APPS,
        TASKS={"default": {"BACKEND": "tests.integration.django_tasks_app.Backend"}},
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(DB),
                "OPTIONS": {"timeout": 30},
            }
        },
        LOGGING_CONFIG=None,  # the tests capture at the root
        USE_TZ=True,
    )
    django.setup()
