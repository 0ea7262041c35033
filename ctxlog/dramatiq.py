"""Dramatiq: the publisher's context in the actor, ``task_id``/``task_name`` bound in the worker.

One middleware, added to the broker that the publishers and the workers both
import:

```python
broker.add_middleware(ContextMiddleware())
```

- ``before_enqueue``: the bound context (minus what ctxlog computes itself,
  such as the OpenTelemetry ids) goes into the message's options, under
  ``ctxlog_context``, as the JSON `Snapshot.to_headers()` writes.  A message
  published with no request id bound gets a fresh one.  A message that already
  carries it (a retry, which Dramatiq enqueues as a copy of the message) keeps
  it: a retry runs with the original ids.
- ``before_process_message``: the worker thread opens one unit of work for the
  message holding only those values plus ``task_id`` (the message id) and
  ``task_name`` (the actor name), so nothing from an earlier message shows
  through.
- ``after_process_message`` (sent after a failure too) and
  ``after_skip_message``: the unit is closed; the thread holds what it held
  before.

Async actors (the ``AsyncIO`` middleware) run on Dramatiq's event-loop thread
in a copy of the worker thread's context, so they see the same values across
every ``await``.

Dramatiq is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

from typing import Any, Final

try:
    from dramatiq import Middleware as _Middleware
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.dramatiq needs Dramatiq (>= 2.0), which is not installed: "
        "pip install 'ctxlog-correlation[dramatiq]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog import _jobs

__all__ = ["CONTEXT_OPTION", "ContextMiddleware"]

CONTEXT_OPTION: Final = _jobs.FIELD
"""The message option the context travels in."""

_OPTIONS: Final = _jobs.options_for("dramatiq", CONTEXT_OPTION, "message option")


class ContextMiddleware(_Middleware):
    """Carry the context from the code that sends a message to the actor that runs it.

    Add it to the broker every publisher and worker uses:

    ```python
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    from ctxlog.dramatiq import ContextMiddleware

    broker = RedisBroker(url="redis://localhost:6379/0")
    broker.add_middleware(ContextMiddleware())
    dramatiq.set_broker(broker)
    ```

    In the worker, every line an actor logs carries the publisher's bound
    context (annotated values included), ``task_id`` (the message id) and
    ``task_name`` (the actor's name); a message sent with no request id gets
    a fresh one, shared by the messages it sends in turn.  Each message is
    one unit of work, opened fresh: nothing from the previous message on the
    same worker thread shows through, and a retry keeps the original ids.

    An option that a worker cannot read is ignored with a warning on the
    ``ctxlog.dramatiq`` logger: the message still runs, with its task fields.

    What cannot carry the context: the worker's "Received message" debug line
    (written before any middleware runs), and the lines other middleware
    writes after the actor (Dramatiq calls the ``after_*`` hooks in reverse
    order, so a middleware added after this one writes after the unit has
    closed; Retries' "Retrying message" line is one).  To have those carry it
    too, add this middleware before the others:
    ``RedisBroker(url=..., middleware=[ContextMiddleware(), *(m() for m in default_middleware)])``.

    *New in version 0.1.0.*
    """

    def __init__(self) -> None:
        super().__init__()
        #: The unit of work of each message being processed, by the proxy's id.
        self._running: dict[int, _jobs.JobEntry] = {}

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:  # noqa: ARG002 -- Dramatiq's hook signature
        """Write the context into the message's options (a retry keeps its own)."""
        options = message.options
        if CONTEXT_OPTION in options:
            return
        text = _jobs.envelope(message.actor_name, options=_OPTIONS)
        if text is not None:
            options[CONTEXT_OPTION] = text

    def before_process_message(self, broker: Any, message: Any) -> None:  # noqa: ARG002 -- Dramatiq's hook signature
        """Open the message's unit of work, fresh, with its context bound."""
        self._running[id(message)] = _jobs.begin_job(
            message.options.get(CONTEXT_OPTION),
            task_id=message.message_id,
            task_name=message.actor_name,
            options=_OPTIONS,
        )

    def after_process_message(
        self,
        broker: Any,  # noqa: ARG002 -- Dramatiq's hook signature
        message: Any,
        *,
        result: Any = None,  # noqa: ARG002 -- Dramatiq's hook signature
        exception: BaseException | None = None,
    ) -> None:
        """Close the message's unit of work (after a failure too)."""
        self._finish(message, failed=exception is not None)

    def after_skip_message(self, broker: Any, message: Any) -> None:  # noqa: ARG002 -- Dramatiq's hook signature
        """Close the unit of a message another middleware skipped."""
        self._finish(message)

    def _finish(self, message: Any, *, failed: bool = False) -> None:
        entry = self._running.pop(id(message), None)
        if entry is not None:
            _jobs.end_job(entry, failed=failed)
