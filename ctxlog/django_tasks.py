"""Django's tasks (`django.tasks`): the publisher's context in the task, task fields in the worker.

Django's task framework (Django 6, and the ``django-tasks`` backport before
it) has signals around a task's run but no place for metadata in a task or
its result.  The context rides as one keyword argument, ``ctxlog_context``,
added when the task is enqueued by a backend that mixes in
`ContextBackend`, and taken out again by the ``task_started`` signal in the
worker before the task's function is called:

```python
class Backend(ContextBackend, DatabaseBackend):
    pass
```

Name that class in ``TASKS[...]["BACKEND"]``.  In the worker, every task of
such a backend runs in one unit of work, from ``task_started`` to
``task_finished`` (sent after a failure too, after Django's own line for
it), holding the carried values plus ``task_id`` (the result's id) and
``task_name`` (the task's module path).

Django is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

from typing import Any, Final

try:
    try:
        from django.tasks import signals as _signals
    except ImportError:  # before Django 6: the django-tasks backport
        from django_tasks import signals as _signals  # type: ignore[no-redef,unused-ignore]
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.django_tasks needs Django's tasks (Django >= 6, or the django-tasks "
        "backport), which are not installed: pip install 'ctxlog-correlation[django-tasks]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog._jobs import FIELD, RunningJobs, begin_job, envelope, options_for

__all__ = ["CONTEXT_KWARG", "ContextBackend"]

#: The keyword argument the context travels in.
CONTEXT_KWARG: Final = FIELD

_OPTIONS: Final = options_for("django_tasks", CONTEXT_KWARG, "keyword argument")


#: The task running in this thread or task (a backend that runs a task inside
#: another one's, as the immediate backend does, nests them).
_running: Final = RunningJobs("ctxlog.django_tasks.job")


class ContextBackend:
    """Mix into a task backend class to carry the context with every task it enqueues.

    ```python
    from django_tasks_db import DatabaseBackend

    class Backend(ContextBackend, DatabaseBackend):
        pass
    ```

    ``enqueue`` and ``aenqueue`` add the keyword argument ``ctxlog_context``:
    what `ctxlog.snapshot()` holds where the task is enqueued (annotated
    values of the request's unit of work included), minus values ctxlog
    computes itself; a task enqueued with nothing bound under ``request_id``
    gets a fresh id, shared by the tasks it enqueues in turn.  It is stored
    with the task's arguments (a result's ``kwargs`` show it); the worker
    takes it out before calling the function, which never sees it.

    In the worker, the ``task_started`` signal opens the task's unit of work
    (`ctxlog.scope`), fresh, holding those values plus ``task_id`` and
    ``task_name``; ``task_finished`` closes it, after Django's own "Task ...
    state=FAILED" line with its traceback, which so carries the ids.  Lines a
    worker writes outside a task (polling, claiming) carry nothing.

    *New in version 0.1.0.*
    """

    def enqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """Enqueue *task* with the context added to its keyword arguments."""
        return super().enqueue(task, args, _with_context(task, kwargs))  # type: ignore[misc]

    async def aenqueue(self, task: Any, args: Any, kwargs: Any) -> Any:
        """`enqueue`, awaited."""
        return await super().aenqueue(task, args, _with_context(task, kwargs))  # type: ignore[misc]


def _with_context(task: Any, kwargs: Any) -> Any:
    if CONTEXT_KWARG in kwargs:  # enqueued by another mixin's enqueue already
        return kwargs
    text = envelope(getattr(task, "module_path", task), options=_OPTIONS)
    return kwargs if text is None else {**kwargs, CONTEXT_KWARG: text}


def _carries(sender: Any) -> bool:
    """Whether the signal comes from a backend that mixes in `ContextBackend` (its
    class, or the backend itself as django-tasks-db's worker sends)."""
    if isinstance(sender, type):
        return issubclass(sender, ContextBackend)
    return isinstance(sender, ContextBackend)


def _on_started(sender: Any, task_result: Any = None, **kwargs: Any) -> None:  # noqa: ARG001 -- Django's signature
    if task_result is None or not _carries(sender):
        return
    text = task_result.kwargs.pop(CONTEXT_KWARG, None)
    entry = begin_job(
        text,
        task_id=task_result.id,
        task_name=task_result.task.module_path,
        options=_OPTIONS,
    )
    _running.start(entry)


def _on_finished(sender: Any, task_result: Any = None, **kwargs: Any) -> None:  # noqa: ARG001 -- Django's signature
    if _carries(sender):
        _running.finish()


# Receivers run in the order they were connected.  Django's own line for a task
# starting ("Task ... state=RUNNING") is moved after ours, so that it is written
# inside the unit; ours for the end comes after Django's ("state=FAILED" with the
# traceback), connected when its signals module was imported, above.
_log_started = getattr(_signals, "log_task_started", None)
if _log_started is not None:
    _signals.task_started.disconnect(_log_started)
_signals.task_started.connect(_on_started, dispatch_uid="ctxlog.django_tasks.task_started")
if _log_started is not None:
    _signals.task_started.connect(_log_started)
_signals.task_finished.connect(_on_finished, dispatch_uid="ctxlog.django_tasks.task_finished")
