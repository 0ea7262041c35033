"""What a job pays for its context on Taskiq, arq and Django's tasks: publish + run.

Each row publishes and runs one job that logs 3 JSON lines (ctxlog's JSON
formatter behind a ``ContextFilter``, into a sink), inside a request's
context, with the integration and without it, side by side in one process
(round-robin runs, median of the per-run ratios).  Target: the integration
costs under 5 % of such a job.

- Taskiq: the in-memory broker, running each kicked task in place
  (``InMemoryBroker(await_inplace=True)``), with and without
  `ctxlog.taskiq.ContextMiddleware`.
- arq has no in-memory broker: the row runs arq's own job path without
  Redis, ``serialize_job`` at enqueue, ``deserialize_job_raw`` and the
  ``on_job_start`` / ``after_job_end`` hooks in the worker around the job,
  with `ctxlog.arq.worker_settings`' serializers and hooks against arq's
  defaults (pickle, no hooks).  The Redis round trips a real job makes
  would only lower the ratio.
- Django's tasks: the immediate backend, with and without
  `ctxlog.django_tasks.ContextBackend` mixed in (enqueue runs the task in
  place, with its signals).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import _harness
from _harness import Op, median_ratio, race, verdict

import ctxlog
from ctxlog.stdlib import json_formatter

LIMIT = 1.05
JOBS = 200

_sink = io.StringIO()
log = logging.getLogger("bench.jobs")


def _setup_logging() -> None:
    handler = logging.StreamHandler(_sink)
    handler.setFormatter(json_formatter())
    handler.addFilter(ctxlog.ContextFilter())
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _three_lines(n: int) -> None:
    log.info("job %s starts", n)
    log.info("job %s works", n)
    log.info("job %s done", n)


def _per_job(run_jobs: Callable[[], None]) -> Callable[[], float]:
    """A run: ``JOBS`` jobs published and run, inside a request; ns per job."""

    def run() -> float:
        _sink.seek(0)
        _sink.truncate()
        start = time.perf_counter_ns()
        with ctxlog.scope(request_id=_harness.REQUEST_ID, user_id=4217):
            run_jobs()
        return (time.perf_counter_ns() - start) / JOBS

    return run


# --------------------------------------------------------------------------
# Taskiq
# --------------------------------------------------------------------------


def taskiq_ops() -> list[Op]:
    from taskiq import InMemoryBroker  # noqa: PLC0415 -- each queue only when measured

    from ctxlog.taskiq import ContextMiddleware  # noqa: PLC0415

    def broker_run(with_context: bool) -> Callable[[], None]:
        broker = InMemoryBroker(await_inplace=True)
        if with_context:
            broker = broker.with_middlewares(ContextMiddleware())

        @broker.task(task_name="job")
        async def job(n: int) -> None:
            _three_lines(n)

        loop = asyncio.new_event_loop()
        loop.run_until_complete(broker.startup())

        async def jobs() -> None:
            for n in range(JOBS):
                await job.kiq(n)

        return lambda: loop.run_until_complete(jobs())

    return [
        Op("taskiq plain", _per_job(broker_run(with_context=False))),
        Op("taskiq ctxlog", _per_job(broker_run(with_context=True))),
    ]


# --------------------------------------------------------------------------
# arq
# --------------------------------------------------------------------------


def arq_ops() -> list[Op]:
    import pickle  # noqa: PLC0415

    from arq.jobs import deserialize_job_raw, serialize_job  # noqa: PLC0415

    import ctxlog.arq  # noqa: PLC0415

    settings: dict[str, Any] = ctxlog.arq.worker_settings({})

    async def job(ctx: dict[str, Any], n: int) -> None:  # noqa: ARG001 -- arq's job signature
        _three_lines(n)

    def path(with_context: bool) -> Callable[[], None]:
        dumps = settings["job_serializer"] if with_context else pickle.dumps
        loads = settings["job_deserializer"] if with_context else pickle.loads
        start = settings["on_job_start"] if with_context else None
        end = settings["after_job_end"] if with_context else None
        loop = asyncio.new_event_loop()

        async def one(n: int) -> None:
            raw = serialize_job("job", (n,), {}, None, 0, serializer=dumps)

            async def run_job() -> None:  # arq's Worker.run_job: one task per job
                _, args, kwargs, _, _ = deserialize_job_raw(raw, deserializer=loads)
                ctx = {"job_id": f"j-{n}", "job_try": 1}
                if start is not None:
                    await start(ctx)
                await job(ctx, *args, **kwargs)
                if end is not None:
                    await end(ctx)

            await asyncio.create_task(run_job())

        async def jobs() -> None:
            for n in range(JOBS):
                await one(n)

        return lambda: loop.run_until_complete(jobs())

    return [
        Op("arq plain", _per_job(path(with_context=False))),
        Op("arq ctxlog", _per_job(path(with_context=True))),
    ]


# --------------------------------------------------------------------------
# Django's tasks
# --------------------------------------------------------------------------


def django_job(n: int) -> None:
    """The Django task (Django wants one defined at module level)."""
    _three_lines(n)


def django_ops() -> list[Op]:
    import django  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415

    new = django.VERSION >= (6,)
    immediate = (
        "django.tasks.backends.immediate.ImmediateBackend"
        if new
        else "django_tasks.backends.immediate.ImmediateBackend"
    )
    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=[] if new else ["django_tasks"],
            TASKS={
                "default": {"BACKEND": immediate},
                "ctxlog": {"BACKEND": "bench_queues_async.ContextImmediateBackend"},
            },
            LOGGING_CONFIG=None,
        )
        django.setup()
    if new:
        from django.tasks import task  # noqa: PLC0415
    else:
        from django_tasks import task  # type: ignore[no-redef,unused-ignore]  # noqa: PLC0415

    plain = task(django_job, backend="default")
    carried = task(django_job, backend="ctxlog")

    def enqueue(which: Any) -> Callable[[], None]:
        def jobs() -> None:
            for n in range(JOBS):
                which.enqueue(n)

        return jobs

    return [
        Op("django plain", _per_job(enqueue(plain))),
        Op("django ctxlog", _per_job(enqueue(carried))),
    ]


def _context_immediate_backend() -> type:
    from django.utils.module_loading import import_string  # noqa: PLC0415

    from ctxlog.django_tasks import ContextBackend  # noqa: PLC0415

    try:
        base = import_string("django.tasks.backends.immediate.ImmediateBackend")
    except ImportError:
        base = import_string("django_tasks.backends.immediate.ImmediateBackend")
    return type("ContextImmediateBackend", (ContextBackend, base), {})


def __getattr__(name: str) -> Any:
    # Django imports the backend class by its dotted path once settings name it.
    if name == "ContextImmediateBackend":
        return _context_immediate_backend()
    raise AttributeError(name)


def main() -> None:
    """Print ns per job with and without each integration, and the ratio."""
    _setup_logging()
    runs = 5 if _harness.quick() else 21
    print(f"Publish + run of one job logging 3 JSON lines ({JOBS} jobs a run, {runs} runs)")
    for name, make in (("Taskiq", taskiq_ops), ("arq", arq_ops), ("django.tasks", django_ops)):
        plain, carried = make()
        race([plain, carried], runs, warm_up=True)
        ratio = median_ratio(carried.samples, plain.samples)
        print(
            f"  {name:<14}{plain.ns:>10,.0f} ns plain {carried.ns:>10,.0f} ns ctxlog  "
            f"{verdict(ratio, LIMIT)}"
        )


if __name__ == "__main__":
    main()
