"""Celery: the publisher's context in the task, ``task_id``/``task_name`` bound in the worker.

``ctxlog.celery.install()`` connects three Celery signals:

- ``before_task_publish``: the bound context (what [`ctxlog.snapshot`][ctxlog.snapshot]
  holds, minus what ctxlog computes itself such as the OpenTelemetry ids)
  goes into one message header, [`CONTEXT_HEADER`][ctxlog.celery.CONTEXT_HEADER], as the JSON that
  [`ctxlog.Snapshot.to_headers`][ctxlog.Snapshot.to_headers] writes;
- ``task_prerun``: the worker opens a unit of work for the task
  ([`ctxlog.scope`][ctxlog.scope]) holding only the header's values plus ``task_id``
  and ``task_name``, so nothing from an earlier task on the same process,
  thread or greenlet can show through;
- ``task_postrun`` (which Celery sends even when the task raised): the
  context the worker had before the task comes back, by the token of the
  prerun binding.  Keys are removed, never set to ``None``: a
  ``%(request_id)s`` format with a filter default keeps working.

Celery is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

try:
    from celery import signals as _signals
    from celery.app.task import Context as _TaskRequest
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.celery needs Celery (>= 5.3), which is not installed: "
        "pip install 'ctxlog-correlation[celery]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog import _jobs
from ctxlog._errors import ContextError, check_collection, check_key
from ctxlog._store import store
from ctxlog.headers import (
    BAGGAGE_HEADER,
    baggage_header,
    check_baggage_keys,
    new_request_id,
    parse_baggage,
)

__all__ = ["CONTEXT_HEADER", "install", "installed", "uninstall"]

CONTEXT_HEADER: Final = _jobs.FIELD
"""The message header the context travels in, by default."""

_log: Final = logging.getLogger("ctxlog.celery")

_HEADER_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}").fullmatch

#: Names Celery itself uses in a message's headers or a task's request: a
#: context header under one of them would be lost or would break the task.
_RESERVED_HEADERS: Final = frozenset(
    {*vars(_TaskRequest), "lang", "task", "argsrepr", "kwargsrepr", "compression", "shadow"}
)

_UID_PUBLISH: Final = "ctxlog.celery.before_task_publish"
_UID_PRERUN: Final = "ctxlog.celery.task_prerun"
_UID_POSTRUN: Final = "ctxlog.celery.task_postrun"


@dataclass(frozen=True)
class _Options:
    header: str
    parent_task_id_key: str | None
    root_task_id_key: str | None
    baggage: frozenset[str]
    job: _jobs.JobOptions


_options: _Options | None = None
_lock = threading.Lock()

#: Per running task (keyed by its request object, which Celery keeps on its
#: request stack from before ``task_prerun`` to after ``task_postrun``): the
#: task's unit of work, and the mapping it replaced.
_running: dict[int, _jobs.JobEntry] = {}


def install(
    *,
    keys: Iterable[str] | None = None,
    header: str = CONTEXT_HEADER,
    task_id_key: str | None = "task_id",
    task_name_key: str | None = "task_name",
    parent_task_id_key: str | None = "parent_task_id",
    root_task_id_key: str | None = "root_task_id",
    request_id_key: str | None = "request_id",
    generator: Callable[[], str] = new_request_id,
    baggage: Iterable[str] = (),
) -> None:
    """Carry the context from task publishers to the tasks, and bind task fields in workers.

    Call it once in the module that creates the Celery application, so that
    both the publishing processes and the worker run it.  Celery's signals are
    process-wide: every app in the process is covered.

    - *keys*: carry only these keys (default: every bound key).  Applied on
      both sides: a worker binds only these keys from a message.
    - *header*: the message header holding the context (default
      [`CONTEXT_HEADER`][ctxlog.celery.CONTEXT_HEADER], ``"ctxlog_context"``).  Publishers and
      workers
      must agree on it.
    - *task_id_key* / *task_name_key*: the keys the worker binds the task's
      id and name under, ``None`` to bind neither.
    - *parent_task_id_key* / *root_task_id_key*: the keys the worker binds
      Celery's ``parent_id`` and ``root_id`` of the task under, whenever
      Celery knows them (``None``: not bound).
    - *request_id_key* / *generator*: a task published with nothing bound
      under *request_id_key* (``"request_id"``, the middlewares' key) gets a
      fresh id from *generator* at publish time, so that all the work a beat
      schedule, a script or a worker starts shares one id along its chain;
      ``None`` turns this off.
    - *baggage*: W3C Baggage keys.  The publisher sends the values bound
      under them in a ``baggage`` message header (unless one is there
      already: OpenTelemetry's Celery instrumentation writes its own), and
      the worker binds those keys from the ``baggage`` header of a message,
      whoever published it (values from ctxlog's own header win); parsed as
      `ctxlog.headers.parse_baggage` does, so a hostile header binds nothing raw.

    What is carried: the values bound with [`ctxlog.bind`][ctxlog.bind] (and friends)
    and registered ContextVars, as [`ctxlog.snapshot`][ctxlog.snapshot] has them, but not
    the task fields of a task that publishes another one (the new task gets
    its own), nor values ctxlog computes itself (the OpenTelemetry ids of
    [`ctxlog.otel`][ctxlog.otel]: OpenTelemetry's Celery instrumentation carries the
    trace, and the worker's own span is the one to show).  A context that
    cannot travel (over 8 KiB as JSON, a control character in a value) is
    left out with a warning on the ``ctxlog.celery`` logger; the task is
    still published.  A header that a worker cannot read is ignored with a
    warning; the task still runs, with its task fields bound.

    Tasks run eagerly (``task.apply()``, ``task_always_eager``) run in the
    caller's context: there the task fields and the header's values are
    added to it, and removed after.  Calling [`install`][ctxlog.celery.install] again replaces
    the options.

    Works with Celery's message protocol 2 (the default since Celery 4).

    *New in version 0.1.0.*

    :raises ContextError: a key is empty, *header* is not a plain name (a
        letter, then letters, digits, ``_ . -``, at most 64) or is a name
        Celery uses itself, *task_id_key* equals *task_name_key*, or a
        *baggage* key is not a W3C token or is one of the task keys.
    """
    if not isinstance(header, str) or _HEADER_NAME(header) is None:
        msg = (
            f"ctxlog.celery.install(header={header!r}): give a plain name such as "
            f"{CONTEXT_HEADER!r} (a letter, then letters, digits, '_', '.', '-')."
        )
        raise ContextError(msg)
    if header in _RESERVED_HEADERS:
        msg = (
            f"ctxlog.celery.install(header={header!r}): Celery uses this name itself; "
            f"choose another, such as {CONTEXT_HEADER!r}."
        )
        raise ContextError(msg)
    check_collection(keys, "keys", "ctxlog.celery.install")
    allowed = None if keys is None else frozenset(keys)
    for key in allowed or ():
        check_key(key, "ctxlog.celery.install")
    named = {
        "task_id_key": task_id_key,
        "task_name_key": task_name_key,
        "parent_task_id_key": parent_task_id_key,
        "root_task_id_key": root_task_id_key,
        "request_id_key": request_id_key,
    }
    for option, task_key in named.items():
        if task_key is not None:
            check_key(task_key, f"ctxlog.celery.install({option}=...)")
    given = [(option, k) for option, k in named.items() if k is not None]
    for i, (option, task_key) in enumerate(given):
        for other, other_key in given[i + 1 :]:
            if task_key == other_key:
                msg = (
                    f"ctxlog.celery.install(): {option} and {other} are both "
                    f"{task_key!r}; give them different names."
                )
                raise ContextError(msg)
    if not callable(generator):
        msg = (
            f"ctxlog.celery.install(generator={generator!r}): give a function that "
            "returns a new id."
        )
        raise ContextError(msg)
    baggage_keys = frozenset(check_baggage_keys(baggage, "ctxlog.celery.install"))
    clashing = baggage_keys.intersection(k for option, k in given if option != "request_id_key")
    if clashing:
        msg = (
            f"ctxlog.celery.install(baggage=...): {sorted(clashing)} are task keys the "
            "worker binds itself; a baggage entry must not replace them."
        )
        raise ContextError(msg)
    more = frozenset(k for k in (parent_task_id_key, root_task_id_key) if k is not None)
    _load_state(
        _Options(
            header,
            parent_task_id_key,
            root_task_id_key,
            baggage_keys,
            _jobs.JobOptions(
                allowed,
                task_id_key,
                task_name_key,
                request_id_key,
                generator,
                more,
                _jobs.Where(_log, header),
            ),
        )
    )


def uninstall() -> None:
    """Disconnect what [`install`][ctxlog.celery.install] connected.  Does nothing when not
    installed.

    A task running at that moment still gets its context restored when it ends.

    *New in version 0.1.0.*
    """
    global _options  # noqa: PLW0603 -- see install()
    with _lock:
        _options = None
        _signals.before_task_publish.disconnect(_on_publish, dispatch_uid=_UID_PUBLISH)
        _signals.task_prerun.disconnect(_on_prerun, dispatch_uid=_UID_PRERUN)
        # task_postrun stays connected while a task is running, so its context is
        # restored; the receiver disconnects itself once nothing is running.
        if not _running:
            _signals.task_postrun.disconnect(_on_postrun, dispatch_uid=_UID_POSTRUN)


def installed() -> bool:
    """Return whether [`install`][ctxlog.celery.install] is in effect.

    *New in version 0.1.0.*
    """
    return _options is not None


def _save_state() -> _Options | None:
    """What `install` is in effect with (``None``: not installed), for
    `_load_state`; ctxlog's pytest plugin saves it around each test."""
    return _options


def _load_state(options: _Options | None) -> None:
    """Put back what `_save_state` returned: installed with *options*, or not."""
    global _options  # noqa: PLW0603 -- one installation per process, like Celery's signals
    if options is None:
        uninstall()
        return
    with _lock:
        _options = options
        _signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=_UID_PUBLISH)
        _signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid=_UID_PRERUN)
        _signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=_UID_POSTRUN)


# --------------------------------------------------------------------------
# publishing
# --------------------------------------------------------------------------


def _on_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """``before_task_publish``: write the context into the message headers."""
    options = _options
    if options is None or headers is None:
        return
    text = _jobs.envelope(kwargs.get("sender"), options=options.job)
    if options.baggage and BAGGAGE_HEADER not in headers:
        sent = baggage_header((key, store.value(key)) for key in sorted(options.baggage))
        if sent is not None:
            headers[BAGGAGE_HEADER] = sent
    if text is not None:
        headers[options.header] = text


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------


def _incoming(options: _Options, task: Any, task_id: Any) -> dict[str, Any]:
    """What to bind for *task*: the values from its message, then its task fields."""
    request = task.request
    values = _jobs.read_envelope(
        request.get(options.header),
        job=f"{task.name}[{task_id}]",
        options=options.job,
    )
    if options.baggage:
        found = parse_baggage(request.get(BAGGAGE_HEADER), options.baggage)
        values = {**found, **values}
    values = _jobs.job_values(values, task_id=task_id, task_name=task.name, options=options.job)
    for key, known in (
        (options.parent_task_id_key, request.get("parent_id")),
        (options.root_task_id_key, request.get("root_id")),
    ):
        if key is not None and known is not None:
            values[key] = known
    return values


def _on_prerun(
    task_id: Any = None,
    task: Any = None,
    **kwargs: Any,  # noqa: ARG001 -- Celery sends more arguments than are used here
) -> None:
    """``task_prerun``: bind the task's context, in the thread that runs it."""
    options = _options
    if options is None or task is None:
        return
    request = task.request
    values = _incoming(options, task, task_id)
    # A worker starts from nothing: whatever its thread held (another task's
    # values, had anything gone wrong) must not show through.  An eager task
    # runs inside its caller, whose context it shares.
    _running[id(request)] = _jobs.begin_values(values, fresh=not request.is_eager)


def _on_postrun(
    task: Any = None,
    state: str | None = None,
    **kwargs: Any,  # noqa: ARG001 -- see _on_prerun
) -> None:
    """``task_postrun``: give back the context the task found (also after a failure)."""
    if task is None:
        return
    entry = _running.pop(id(task.request), None)
    if entry is not None:
        _jobs.end_job(entry, failed=state == "FAILURE")
    if _options is None and not _running:
        _signals.task_postrun.disconnect(_on_postrun, dispatch_uid=_UID_POSTRUN)
