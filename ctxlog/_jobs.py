"""The job envelope: how every task-queue integration carries the context.

A queue integration does two things, and this module does both for all of
them, so that Celery, Dramatiq, RQ, Huey and the others carry exactly the same
thing and run a job the same way:

**Publishing** (`envelope`): the text to store with
the job, wherever the queue lets it ride (a message header, message options,
job metadata, a wrapper around the arguments).  It holds the bound context, as
`ctxlog.snapshot()` has it (annotated values of the unit of work included),
minus what ctxlog computes itself (a registered provider that is not a
ContextVar, such as the OpenTelemetry ids: the worker computes its own) and
minus the task keys of a job that publishes another one (the new job gets its
own).  A job published with nothing bound under the request-id key gets a fresh
id from the generator (the middlewares' policy: `ctxlog.new_request_id` by
default), so that all the work a scheduler, a script or a worker starts shares
one id along its chain.  The text is the compact JSON that
`Snapshot.to_headers()` writes; a context that cannot travel (too large, a
control character) is left out with a warning and the job is still published.

**Running** (`run_job`, or
`begin_job` and `end_job`
for queues that only offer a hook before and a hook after the job): the
envelope is read with `Snapshot.from_headers()` (a bad one is logged as a
warning and ignored: the job still runs, never an exception into the worker),
then ONE unit of work is opened, fresh (nothing bound in the worker's thread or
task before, such as an earlier job's values, shows through), holding the
envelope's values plus ``task_id`` and ``task_name``.  It is closed afterwards,
after a failure too; closed from another context than the one that opened it
(a worker that runs its "after" hook elsewhere), the unit is ended and the
binding undone where it is still what that context holds.

```python
with run_job(text, task_id=message_id, task_name="send_mail"):
    actor(*args)
```
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from ctxlog._errors import ContextError
from ctxlog._snapshot import CONTEXT_HEADER, Snapshot
from ctxlog._store import UNIT, UNIT_KEY, Provider, UnitEntry, store
from ctxlog.headers import generate_request_id, new_request_id

__all__ = [
    "DEFAULT",
    "FIELD",
    "HERE",
    "LOG",
    "JobEntry",
    "JobOptions",
    "RunningJobs",
    "Where",
    "begin_job",
    "begin_values",
    "end_job",
    "envelope",
    "job_values",
    "options_for",
    "outgoing",
    "read_envelope",
    "run_job",
]


#: The name integrations store the envelope under, where the queue lets them
#: choose one (a message option, a metadata entry, a header).
FIELD: Final = "ctxlog_context"

#: Where the warnings go unless an integration names its own logger.
LOG: Final = logging.getLogger("ctxlog.jobs")


@dataclass(frozen=True)
class Where:
    """Where an integration keeps the envelope and reports about it: its logger,
    and the name and kind of the place ("the ctxlog_context header")."""

    log: logging.Logger = LOG
    field: str = FIELD
    kind: str = "header"


#: The default place: a ``ctxlog_context`` header, warnings on ``ctxlog.jobs``.
HERE: Final = Where()


@dataclass(frozen=True)
class JobOptions:
    """What an integration carries and binds (its validated install options)."""

    #: Carry (and bind from an envelope) only these keys; ``None``: every key.
    keys: frozenset[str] | None = None
    #: The key the job's id is bound under (``None``: not bound).
    task_id_key: str | None = "task_id"
    #: The key the job's name is bound under (``None``: not bound).
    task_name_key: str | None = "task_name"
    #: A job published without this key bound gets a fresh id (``None``: never).
    request_id_key: str | None = "request_id"
    #: Makes that fresh id.
    generator: Callable[[], str] = new_request_id
    #: Further per-job keys a worker binds itself (Celery's parent and root ids).
    more_task_keys: frozenset[str] = frozenset()
    #: The integration's logger, and where the envelope rides.
    where: Where = HERE

    @property
    def task_keys(self) -> frozenset[str]:
        """The keys that belong to one job and never travel to the next."""
        own = (self.task_id_key, self.task_name_key)
        return self.more_task_keys | {k for k in own if k is not None}


#: The options every integration uses unless it offers its own.
DEFAULT: Final = JobOptions()


def options_for(integration: str, field: str, kind: str) -> JobOptions:
    """The default options of ``ctxlog.<integration>``: warnings on its logger, the
    envelope under *field*, a *kind* of the queue's ("message option")."""
    return JobOptions(where=Where(logging.getLogger(f"ctxlog.{integration}"), field, kind))


