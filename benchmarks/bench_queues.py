"""Task-queue benchmark: what a job pays for carrying the context.

Each row publishes and runs jobs that log 3 lines (JSON, through
``ctxlog.ContextFilter``, to ``os.devnull``) with 5 keys bound in the
publisher, once through the queue with ctxlog's integration and once through
the same queue without it, in the same process, round-robin; the figure is the
median of the per-run ratios.  Target: the integration adds under 5 %.

* Dramatiq: ``StubBroker`` (in memory) and a real ``Worker`` thread;
  ``ctxlog.dramatiq.ContextMiddleware``.
* Huey: ``MemoryHuey(immediate=True)``, the task run in the caller's thread;
  ``ctxlog.huey.install``.
Two columns: the jobs of a run published from one request (a request that
enqueues several jobs; ctxlog reuses the envelope it wrote just before, and
the worker the values it read just before), and each from a request of its
own (a new envelope written and read for every job).

* Taskiq: ``InMemoryBroker(await_inplace=True)``, each kicked task run in
  place; ``ctxlog.taskiq.ContextMiddleware``.
* arq has no in-memory broker: the row runs arq's own job path without Redis,
  ``serialize_job`` when the job is enqueued, then, in an asyncio task of its
  own as arq's worker runs it, ``deserialize_job_raw``, ``on_job_start``, the
  job and ``after_job_end``; ``ctxlog.arq.worker_settings``' serializers and
  hooks against arq's defaults (pickle, no hooks).
* Django's tasks: the immediate backend (the task runs inside ``enqueue``,
  with its signals), with ``ctxlog.django_tasks.ContextBackend`` mixed in or not.
* RQ: RQ has no in-memory broker, so this row runs on a real ``redis-server``
  (started here on a Unix socket; the row is left out when there is none on
  PATH), with ``Queue(is_async=False)``: the job is saved to Redis and run in
  this process; ``ctxlog.rq.ContextJob`` against RQ's ``Job``.

A row is a ``Row(name, broker, arm, jobs)``: ``arm(integrated=...)`` builds
one side and returns an ``Arm`` whose ``publish()`` publishes one job and
whose ``drain()`` waits until the jobs published have run.  Run it
with ``python benchmarks/run.py queues`` (``--quick`` for a rough pass) or
alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from _harness import CONTEXT, Op, quick, race, ratio, verdict

import ctxlog
from ctxlog.stdlib import json_formatter

__all__ = ["ROWS", "Arm", "ArmFactory", "Row", "main"]

TARGET = 1.05

#: The logger the benchmark's jobs log on (3 lines a job).
log = logging.getLogger("bench.queues")


def job_body() -> None:
    """What every job does: log 3 lines."""
    log.info("job started")
    log.info("job working")
    log.info("job done")


@dataclass
class Arm:
    """One side of a row: ``publish()`` publishes one job, ``drain()`` waits until every
    job published has run; ``close()`` ends it."""

    publish: Callable[[], object]
    drain: Callable[[], None] = lambda: None
    close: Callable[[], None] = lambda: None


class ArmFactory(Protocol):
    """Builds one side of a row: with ctxlog's integration, or without it."""

    def __call__(self, *, integrated: bool) -> Arm: ...


@dataclass
class Row:
    """A queue: its name, what it runs on, and how to build each side."""

    name: str
    broker: str
    arm: ArmFactory
    #: Jobs per timed run (enough for a run to last tens of milliseconds).
    jobs: int
    #: Why the row cannot run here, or ``None``.
    unavailable: Callable[[], str | None] = lambda: None


# --------------------------------------------------------------------------
# the queues
# --------------------------------------------------------------------------


def dramatiq_arm(*, integrated: bool) -> Arm:
    """Dramatiq on the StubBroker, one real worker thread."""
    import dramatiq  # noqa: PLC0415 -- each row imports its queue only when it runs
    from dramatiq.brokers.stub import StubBroker  # noqa: PLC0415 -- see above

    from ctxlog.dramatiq import ContextMiddleware  # noqa: PLC0415 -- see above

    broker = StubBroker()
    if integrated:
        broker.add_middleware(ContextMiddleware())
    broker.emit_after("process_boot")
    actor = dramatiq.actor(broker=broker, actor_name="job", max_retries=0)(job_body)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=10)
    worker.start()

    def close() -> None:
        worker.stop()
        broker.close()

    return Arm(actor.send, lambda: broker.join(actor.queue_name), close)


