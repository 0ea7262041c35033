"""RQ: the publisher's context in the job, ``task_id``/``task_name`` bound in the worker.

One job class, [`ContextJob`][ctxlog.rq.ContextJob], given to the queues that
enqueue and to the workers that run:

```python
queue = Queue(connection=redis, job_class=ContextJob)
worker = Worker([queue], connection=redis, job_class=ContextJob)
```

- Enqueuing (``Job.create``): the bound context (minus what ctxlog computes
  itself, such as the OpenTelemetry ids) goes into ``job.meta["ctxlog_context"]``,
  as the JSON `Snapshot.to_headers()` writes.  A job enqueued with no request
  id bound gets a fresh one.  RQ retries the same job, meta included: a retry
  keeps the original ids.
- Running (``Job.perform``): one unit of work, fresh, holding only those values
  plus ``task_id`` (the job id) and ``task_name`` (the function's dotted name).
  It closes when the job returns; when the job raises it stays open while the
  worker logs the failure (so that line carries the ids too) and closes when
  the worker marks the job failed, stopped or to be retried.

RQ is imported here only: ``import ctxlog`` never loads it.
"""

from __future__ import annotations

from typing import Any, Final

try:
    from rq.job import Job as _Job
    from rq.job import JobStatus as _JobStatus
except ImportError as exc:  # pragma: no cover -- the dev extras install it; tested by a subprocess
    msg = (
        "ctxlog.rq needs RQ (>= 2.0), which is not installed: pip install 'ctxlog-correlation[rq]'"
    )
    raise ImportError(msg, name=exc.name) from exc

from ctxlog import _jobs

__all__ = ["CONTEXT_META_KEY", "ContextJob"]

CONTEXT_META_KEY: Final = _jobs.FIELD
"""The ``job.meta`` key the context travels in."""

_OPTIONS: Final = _jobs.options_for("rq", CONTEXT_META_KEY, "job meta entry")

#: The statuses that end a failed job's unit of work (a retry ends it too).
_ENDED: Final = frozenset({_JobStatus.FAILED, _JobStatus.STOPPED})


class ContextJob(_Job):
    """An RQ job that carries the context of the code that enqueued it.

    Give it to every queue that enqueues and every worker that runs:

    ```python
    from redis import Redis
    from rq import Queue, Worker

    from ctxlog.rq import ContextJob

    redis = Redis()
    queue = Queue(connection=redis, job_class=ContextJob)
    worker = Worker([queue], connection=redis, job_class=ContextJob)
    ```

    (``rq worker --job-class ctxlog.rq.ContextJob`` on the command line.)
    In the worker, every line a job logs carries the enqueuer's bound context
    (annotated values included), ``task_id`` (the job id) and ``task_name``
    (the function's dotted name), and so does the worker's line for a job
    that raised; a job enqueued with no request id gets a fresh one, shared by
    the jobs it enqueues in turn.  Each job is one unit of work, opened fresh:
    nothing from the previous job on the same worker shows through, and a
    retry keeps the original ids.

    A ``ctxlog_context`` entry a worker cannot read is ignored with a warning
    on the ``ctxlog.rq`` logger: the job still runs, with its task fields.

    What cannot carry the context: the lines the worker writes before the job
    runs (the "default: tasks.send(...)" line naming the job it dequeued) and
    after a job that returned ("Job OK").

    *New in version 0.1.0.*
    """

    _ctxlog_entry: _jobs.JobEntry | None = None

    @classmethod
    def create(cls, *args: Any, **kwargs: Any) -> _Job:
        """Create the job (as `rq.job.Job.create`) with the current context in its meta."""
        job = super().create(*args, **kwargs)
        if CONTEXT_META_KEY not in job.meta:
            text = _jobs.envelope(job.func_name, options=_OPTIONS)
            if text is not None:
                job.meta[CONTEXT_META_KEY] = text
        return job

    def perform(self) -> Any:
        """Run the job (as `rq.job.Job.perform`) in its own unit of work."""
        self._ctxlog_entry = _jobs.begin_job(
            self.meta.get(CONTEXT_META_KEY),
            task_id=self.id,
            task_name=self.func_name,
            options=_OPTIONS,
        )
        # A job that raises keeps its unit until the worker has logged the
        # failure: set_status() or retry() ends it.
        result = super().perform()
        self._ctxlog_end()
        return result

    def set_status(self, status: _JobStatus, pipeline: Any = None) -> None:
        """Set the status (as `rq.job.Job.set_status`); a failed job's unit ends here."""
        super().set_status(status, pipeline=pipeline)
        if status in _ENDED:
            self._ctxlog_end()

    def retry(self, queue: Any, pipeline: Any) -> None:
        """Requeue the job (as `rq.job.Job.retry`); the failed attempt's unit ends here."""
        super().retry(queue, pipeline)
        self._ctxlog_end()

    def _ctxlog_end(self) -> None:
        entry, self._ctxlog_entry = self._ctxlog_entry, None
        if entry is not None:
            _jobs.end_job(entry)
