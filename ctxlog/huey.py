"""Huey: the publisher's context in the task, ``task_id``/``task_name`` bound in the consumer.

Huey's messages have no room for metadata, so the context rides with the
task's keyword arguments, under ``ctxlog_context``, and is taken out again
before the task function is called: the function never sees it.  One line
on the ``Huey`` instance that both the publishers and the consumer import:

```python
ctxlog.huey.install(huey)
```

- ``enqueued`` and ``scheduled`` signals (in the publisher, and in the
  consumer for the tasks a task starts): the bound context (minus what ctxlog
  computes itself, such as the OpenTelemetry ids) is added as the JSON
  `Snapshot.to_headers()` writes, to the task and to the tasks of its pipeline
  (``then()``/``error()``), which share it.  A task published with no request
  id bound gets a fresh one.  A task that already carries it (a retry, a
  pipeline step) keeps it.
- ``executing`` signal: the consumer's worker opens one unit of work, fresh,
  holding only those values plus ``task_id`` (the task id) and ``task_name``
  (the task's name), so nothing from an earlier task shows through.
- a post-execute hook (run after a success and after a failure) and the
  ``interrupted``/``canceled`` signals: the unit is closed.

Huey is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

from typing import Any, Final

try:
    from huey import signals as _signals
    from huey.api import Huey as _Huey
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.huey needs Huey (>= 2.5), which is not installed: "
        "pip install 'ctxlog-correlation[huey]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog import _jobs

__all__ = ["CONTEXT_KWARG", "install", "installed", "uninstall"]

CONTEXT_KWARG: Final = _jobs.FIELD
"""The keyword argument the context travels in (removed before the task runs)."""

_OPTIONS: Final = _jobs.options_for("huey", CONTEXT_KWARG, "keyword argument")

#: The name of ctxlog's post-execute hook on a Huey instance.
_HOOK: Final = "ctxlog"

#: Where a task object keeps its envelope once taken out of its kwargs (for a
#: retry, which Huey requeues as the same object) and its open unit of work.
_ENVELOPE: Final = "_ctxlog_envelope"
_ENTRY: Final = "_ctxlog_entry"

_PUBLISH: Final = (_signals.SIGNAL_ENQUEUED, _signals.SIGNAL_SCHEDULED)
_ABORT: Final = (_signals.SIGNAL_INTERRUPTED, _signals.SIGNAL_CANCELED)


def install(huey: _Huey) -> None:
    """Carry the context from the code that enqueues a task to the consumer that runs it.

    Call it once on the ``Huey`` instance, in the module that creates it, so
    that the publishers and the consumer both run it:

    ```python
    from huey import RedisHuey

    import ctxlog.huey

    huey = RedisHuey("app", url="redis://localhost:6379/0")
    ctxlog.huey.install(huey)
    ```

    In the consumer, every line a task logs carries the publisher's bound
    context (annotated values included), ``task_id`` (the task id) and
    ``task_name`` (the task's name), and so does the consumer's line for a
    task that raised; a task enqueued with no request id gets a fresh one,
    shared by its pipeline and by the tasks it enqueues.  Each task is one
    unit of work, opened fresh: nothing from the previous task on the same
    worker shows through, and a retry keeps the original ids.  With
    ``immediate=True`` the task runs in the caller's thread the same way, and
    the caller's context is back afterwards.

    A consumer without `install` would pass the ``ctxlog_context`` keyword on
    to the task function: install it on both sides.  A value a consumer
    cannot read is ignored with a warning on the ``ctxlog.huey`` logger: the
    task still runs, with its task fields.

    What cannot carry the context: the consumer's "Executing ..." line,
    written before any signal or hook runs, and what runs after the task's
    post-execute hooks ("... executed in ...", the ``complete`` and
    ``retrying`` signals).

    Calling it again on the same instance changes nothing.

    *New in version 0.1.0.*
    """
    if installed(huey):
        return
    huey.signal(*_PUBLISH)(_on_publish)
    huey.signal(_signals.SIGNAL_EXECUTING)(_on_executing)
    huey.signal(*_ABORT)(_on_abort)
    huey.post_execute(name=_HOOK)(_on_post_execute)


def uninstall(huey: _Huey) -> None:
    """Undo [`install`][ctxlog.huey.install] on *huey*.  Does nothing when not installed.

    *New in version 0.1.0.*
    """
    if not installed(huey):
        return
    huey.disconnect_signal(_on_publish, *_PUBLISH)
    huey.disconnect_signal(_on_executing, _signals.SIGNAL_EXECUTING)
    huey.disconnect_signal(_on_abort, *_ABORT)
    huey.unregister_post_execute(_HOOK)


def installed(huey: _Huey) -> bool:
    """Return whether [`install`][ctxlog.huey.install] is in effect on *huey*.

    *New in version 0.1.0.*
    """
    # Huey keeps its hooks there, by name, and offers no reader.
    return _HOOK in huey._post_execute


def _on_publish(signal: str, task: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ARG001 -- Huey's signal arguments
    """``enqueued``/``scheduled``: put the envelope in the task's kwargs (and its pipeline's)."""
    text = getattr(task, _ENVELOPE, None) or task.kwargs.get(CONTEXT_KWARG)
    if text is None:
        text = _jobs.envelope(task.name, options=_OPTIONS)
        if text is None:
            return
    step = task
    while step is not None:
        _carry(step, text)
        if step.on_error is not None:
            _carry(step.on_error, text)
        step = step.on_complete


def _carry(task: Any, text: str) -> None:
    if CONTEXT_KWARG not in task.kwargs:
        task.kwargs = {**task.kwargs, CONTEXT_KWARG: getattr(task, _ENVELOPE, None) or text}


def _on_executing(signal: str, task: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ARG001 -- Huey's signal arguments
    """``executing``: take the envelope out of the kwargs; open the task's unit of work."""
    if CONTEXT_KWARG in task.kwargs:
        text = task.kwargs[CONTEXT_KWARG]
        task.kwargs = {k: v for k, v in task.kwargs.items() if k != CONTEXT_KWARG}
        setattr(task, _ENVELOPE, text)
    else:
        text = getattr(task, _ENVELOPE, None)
    _end(task)  # a unit left open by an earlier attempt that never finished
    setattr(
        task,
        _ENTRY,
        _jobs.begin_job(
            text,
            task_id=task.id,
            task_name=task.name,
            options=_OPTIONS,
        ),
    )


def _on_post_execute(task: Any, task_value: Any, exception: BaseException | None) -> None:  # noqa: ARG001 -- Huey's hook arguments
    """After the task (a success or a failure): close its unit of work."""
    _end(task)


def _on_abort(signal: str, task: Any, *args: Any, **kwargs: Any) -> None:  # noqa: ARG001 -- Huey's signal arguments
    """``interrupted``/``canceled``: Huey skips the post-execute hooks; close the unit here."""
    _end(task)


def _end(task: Any) -> None:
    entry = getattr(task, _ENTRY, None)
    if entry is not None:
        setattr(task, _ENTRY, None)
        _jobs.end_job(entry)