def huey_arm(*, integrated: bool) -> Arm:
    """Huey in immediate mode on MemoryHuey: publish and run in the caller's thread."""
    from huey import MemoryHuey  # noqa: PLC0415 -- each row imports its queue only when it runs

    import ctxlog.huey  # noqa: PLC0415 -- see above

    huey = MemoryHuey("bench", immediate=True, results=False)
    if integrated:
        ctxlog.huey.install(huey)
    return Arm(huey.task()(job_body))


def taskiq_arm(*, integrated: bool) -> Arm:
    """Taskiq's in-memory broker, each task run in place when kicked."""
    import asyncio  # noqa: PLC0415 -- each row imports its queue only when it runs

    from taskiq import InMemoryBroker  # noqa: PLC0415 -- see above

    from ctxlog.taskiq import ContextMiddleware  # noqa: PLC0415 -- see above

    broker = InMemoryBroker(await_inplace=True)
    if integrated:
        broker = broker.with_middlewares(ContextMiddleware())

    @broker.task(task_name="job")
    async def job() -> None:
        job_body()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(broker.startup())

    def close() -> None:
        loop.run_until_complete(broker.shutdown())
        loop.close()

    return Arm(lambda: loop.run_until_complete(job.kiq()), close=close)


def arq_arm(*, integrated: bool) -> Arm:
    """arq's job path without Redis: serialize at enqueue; deserialize, hooks and job in
    an asyncio task of its own, as arq's worker runs each job."""
    import asyncio  # noqa: PLC0415 -- each row imports its queue only when it runs
    import pickle  # noqa: PLC0415 -- see above
    from typing import Any  # noqa: PLC0415 -- see above

    from arq.jobs import deserialize_job_raw, serialize_job  # noqa: PLC0415 -- see above

    import ctxlog.arq  # noqa: PLC0415 -- see above

    settings: dict[str, Any] = ctxlog.arq.worker_settings({}) if integrated else {}
    dumps = settings.get("job_serializer", pickle.dumps)
    loads = settings.get("job_deserializer", pickle.loads)
    start, end = settings.get("on_job_start"), settings.get("after_job_end")

    async def job(ctx: dict[str, Any]) -> None:  # noqa: ARG001 -- arq's job signature
        job_body()

    async def run_job(raw: bytes) -> None:
        _, args, kwargs, _, _ = deserialize_job_raw(raw, deserializer=loads)
        ctx = {"job_id": "j", "job_try": 1}
        if start is not None:
            await start(ctx)
        await job(ctx, *args, **kwargs)
        if end is not None:
            await end(ctx)

    loop = asyncio.new_event_loop()

    async def one() -> None:
        raw = serialize_job("job", (), {}, None, 0, serializer=dumps)
        await asyncio.create_task(run_job(raw))

    return Arm(lambda: loop.run_until_complete(one()), close=loop.close)


def _immediate_backend() -> str:
    """The dotted path of Django's immediate task backend (the backport's before Django 6)."""
    import django  # noqa: PLC0415 -- each row imports its queue only when it runs

    if django.VERSION >= (6,):
        return "django.tasks.backends.immediate.ImmediateBackend"
    return "django_tasks.backends.immediate.ImmediateBackend"


def __getattr__(name: str) -> object:
    # Django imports the backend the settings name by its dotted path.
    if name == "ContextImmediateBackend":
        from django.utils.module_loading import import_string  # noqa: PLC0415 -- lazily

        from ctxlog.django_tasks import ContextBackend  # noqa: PLC0415 -- see above

        base = import_string(_immediate_backend())
        return type(name, (ContextBackend, base), {})
    raise AttributeError(name)


def django_arm(*, integrated: bool) -> Arm:
    """Django's tasks on the immediate backend: the task runs inside ``enqueue``."""
    import django  # noqa: PLC0415 -- each row imports its queue only when it runs
    from django.conf import settings  # noqa: PLC0415 -- see above

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=[] if django.VERSION >= (6,) else ["django_tasks"],
            TASKS={
                "default": {"BACKEND": _immediate_backend()},
                "ctxlog": {"BACKEND": "bench_queues.ContextImmediateBackend"},
            },
            LOGGING_CONFIG=None,
        )
        django.setup()
    try:
        from django.tasks import task  # noqa: PLC0415 -- see above
    except ImportError:  # before Django 6: the backport
        from django_tasks import task  # type: ignore[no-redef,unused-ignore]  # noqa: PLC0415

    job = task(job_body, backend="ctxlog" if integrated else "default")
    return Arm(job.enqueue)


def _redis_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not on PATH (apt-get install redis-server)"
    return None