class JobEntry(NamedTuple):
    """What `begin_job` returns, for
    `end_job`: the job's unit of work and the mapping
    it replaced."""

    unit: UnitEntry
    before: dict[str, Any]


# --------------------------------------------------------------------------
# publishing
# --------------------------------------------------------------------------


def outgoing(options: JobOptions = DEFAULT) -> dict[str, Any]:
    """The values to carry: the merged context without computed values and task keys."""
    bound = store.read()
    data: dict[str, Any] = dict(store.merged(bound))
    for source, name in store.providers:
        # A provider (not a ContextVar) computes a value for wherever it is read:
        # the worker computes its own.  A value bound under the same name travels.
        if not isinstance(source, ContextVar) and name not in bound:
            data.pop(name, None)
    for key in options.task_keys:
        data.pop(key, None)
    if options.keys is not None:
        data = {k: v for k, v in data.items() if k in options.keys}
    return data


def envelope(job: object, *, options: JobOptions = DEFAULT) -> str | None:
    """The envelope text for a job being published now; ``None`` when there is
    nothing to carry or it cannot travel (then a warning on the integration's
    logger, naming *job*).

    Never raises: a job is always published.
    """
    global _sent  # noqa: PLW0603 -- one entry, replaced whole (an atomic store)
    raw = store.read()
    unit = raw.get(UNIT_KEY)
    unit_values = None if unit is None else unit.values
    providers = store.providers
    last = _sent
    if (
        last is not None
        and last.raw is raw
        and last.unit_values is unit_values
        and last.providers is providers
        and last.options is options
    ):
        # The same context as the job published just before (a request that
        # enqueues several jobs): the same text.
        return last.text
    data = outgoing(options)
    fresh = False
    key = options.request_id_key
    if key is not None and data.get(key) is None:
        # Work no request started: the chain it begins shares one fresh id.
        try:
            data[key] = generate_request_id(options.generator)
            fresh = True
        except ContextError as exc:
            options.where.log.warning("Task %s was published without a request id: %s", job, exc)
    if not data:
        return None
    try:
        text = Snapshot(data).to_headers()[CONTEXT_HEADER]
    except ContextError as exc:
        options.where.log.warning("The context of task %s was not sent with it: %s", job, exc)
        return None
    # Kept only when the text follows from the mapping alone: not a generated
    # id (each job gets its own), not a registered ContextVar's value nor a
    # mutable value (either can change while the mapping stays).
    if (
        not fresh
        and not any(isinstance(source, ContextVar) for source, _ in providers)
        and all(type(value) in _SCALARS for value in data.values())
    ):
        _sent = _Sent(raw, unit_values, providers, options, text)
    return text


class _Sent(NamedTuple):
    """The last envelope written, and what it was written from (compared by identity)."""

    raw: dict[str, Any]
    unit_values: dict[str, Any] | None
    providers: tuple[tuple[Provider, str], ...]
    options: JobOptions
    text: str


class _Read(NamedTuple):
    """The last envelope read whose values are all plain scalars (safe to share)."""

    text: str | bytes
    options: JobOptions
    values: dict[str, Any]


_sent: _Sent | None = None
_read: _Read | None = None

_SCALARS: Final = (str, int, float, bool, type(None))


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------


