"""Taskiq: the publisher's context in the task, ``task_id``/``task_name`` bound in the worker.

One middleware, added to the broker the publishers and the workers share:

```python
broker = ListQueueBroker(url).with_middlewares(ContextMiddleware())
```

- ``pre_send`` (publisher): the bound context travels in one message label,
  ``ctxlog_context`` (a job published with no request id gets a fresh one);
- ``pre_execute`` (worker): the task runs in its own unit of work, fresh,
  holding the label's values plus ``task_id`` and ``task_name``; Taskiq's own
  "Executing task" and error lines carry them, and so does a sync task, which
  Taskiq runs in its thread pool in a copy of that context;
- ``post_execute``: the context the worker had before comes back.

Taskiq is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

from typing import Any, Final

try:
    from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.taskiq needs Taskiq (>= 0.11), which is not installed: "
        "pip install 'ctxlog-correlation[taskiq]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog._jobs import FIELD, RunningJobs, begin_job, envelope, options_for

__all__ = ["CONTEXT_LABEL", "ContextMiddleware"]

#: The message label the context travels in.
CONTEXT_LABEL: Final = FIELD

_OPTIONS: Final = options_for("taskiq", CONTEXT_LABEL, "label")


#: Taskiq runs each message in an asyncio task of its own, and calls
#: ``pre_execute`` and ``post_execute`` in it.
_running: Final = RunningJobs("ctxlog.taskiq.job")


class ContextMiddleware(TaskiqMiddleware):
    """Carry the context from whoever kicks a task to the worker that runs it.

    Add it to the broker, in the module both the publishers and the workers
    import: ``broker = broker.with_middlewares(ContextMiddleware())``.

    What travels is what `ctxlog.snapshot()` holds (annotated values of the
    publisher's unit of work included), minus values ctxlog computes itself
    (the OpenTelemetry ids) and the task fields of a task that kicks another
    one.  A task kicked with nothing bound under ``request_id`` gets a fresh
    id, shared by everything it kicks in turn.  A message kicked again with
    its labels (Taskiq's retry middlewares) keeps the context it had, so a
    retry keeps the original request id.  A context that cannot travel (over
    8 KiB as JSON, a control character in a value) is left out with a warning
    on the ``ctxlog.taskiq`` logger, and the task is still sent; a label a
    worker cannot read is ignored with a warning, and the task still runs.

    In the worker, each message runs in one unit of work (`ctxlog.scope`),
    fresh, with the label's values and ``task_id`` (Taskiq's task id) and
    ``task_name`` bound, from ``pre_execute`` until ``post_execute``: every
    line of the task carries them, in its awaits and in a sync task run in
    Taskiq's thread pool.  Not carried: a sync task run in a process pool
    (``taskiq worker --use-process-pool``), which Taskiq starts without any
    context, and the lines Taskiq writes before the middleware runs ("Cannot
    parse message", "task not found") or after the task (saving its result).

    *New in version 0.1.0.*
    """

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        """Put the context into *message*'s labels (kept when it has one already)."""
        if CONTEXT_LABEL not in message.labels:
            text = envelope(message.task_name, options=_OPTIONS)
            if text is not None:
                message.labels[CONTEXT_LABEL] = text
        return message

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        """Open the task's unit of work with its context and task fields bound."""
        entry = begin_job(
            message.labels.get(CONTEXT_LABEL),
            task_id=message.task_id,
            task_name=message.task_name,
            options=_OPTIONS,
        )
        _running.start(entry)
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:  # noqa: ARG002 -- Taskiq's signature
        """Close the task's unit of work: the worker's context comes back."""
        _running.finish()
