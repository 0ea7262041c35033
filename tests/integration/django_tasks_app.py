"""The Django tasks of the ``django.tasks`` tests, and the backend that carries the context.

The site's settings (`tests.integration.django_site`) name `Backend` in
``TASKS``; it runs on django-tasks-db's database backend and its worker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django_tasks_db import DatabaseBackend

import ctxlog
from ctxlog.django_tasks import ContextBackend
from tests.integration import django_site
from tests.integration._queues import JOB_LOGGER


class Backend(ContextBackend, DatabaseBackend):
    """django-tasks-db's backend, carrying the context."""


django_site.setup()  # the task decorator reads the TASKS setting

try:
    from django.tasks import task
except ImportError:  # before Django 6: the django-tasks backport
    from django_tasks import task  # type: ignore[no-redef,unused-ignore]

log = logging.getLogger("app.tasks")

#: Lines the ``work`` task logs.
STEPS = 3


class Boom(RuntimeError):
    """What the failing task raises."""


@task
def work(expected: str) -> str:
    for step in range(STEPS):
        log.info("step %d for %s", step, expected)
        time.sleep(0)
    return str(ctxlog.get("request_id"))


@task
def job(request_id: str) -> None:
    logging.getLogger(JOB_LOGGER).info("job %s", request_id)


@task
def chain() -> str:
    log.info("chain starts")
    work.enqueue(str(ctxlog.get("request_id")))
    return str(ctxlog.get("request_id"))


@task
def snoop() -> dict[str, Any]:
    log.info("snooping")
    seen = dict(ctxlog.current())
    ctxlog.set(left="behind")  # never reset: the next task must not see it
    return seen


@task
def fail() -> None:
    log.info("about to fail")
    raise Boom("no luck")