def read_envelope(text: object, *, job: object, options: JobOptions = DEFAULT) -> dict[str, Any]:
    """The values an envelope carries (``{}`` for ``None``).

    A bad envelope (not text, not the JSON `Snapshot.to_headers()` writes) is
    ignored with a warning on the integration's logger naming the place ("the
    ctxlog_context header") and *job*; it never raises.
    """
    global _read  # noqa: PLW0603 -- one entry, replaced whole (an atomic store)
    if text is None:
        return {}
    last = _read
    if last is not None and last.options is options and last.text == text:
        # The jobs of one request, one after the other: parse once.
        return dict(last.values)
    values: dict[str, Any] = {}
    try:
        if not isinstance(text, (str, bytes)):
            msg = f"the value must be str or bytes, not {type(text).__name__}"
            raise ContextError(msg)
        values = dict(Snapshot.from_headers([(CONTEXT_HEADER, text)]))
    except ContextError as exc:
        where = options.where
        why = str(exc).replace(CONTEXT_HEADER, where.field)
        where.log.warning("Ignored the %s %s of task %s: %s", where.field, where.kind, job, why)
    if options.keys is not None:
        values = {k: v for k, v in values.items() if k in options.keys}
    if (
        values
        and isinstance(text, (str, bytes))
        and all(type(v) in _SCALARS for v in values.values())
    ):
        _read = _Read(text, options, dict(values))
    return values


def job_values(
    values: dict[str, Any],
    *,
    task_id: object,
    task_name: object,
    options: JobOptions = DEFAULT,
) -> dict[str, Any]:
    """*values* (from an envelope) with the job's own id and name added."""
    if options.task_id_key is not None and task_id is not None:
        values[options.task_id_key] = task_id
    if options.task_name_key is not None and task_name is not None:
        values[options.task_name_key] = task_name
    return values


def begin_values(values: Mapping[str, Any], *, fresh: bool = True) -> JobEntry:
    """Open the job's unit of work holding *values* (fresh: nothing from before)."""
    before = store.read()
    return JobEntry(store.open_unit(values, fresh=fresh), before)


def begin_job(
    text: object, *, task_id: object, task_name: object, options: JobOptions = DEFAULT
) -> JobEntry:
    """Open a job's one unit of work, fresh, with its envelope's values and its
    task fields bound; give what it returns to `end_job`.

    Never raises for a bad envelope (see `read_envelope`).
    """
    job = f"{task_name}[{task_id}]"
    values = read_envelope(text, job=job, options=options)
    return begin_values(job_values(values, task_id=task_id, task_name=task_name, options=options))


def end_job(entry: JobEntry, *, failed: bool = False) -> None:
    """Close the job's unit of work: the context the job found comes back.

    *failed*: the job raised (what waits on the unit's outcome, tail
    sampling, hears it).  Called in another context than `begin_job` was
    (a worker that runs its hooks in different places), the unit is ended, and
    the job's binding undone only where it is what this context holds.
    """
    if failed:
        store.fail(entry.unit[UNIT])
    try:
        store.close_unit(entry.unit)
    except (ValueError, RuntimeError):
        unit = entry.unit[UNIT]
        store.end(unit)
        if store.unit() is unit:
            store.detach(entry.before)


@contextlib.contextmanager
def run_job(
    text: object, *, task_id: object, task_name: object, options: JobOptions = DEFAULT
) -> Iterator[None]:
    """Run the block as the job: `begin_job` before,
    `end_job` after, also when it raises."""
    entry = begin_job(text, task_id=task_id, task_name=task_name, options=options)
    failed = False
    try:
        yield
    except Exception:
        failed = True
        raise
    finally:
        end_job(entry, failed=failed)


class _Running(NamedTuple):
    entry: JobEntry
    outer: _Running | None


class RunningJobs:
    """The jobs running in the current context, innermost last.

    For queues whose hook before a job and hook after it share nothing but
    the context they run in (an asyncio task per job, a worker thread):
    `start` in the first, `finish` in the second.  A job run inside another
    one's hooks (a broker that runs a kicked job in place) nests.
    """

    def __init__(self, name: str) -> None:
        self._var: ContextVar[_Running | None] = ContextVar(name, default=None)

    def start(self, entry: JobEntry) -> None:
        """Remember *entry* (from `begin_job`) as the innermost running job."""
        self._var.set(_Running(entry, self._var.get()))

    def finish(self) -> None:
        """`end_job` the innermost running job, if any."""
        running = self._var.get()
        if running is not None:
            end_job(running.entry)
            self._var.set(running.outer)