@contextlib.contextmanager
def _redis_server() -> Iterator[str]:
    """A throwaway redis-server on a Unix socket; yields the socket's path."""
    with tempfile.TemporaryDirectory(prefix="ctxlog-bench-") as here:
        socket = str(Path(here) / "redis.sock")
        command = ["redis-server", "--port", "0", "--unixsocket", socket, "--save", ""]
        server = subprocess.Popen([*command, "--dir", here], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not Path(socket).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            yield socket
        finally:
            server.terminate()
            server.wait()


_redis_sockets: list[str] = []


def rq_arm(*, integrated: bool) -> Arm:
    """RQ on a real Redis, ``is_async=False``: each job saved, then run in this process."""
    from redis import Redis  # noqa: PLC0415 -- each row imports its queue only when it runs
    from rq import Queue  # noqa: PLC0415 -- see above
    from rq.job import Job  # noqa: PLC0415 -- see above

    from ctxlog.rq import ContextJob  # noqa: PLC0415 -- see above

    redis = Redis(unix_socket_path=_redis_sockets[-1])
    queue = Queue(
        "bench-ctxlog" if integrated else "bench-plain",
        connection=redis,
        job_class=ContextJob if integrated else Job,
        is_async=False,
    )

    # By name: RQ refuses functions of __main__ (this file, run alone).
    return Arm(lambda: queue.enqueue("bench_queues.job_body", result_ttl=0), close=redis.close)


#: The rows, in the order printed; another queue is one more ``Row``.
ROWS: list[Row] = [
    Row("Dramatiq", "StubBroker, 1 worker thread", dramatiq_arm, jobs=100),
    Row("Huey", "MemoryHuey, immediate", huey_arm, jobs=300),
    Row("Taskiq", "InMemoryBroker, await_inplace", taskiq_arm, jobs=200),
    Row("arq", "its job path, no Redis", arq_arm, jobs=300),
    Row("Django", "tasks, immediate backend", django_arm, jobs=200),
    Row("RQ", "real redis-server, is_async=False", rq_arm, jobs=50, unavailable=_redis_missing),
]


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------


def _timed(arm: Arm, jobs: int, *, per_job: bool) -> Callable[[], float]:
    """A run: *jobs* jobs published from one request (or each from its own), then run."""
    ids = [f"{CONTEXT['request_id'][:-4]}{i:04d}" for i in range(jobs)]

    def run() -> float:
        started = time.perf_counter_ns()
        with ctxlog.bind(**CONTEXT):
            if per_job:
                for request_id in ids:
                    with ctxlog.bind(request_id=request_id):
                        arm.publish()
            else:
                for _ in ids:
                    arm.publish()
            arm.drain()
        return (time.perf_counter_ns() - started) / jobs

    return run


def measure(row: Row, runs: int, *, per_job: bool) -> tuple[Op, Op]:
    """Race the row's two sides; return (without, with)."""
    plain, integrated = row.arm(integrated=False), row.arm(integrated=True)
    try:
        ops = [
            Op("without", _timed(plain, row.jobs, per_job=per_job)),
            Op("with", _timed(integrated, row.jobs, per_job=per_job)),
        ]
        race(ops, runs, warm_up=True)
    finally:
        plain.close()
        integrated.close()
    return ops[0], ops[1]


@contextlib.contextmanager
def _job_logging() -> Iterator[None]:
    """The jobs' 3 lines: JSON with the context, to os.devnull, on both sides alike."""
    with open(os.devnull, "w", encoding="utf-8") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(json_formatter())
        handler.addFilter(ctxlog.ContextFilter())
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        try:
            yield
        finally:
            log.removeHandler(handler)


def main() -> None:
    """Measure every row, then print the table and whether each target is met."""
    runs = 7 if quick() else 21
    print(
        "publish + run of a job that logs 3 JSON lines, 5 keys bound; us per job, median of "
        f"{runs} runs;\nratio: median of the per-run ratios, with the integration / without "
        "(side by side, round-robin)"
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(_job_logging())
        for row in ROWS:
            why = row.unavailable()
            if why is not None:
                print(f"{row.name:<10} not measured: {why}")
                continue
            if row.arm is rq_arm and not _redis_sockets:
                _redis_sockets.append(stack.enter_context(_redis_server()))
            for per_job, how in ((False, "one request"), (True, "a request each")):
                without, with_ = measure(row, runs, per_job=per_job)
                value = ratio(with_, without)
                print(
                    f"{row.name:<9} {row.broker:<34} {how:<15} without "
                    f"{without.ns / 1000:>7.1f} us  with {with_.ns / 1000:>7.1f} us  "
                    f"{verdict(value, TARGET)}"
                )


if __name__ == "__main__":
    main()
