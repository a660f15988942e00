"""The registry of jobs and the nursery their work runs in.

One :class:`JobManager` lives on the :class:`~qmpd.app.App`.  Jobs are
registered under their id (QEMU's rules: well-formed and unique among live
jobs) and listed newest first, as QEMU inserts new jobs at the head of its
list.  A job leaves the registry when it reaches ``null``.

The work of every job runs in the manager's own nursery, opened by
:meth:`JobManager.serve` (the daemon starts it next to the listeners; tests
start it in the test's nursery).  Jobs therefore outlive the session that
started them: a client may disconnect and another one complete the job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from ..errors import DeviceNotActive, GenericError
from ..events import EventBus
from .blockjob import BlockJob
from .job import Job
from .status import id_wellformed

log = logging.getLogger("qmpd.jobs")


class JobManager:
    """Live jobs by id, plus the nursery their tasks run in."""

    def __init__(self, events: EventBus) -> None:
        self.events = events
        self._jobs: dict[str, Job] = {}  # oldest first
        self._nursery: trio.Nursery | None = None
        #: Exceptions that escaped job tasks (bugs); see :meth:`spawn`.
        self.failures: list[Exception] = []

    # -- JobHost -------------------------------------------------------------

    def emit(self, name: str, data: dict[str, Any]) -> None:
        self.events.emit(name, data)

    def spawn(self, func: Callable[[], Awaitable[None]]) -> None:
        """Run ``func`` in the manager's nursery.  Raises RuntimeError if not serving.

        An exception escaping a job task is a bug in qmpd: it is logged and
        kept in :attr:`failures` (tests assert it stays empty) instead of
        tearing down every other job and the daemon with it.
        """
        if self._nursery is None:
            raise RuntimeError("the job manager is not running (JobManager.serve)")

        async def guarded() -> None:
            try:
                await func()
            except Exception as exc:
                log.exception("job task crashed")
                self.failures.append(exc)

        self._nursery.start_soon(guarded)

    def remove(self, job: Job) -> None:
        if self._jobs.get(job.id) is job:
            del self._jobs[job.id]

    # -- life ------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host job tasks until cancelled (which cancels every job's work)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    @property
    def serving(self) -> bool:
        return self._nursery is not None

    # -- registry --------------------------------------------------------------

    def check_new_id(self, job_id: str | None) -> str:
        """Return ``job_id`` if a new job may take it; GenericError with QEMU's text if not."""
        if job_id is None:
            raise GenericError("An explicit job ID is required")
        if not id_wellformed(job_id):
            raise GenericError(f"Invalid job ID '{job_id}'")
        if job_id in self._jobs:
            raise GenericError(f"Job ID '{job_id}' already in use")
        return job_id

    def add(self, job: Job) -> Job:
        """Register ``job`` (status ``created``, with its event).

        Raises GenericError for a bad or taken id, before anything is emitted.
        """
        self.check_new_id(job.id)
        job.attach(self)
        self._jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def find(self, job_id: str) -> Job:
        """The job ``job_id`` for ``job-*`` commands; GenericError ``Job not found``."""
        job = self._jobs.get(job_id)
        if job is None:
            raise GenericError("Job not found")
        return job

    def find_block_job(self, job_id: str) -> BlockJob:
        """The block job ``job_id`` for ``block-job-*`` commands; DeviceNotActive if none."""
        job = self._jobs.get(job_id)
        if not isinstance(job, BlockJob):
            raise DeviceNotActive(f"Block job '{job_id}' not found")
        return job

    def __iter__(self) -> Iterator[Job]:
        """Every job, newest first."""
        return reversed(list(self._jobs.values()))

    def __len__(self) -> int:
        return len(self._jobs)

    def block_jobs(self) -> Iterator[BlockJob]:
        """Every block job, newest first."""
        return (job for job in self if isinstance(job, BlockJob))


__all__ = ["JobManager"]
