"""The registry of jobs and the nursery their work runs in.

One :class:`JobManager` lives on the :class:`~qmpd.app.App`.  Jobs are
registered under their id (QEMU's rules: well-formed and unique among live
jobs) and listed newest first, as QEMU inserts new jobs at the head of its
list.  A job leaves the registry when it reaches ``null``.

The work of every job runs in the manager's own nursery, opened by
:meth:`JobManager.serve` (the daemon starts it next to the listeners; tests
start it in the test's nursery).  Jobs therefore outlive the session that
started them: a client may disconnect and another one complete the job.

When the daemon stops, :meth:`JobManager.cancel_all` does what QEMU does
before it closes the block graph: drain (every job is paused, and the
caller waits until each has stopped at a pause point, so none has I/O in
flight), then cancel each job, newest first, and wait for it to end.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from ..errors import DeviceNotActive, GenericError
from ..events import EventBus
from .blockjob import BlockJob
from .job import Job
from .status import JobStatus, id_wellformed

log = logging.getLogger("qmpd.jobs")


class JobManager:
    """Live jobs by id, plus the nursery their tasks run in."""

    def __init__(self, events: EventBus) -> None:
        self.events = events
        self._jobs: dict[str, Job] = {}  # oldest first
        self._nursery: trio.Nursery | None = None
        #: Exceptions that escaped job tasks (bugs); see :meth:`spawn`.
        self.failures: list[Exception] = []
        #: Woken whenever a job changes status or leaves (see :meth:`_until`).
        self._changed = trio.lowlevel.ParkingLot()

    # -- JobHost -------------------------------------------------------------

    def emit(self, name: str, data: dict[str, Any]) -> None:
        self.events.emit(name, data)
        self._changed.unpark_all()

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
        self._changed.unpark_all()

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

    async def cancel_all(self) -> None:
        """Drain every job, then force-cancel each, newest first, waiting
        for it to end (QEMU's bdrv_drain_all_begin and job_cancel_sync_all
        at exit: the client sees ``paused``/``running`` or ``standby``/
        ``ready``, then the usual cancel events).  A concluded job that is
        not auto-dismissed is dismissed.  Raises nothing."""
        jobs = list(self)
        for job in jobs:
            job.pause()
        await self._until(lambda: all(_drained(job) for job in jobs))
        while (newest := next(iter(self), None)) is not None:
            newest.cancel(True)
            await self._until(functools.partial(self._ended, newest))

    def _ended(self, job: Job) -> bool:
        # Concluded but kept (no auto-dismiss): the next round dismisses it.
        return job.status is JobStatus.CONCLUDED or self.get(job.id) is not job

    async def _until(self, done: Callable[[], bool]) -> None:
        """Wait until ``done()``, checked after each job event."""
        while not done():
            await self._changed.park()

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


def _drained(job: Job) -> bool:
    """The job has no I/O in flight: stopped at a pause point, or its work is over."""
    return job.paused or job.deferred or not job.started


__all__ = ["JobManager"]
