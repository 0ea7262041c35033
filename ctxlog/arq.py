"""arq: the publisher's context in the job, ``task_id``/``task_name`` bound in the worker.

arq has no message metadata and no hook on enqueue (arq #277), but every job
goes through the pool's *job serializer* when it is enqueued, in the
publisher's task, and through the worker's *job deserializer* when it is run.
That is where the context rides, with nothing else wrapped:

```python
redis = await ctxlog.arq.create_pool(RedisSettings())   # publisher: instead of arq's
WorkerSettings = ctxlog.arq.worker_settings(WorkerSettings)   # worker
```

- the serializer adds one field, ``ctxlog_context``, to the job it stores
  (a job enqueued with no request id gets a fresh one);
- the worker's deserializer takes it out again, and the worker's
  ``on_job_start`` opens the job's unit of work with it plus ``task_id`` (arq's
  job id) and ``task_name`` (the function's name); ``after_job_end`` closes it.

arq is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

import pickle
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Final, NamedTuple, TypeVar

try:
    import arq
    from arq.connections import ArqRedis, RedisSettings
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.arq needs arq (>= 0.26), which is not installed: "
        "pip install 'ctxlog-correlation[arq]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog._errors import ContextError
from ctxlog._jobs import FIELD, RunningJobs, begin_job, envelope, options_for

__all__ = ["CONTEXT_FIELD", "create_pool", "job_deserializer", "job_serializer", "worker_settings"]

#: The field of the stored job the context travels in.
CONTEXT_FIELD: Final = FIELD

_OPTIONS: Final = options_for("arq", CONTEXT_FIELD, "job field")

#: The keys of the mapping arq serializes for a job (a result has more).
_JOB_KEYS: Final = frozenset({"t", "f", "a", "k", "et"})

Serializer = Callable[[dict[str, Any]], bytes]
Deserializer = Callable[[bytes], dict[str, Any]]
Hook = Callable[[dict[Any, Any]], Awaitable[None]]
Settings = TypeVar("Settings")


class _Arrived(NamedTuple):
    text: object
    function: object


# arq runs each job in an asyncio task of its own (``Worker.run_job``), which
# deserializes the job, then awaits ``on_job_start``, the job, ``after_job_end``:
# what the deserializer found reaches the hook through the task's context.
_arrived: ContextVar[_Arrived | None] = ContextVar("ctxlog.arq.arrived", default=None)
_running: Final = RunningJobs("ctxlog.arq.job")


class job_serializer:  # noqa: N801 -- named like the arq option it fills
    """arq's ``job_serializer`` option, adding the context to every job it serializes.

    *inner* serializes the result (default `pickle.dumps`, arq's own default).
    What travels is what `ctxlog.snapshot()` holds (annotated values of the
    publisher's unit of work included), minus values ctxlog computes itself
    and the task fields of a job that enqueues another; a job enqueued with
    nothing bound under ``request_id`` gets a fresh id.  Results and anything
    else arq serializes pass through unchanged.  `create_pool` and
    `worker_settings` set it; use it directly only where the pool is made
    another way.

    *New in version 0.1.0.*
    """

    def __init__(self, inner: Serializer | None = None) -> None:
        self.inner: Serializer = pickle.dumps if inner is None else inner

    def __call__(self, data: dict[str, Any]) -> bytes:
        if isinstance(data, dict) and data.keys() == _JOB_KEYS:
            text = envelope(data["f"], options=_OPTIONS)
            if text is not None:
                data = {**data, CONTEXT_FIELD: text}
        return self.inner(data)


class job_deserializer:  # noqa: N801 -- named like the arq option it fills
    """arq's ``job_deserializer`` option for workers: takes the context out of a job.

    *inner* deserializes (default `pickle.loads`).  The job's function never
    sees the field; the worker's ``on_job_start`` hook that `worker_settings`
    adds binds its values.

    *New in version 0.1.0.*
    """

    def __init__(self, inner: Deserializer | None = None) -> None:
        self.inner: Deserializer = pickle.loads if inner is None else inner

    def __call__(self, raw: bytes) -> dict[str, Any]:
        data = self.inner(raw)
        if isinstance(data, dict) and data.keys() >= _JOB_KEYS and "s" not in data:
            data = dict(data)
            _arrived.set(_Arrived(data.pop(CONTEXT_FIELD, None), data["f"]))
        return data


async def create_pool(settings_: RedisSettings | None = None, **options: Any) -> ArqRedis:
    """arq's `create_pool`, with a `job_serializer` that carries the context.

    Takes arq's arguments; a ``job_serializer`` given is the one the context is
    added around.  Every job enqueued through the pool
    (``await redis.enqueue_job("send_mail", ...)``) carries the context bound
    where `enqueue_job` is awaited.

    *New in version 0.1.0.*
    """
    serializer = options.pop("job_serializer", None)
    if not isinstance(serializer, job_serializer):
        serializer = job_serializer(serializer)
    return await arq.create_pool(settings_, job_serializer=serializer, **options)


def worker_settings(settings: Settings) -> Settings:
    """Make arq worker settings run every job in its own unit of work with its context.

    *settings* is a ``WorkerSettings`` class (changed in place and returned,
    so it works as a class decorator) or a dict of `arq.worker.Worker`
    arguments (a new dict is returned, for ``Worker(**settings)``).  It gets:

    - ``job_serializer`` / ``job_deserializer`` wrapping the ones it has
      (default pickle): jobs the worker enqueues (a job that enqueues another
      through ``ctx["redis"]``, cron jobs) carry the context too;
    - ``on_job_start``: opens the job's unit of work (`ctxlog.scope`), fresh,
      holding the job's context plus ``task_id`` (arq's job id) and
      ``task_name`` (the function's name), before a hook already there runs;
    - ``after_job_end``: closes it, after a hook already there ran.

    Every line logged from the start of the job to its end carries them: the
    job's own lines, across its awaits, and arq's "→", "←", "!" (the
    traceback of a failed job) and "↻" lines.  A retried job (`arq.Retry`)
    is the same stored job: it keeps its request id.  Not covered: the lines
    arq writes before ``on_job_start`` (a job that expired, a function not
    found, too many retries).  Sync code the job hands to a thread keeps the
    context with `asyncio.to_thread` or `loop.run_in_executor` on a
    [`ctxlog.ThreadPoolExecutor`][ctxlog.ThreadPoolExecutor] (or
    `ctxlog.ProcessPoolExecutor`); a plain executor does not carry it.

    ```python
    @ctxlog.arq.worker_settings
    class WorkerSettings:
        functions = [send_mail]
    ```

    *New in version 0.1.0.*

    :raises ContextError: *settings* is neither a class nor a dict.
    """
    if isinstance(settings, dict):
        current: dict[str, Any] = dict(settings)
    elif isinstance(settings, type):
        current = dict(vars(settings))
    else:
        msg = (
            f"ctxlog.arq.worker_settings({settings!r}): give the WorkerSettings class "
            "or a dict of arq Worker arguments."
        )
        raise ContextError(msg)
    serializer = current.get("job_serializer")
    deserializer = current.get("job_deserializer")
    start = current.get("on_job_start")
    after = current.get("after_job_end")
    changes: dict[str, Any] = {
        "job_serializer": serializer
        if isinstance(serializer, job_serializer)
        else job_serializer(serializer),
        "job_deserializer": deserializer
        if isinstance(deserializer, job_deserializer)
        else job_deserializer(deserializer),
        "on_job_start": start if getattr(start, "_ctxlog", False) else _starting(start),
        "after_job_end": after if getattr(after, "_ctxlog", False) else _ending(after),
    }
    if isinstance(settings, dict):
        return {**settings, **changes}  # type: ignore[return-value]  # a dict for a dict
    for name, value in changes.items():
        setattr(settings, name, value)
    return settings


def _starting(hook: Hook | None) -> Hook:
    async def on_job_start(ctx: dict[Any, Any]) -> None:
        arrived = _arrived.get()
        _arrived.set(None)
        text, function = arrived if arrived is not None else (None, None)
        entry = begin_job(
            text,
            task_id=ctx.get("job_id"),
            task_name=function,
            options=_OPTIONS,
        )
        _running.start(entry)
        if hook is not None:
            await hook(ctx)

    on_job_start._ctxlog = True  # type: ignore[attr-defined]  # wrapped once only
    return on_job_start


def _ending(hook: Hook | None) -> Hook:
    async def after_job_end(ctx: dict[Any, Any]) -> None:
        try:
            if hook is not None:
                await hook(ctx)
        finally:
            _running.finish()

    after_job_end._ctxlog = True  # type: ignore[attr-defined]  # wrapped once only
    return after_job_end
