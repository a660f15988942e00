"""The job base class: life cycle, pausing, cancelling, finalization.

Theory of operation
-------------------
A job's work is the coroutine :meth:`Job.run`, written by a subclass.  It
runs as a task in the :class:`~qmpd.jobs.manager.JobManager`'s nursery, so
it outlives the session whose command started it.  Everything else is
synchronous and happens inside command handlers, which is what makes the
events a command causes come before its reply, as in QEMU.

Status changes go through :meth:`Job._transition` only: it checks QEMU's
transition table (a forbidden move raises :class:`IllegalTransition`, a bug)
and emits ``JOB_STATUS_CHANGE`` for every real change.  The life cycle is
QEMU's (job.c)::

    created -> running -> [ready <-> standby] -> waiting -> pending
            -> concluded -> null           (success)
    any of those -> aborting -> concluded -> null   (failure or cancel)

with ``paused`` (from running) and ``standby`` (from ready) while paused.

The work yields at *yield points*: :meth:`sleep`, :meth:`yield_`,
:meth:`throttle` and :meth:`pause_point`.  There the job is not busy, and a
command that pauses, resumes or cancels it acts at once: QEMU re-enters the
job's coroutine synchronously, so a pause of an idle job shows its
``paused``/``standby`` event before the reply.  We reproduce that by making
the status change on the job's behalf (:meth:`_enter`); the task, when it
next runs, finds itself paused and waits.  A job that is busy (awaiting its
own I/O) pauses at its next yield point instead.  Subclasses must therefore
only yield through these methods where stopping is safe (no I/O in flight).

When :meth:`run` returns (or raises :class:`JobFailed`) the job is
*completed* and finalization follows QEMU's order: ``prepare`` (may still
fail the job), then ``commit`` or ``abort``, then ``clean``, then the
completion event, ``concluded``, and ``null`` when auto-dismissed.  With
``auto-finalize`` off the job stops in ``pending`` until ``job-finalize``.
There are no multi-job transactions (qmpd has no ``transaction`` command),
so each job is its own transaction, which QEMU also does for lone jobs.

A cancel is *forced* unless the job's :meth:`on_cancel` hook allows a soft
cancel (mirror when ready: finish the copy without pivoting).  A forced
cancel stops the work at the next yield point, reports "Operation canceled"
as the job's error and, for block jobs, ``BLOCK_JOB_CANCELLED``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import trio

from ..errors import GenericError, QMPDError
from .ratelimit import RateLimiter
from .status import (
    COMPLETED_STATUSES,
    READY_STATUSES,
    IllegalTransition,
    JobStatus,
    JobType,
    JobVerb,
    check_verb,
    transition_allowed,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger("qmpd.jobs")

#: The error text of a force-cancelled job: strerror(ECANCELED), as QEMU reports it.
CANCELED_MESSAGE = "Operation canceled"


class JobFailed(QMPDError):
    """Raised by a job's ``run()`` or ``prepare()``: the job fails with ``message``.

    The message becomes ``error`` in ``query-jobs`` and in
    ``BLOCK_JOB_COMPLETED``; it is never a command's error reply.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class JobHost(Protocol):
    """What a job needs from its manager."""

    def emit(self, name: str, data: dict[str, Any]) -> None: ...

    def spawn(self, func: Callable[[], Awaitable[None]]) -> None: ...

    def remove(self, job: Job) -> None: ...


class Progress:
    """``current-progress`` / ``total-progress``; current only moves forward."""

    __slots__ = ("current", "total")

    def __init__(self) -> None:
        self.current = 0
        self.total = 0

    def update(self, done: int) -> None:
        """``done`` more units of work are finished.  Raises ValueError if negative."""
        if done < 0:
            raise ValueError("progress only moves forward")
        self.current += done

    def set_remaining(self, remaining: int) -> None:
        """The work left is ``remaining`` units (QEMU re-estimates it as it goes)."""
        self.total = self.current + max(remaining, 0)

    def increase_remaining(self, delta: int) -> None:
        self.total += delta


class Job:
    """A long-running operation with QEMU's job life cycle; see the module docstring.

    Subclasses set ``job_type`` and implement :meth:`run`; they may override
    the hooks :meth:`complete`, :meth:`on_cancel`, :meth:`prepare`,
    :meth:`commit`, :meth:`abort`, :meth:`clean`, :meth:`change` and the
    ``event_*`` methods.
    """

    job_type: ClassVar[JobType]

    def __init__(
        self,
        job_id: str,
        *,
        auto_finalize: bool = True,
        auto_dismiss: bool = True,
        speed: int = 0,
    ) -> None:
        self.id = job_id
        self.status = JobStatus.UNDEFINED
        self.progress = Progress()
        self.auto_finalize = auto_finalize
        self.auto_dismiss = auto_dismiss
        self.limiter = RateLimiter(speed)
        #: The failure message; set means the job failed (QEMU's ``ret != 0``).
        self.error: str | None = None
        #: The work is running (not parked at a yield point).
        self.busy = False
        #: Parked at a pause point, in status paused or standby.
        self.paused = True
        #: Pause requests: the user's (at most one) plus internal ones.  A job
        #: is created with one, which start() takes away.
        self.pause_count = 1
        self.user_paused = False
        #: Any cancel was requested (QEMU's job_cancel_requested).
        self.cancel_requested = False
        #: The cancel is forced (QEMU's job_is_cancelled).
        self.force_cancel = False
        self.started = False
        #: run() has returned; what is left is finalization.
        self.deferred = False
        self._host: JobHost | None = None
        self._wakeup: trio.Event | None = None
        self._timer_pending = False
        self._status_before_pause = JobStatus.RUNNING
        self._txn_aborting = False
        self._first_yield = trio.Event()

    # -- state -------------------------------------------------------------

    @property
    def type(self) -> JobType:
        return self.job_type

    @property
    def speed(self) -> int:
        return self.limiter.speed

    @property
    def is_cancelled(self) -> bool:
        """A forced cancel was requested: stop at the next yield point."""
        return self.force_cancel

    @property
    def should_pause(self) -> bool:
        return self.pause_count > 0

    @property
    def is_ready(self) -> bool:
        return self.status in READY_STATUSES

    @property
    def is_completed(self) -> bool:
        return self.status in COMPLETED_STATUSES

    def _transition(self, new: JobStatus) -> None:
        """The one place a job's status changes; emits JOB_STATUS_CHANGE.

        Raises IllegalTransition (a bug) for a move QEMU's table forbids.
        """
        old = self.status
        if not transition_allowed(old, new):
            raise IllegalTransition(self.id, old, new)
        self.status = new
        if new is not old:
            self._emit("JOB_STATUS_CHANGE", {"id": self.id, "status": new.value})

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        if self._host is not None:
            self._host.emit(name, data)

    def attach(self, host: JobHost) -> None:
        """Called by the manager once the id is accepted: the job now exists."""
        if self._host is not None:
            raise RuntimeError(f"job {self.id!r} is already registered")
        self._host = host
        self._transition(JobStatus.CREATED)

    def info(self) -> dict[str, Any]:
        """``JobInfo`` for query-jobs."""
        info: dict[str, Any] = {
            "id": self.id,
            "type": self.job_type.value,
            "status": self.status.value,
            "current-progress": self.progress.current,
            "total-progress": self.progress.total,
        }
        if self.error is not None:
            info["error"] = self.error
        return info

    # -- the work: subclass API ---------------------------------------------

    async def run(self) -> None:
        """The job's work.  Return when done (or when cancelled); raise
        JobFailed to fail.  Yield only through sleep/yield_/throttle/pause_point."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the work (QEMU's job_start): ``running``, then the task.

        Raises RuntimeError if the job is not registered or already started.
        """
        if self._host is None or self.status is not JobStatus.CREATED or self.started:
            raise RuntimeError(f"job {self.id!r} cannot be started now")
        self.started = True
        self.pause_count -= 1
        self.busy = True
        self.paused = False
        self._transition(JobStatus.RUNNING)
        # QEMU enters the new coroutine at once and its first step is a
        # pause point: a job paused while created stops there, visibly.
        if self.should_pause and not self.is_cancelled:
            self._pause_now()
        self._host.spawn(self._main)

    async def until_first_yield(self) -> None:
        """Wait until the work first parks at a yield point or ends.

        An async command handler that awaits this right after :meth:`start`
        gets the events of the job's first steps before its reply, as QEMU
        does (e.g. ``ready`` of a mirror with nothing to copy).
        """
        await self._first_yield.wait()

    async def sleep(self, seconds: float) -> None:
        """Yield for ``seconds`` (QEMU's job_sleep_ns); a pause point too.

        Returns early when the job is kicked, at once if force-cancelled.
        """
        if self.is_cancelled:
            await trio.lowlevel.checkpoint()
            return
        if not self.should_pause:
            await self._park(trio.current_time() + max(seconds, 0.0))
        await self.pause_point()

    async def yield_(self) -> None:
        """Yield until kicked (:meth:`kick`), e.g. to wait for more work."""
        if self.is_cancelled:
            await trio.lowlevel.checkpoint()
            return
        if not self.should_pause:
            await self._park(math.inf)
        await self.pause_point()

    async def pause_point(self) -> None:
        """Stop here while pause requests are outstanding (unless force-cancelled)."""
        if not self.paused:
            if not self.should_pause or self.is_cancelled:
                await trio.lowlevel.checkpoint()
                return
            self._pause_now()
        while self.paused:
            await self._park(math.inf)

    async def throttle(self) -> None:
        """Wait as long as the speed limit asks (QEMU's block_job_ratelimit_sleep).

        Always a pause point, even without a limit.
        """
        while True:
            delay = self.limiter.delay(trio.current_time())
            await self.sleep(delay)
            if delay == 0.0 or self.is_cancelled:
                return

    def account(self, nbytes: int) -> None:
        """Count ``nbytes`` against the speed limit."""
        self.limiter.account(nbytes, trio.current_time())

    def transition_to_ready(self) -> None:
        """The work is in sync and waits for completion: ``ready`` and its event."""
        self._transition(JobStatus.READY)
        self.event_ready()

    def kick(self) -> None:
        """Wake the work from a yield point (QEMU's job_enter)."""
        self._enter()

    def pause(self) -> None:
        """An internal pause request (QEMU's job_pause); undo with :meth:`resume`."""
        self.pause_count += 1
        if not self.paused:
            self._enter()

    def resume(self) -> None:
        """Drop one pause request; the last one lets the job go on."""
        if self.pause_count <= 0:
            raise RuntimeError(f"job {self.id!r} resumed more often than paused")
        self.pause_count -= 1
        if self.pause_count == 0:
            # A job sleeping on a timer wakes on its own (QEMU: kick only
            # if no timer is pending).
            self._enter(require_timer=False)

    # -- hooks ---------------------------------------------------------------

    def complete(self) -> None:
        """``job-complete``: ask a ready job to finish.  The default refuses,
        as QEMU does for a driver without a complete callback."""
        raise GenericError(f"The active block job '{self.id}' cannot be completed")

    def on_cancel(self, force: bool) -> bool:
        """A cancel was requested; return whether it is forced.  Jobs without
        a soft mode are always force-cancelled (QEMU: no .cancel callback)."""
        return True

    def on_user_resume(self) -> None:
        """The user's pause is being dropped (resume or cancel)."""

    def change(self, options: Mapping[str, Any]) -> None:
        """``block-job-change`` with the type-specific ``options``."""
        raise GenericError("Job type does not support change")

    def prepare(self) -> None:
        """First finalization step of a successful job; may raise JobFailed."""

    def commit(self) -> None:
        """Finalization of a job that succeeded (after prepare)."""

    def abort(self) -> None:
        """Finalization of a job that failed or was force-cancelled."""

    def clean(self) -> None:
        """Last finalization step, whatever the outcome."""

    def event_ready(self) -> None:
        """Extra event(s) on entering ready (block jobs: BLOCK_JOB_READY)."""

    def event_pending(self) -> None:
        """Extra event on entering pending when auto-finalize is off."""

    def wait_for_finalize(self) -> None:
        """The job now waits in pending for ``job-finalize`` (or a cancel),
        for as long as the user takes."""

    def event_completed(self) -> None:
        """Extra event when a started job finalizes without a forced cancel."""

    def event_cancelled(self) -> None:
        """Extra event when a started, force-cancelled job finalizes."""

    # -- verbs (QMP commands) --------------------------------------------------

    def user_pause(self) -> None:
        """``job-pause``.  Raises GenericError with QEMU's texts."""
        check_verb(self.id, self.status, JobVerb.PAUSE)
        if self.user_paused:
            raise GenericError("Job is already paused")
        self.user_paused = True
        self.pause()

    def user_resume(self) -> None:
        """``job-resume``; QEMU checks "was it paused" before the verb table."""
        if not self.user_paused or self.pause_count <= 0:
            raise GenericError("Can't resume a job that was not paused")
        check_verb(self.id, self.status, JobVerb.RESUME)
        self.on_user_resume()
        self.user_paused = False
        self.resume()

    def user_cancel(self, force: bool) -> None:
        """``job-cancel`` (force) / ``block-job-cancel``."""
        check_verb(self.id, self.status, JobVerb.CANCEL)
        self.cancel(force)

    def user_complete(self) -> None:
        check_verb(self.id, self.status, JobVerb.COMPLETE)
        if self.cancel_requested:
            raise GenericError(f"The active block job '{self.id}' cannot be completed")
        self.complete()

    def user_finalize(self) -> None:
        check_verb(self.id, self.status, JobVerb.FINALIZE)
        self._do_finalize()

    def user_dismiss(self) -> None:
        check_verb(self.id, self.status, JobVerb.DISMISS)
        self._dismiss()

    def user_set_speed(self, speed: int) -> None:
        """``block-job-set-speed``: verb check first, then the value."""
        check_verb(self.id, self.status, JobVerb.SET_SPEED)
        if speed < 0:
            raise GenericError("Parameter 'speed' expects a non-negative value")
        old = self.limiter.speed
        self.limiter.set_speed(speed)
        if speed and speed <= old:
            return
        # Faster (or unlimited) now: cut a rate-limit sleep short.
        self._enter(require_timer=True)

    def user_change(self, options: Mapping[str, Any]) -> None:
        check_verb(self.id, self.status, JobVerb.CHANGE)
        self.change(options)

    def cancel(self, force: bool) -> None:
        """Cancel without the verb check (QEMU's job_cancel)."""
        if self.status is JobStatus.CONCLUDED:
            self._dismiss()
            return
        self._cancel_async(force)
        if not self.started:
            self._completed()
        elif self.deferred:
            # Finished work: only a forced cancel still changes the outcome.
            if self.is_cancelled:
                self._txn_abort()
        else:
            self._enter()

    def early_fail(self) -> None:
        """Drop a created job whose set-up failed: ``null`` at once."""
        if self.status is not JobStatus.CREATED:
            raise RuntimeError(f"job {self.id!r} is past its set-up")
        self._dismiss()

    # -- internals -----------------------------------------------------------

    def _cancel_async(self, force: bool) -> None:
        force = self.on_cancel(force)
        if self.user_paused:
            self.on_user_resume()
            self.user_paused = False
            self.pause_count -= 1
        # A soft cancel of work that is already over is ignored.
        if force or not self.deferred:
            self.cancel_requested = True
            self.force_cancel |= force

    def _enter(self, *, require_timer: bool | None = None) -> None:
        """Wake the parked work, doing at once what it would do first.

        ``require_timer``: True to wake only a rate-limit sleep, False only a
        job not sleeping on a timer, None either way.
        """
        if not self.started or self.deferred or self.busy:
            return
        if require_timer is not None and require_timer != self._timer_pending:
            return
        stop = self.should_pause and not self.is_cancelled
        if self.paused:
            if stop:
                return
            self._unpause()
        elif stop:
            # It would return from its yield and stop at the pause point.
            self._pause_now()
        else:
            self.busy = True
        # Whatever the work slept on is over from this moment, even though
        # its task only runs later: a timer sleep counts as ended now (QEMU's
        # job_enter deletes the sleep timer), so a resume arriving before
        # the task runs sees a job with no timer and wakes it.
        self._timer_pending = False
        if self._wakeup is not None:
            self._wakeup.set()

    def _pause_now(self) -> None:
        self._status_before_pause = self.status
        paused = JobStatus.STANDBY if self.status is JobStatus.READY else JobStatus.PAUSED
        self._transition(paused)
        self.paused = True
        self.busy = False

    def _unpause(self) -> None:
        self.paused = False
        self.busy = True
        self._transition(self._status_before_pause)

    async def _park(self, deadline: float) -> None:
        self.busy = False
        self._timer_pending = deadline != math.inf
        self._wakeup = wakeup = trio.Event()
        self._first_yield.set()
        with trio.move_on_at(deadline):
            await wakeup.wait()
        self._wakeup = None
        self._timer_pending = False
        self.busy = True

    async def _main(self) -> None:
        try:
            await self.pause_point()
            await self.run()
        except JobFailed as exc:
            self.error = exc.message
        except Exception as exc:
            # A bug in the job's work must cost this job only.
            log.exception("job %s failed unexpectedly", self.id)
            self.error = f"internal error in qmpd: {exc}"
        finally:
            self._first_yield.set()
        self.deferred = True
        self.busy = False
        self._completed()

    def _hook(self, name: str, func: Callable[[], None]) -> None:
        try:
            func()
        except Exception:
            log.exception("job %s: %s hook failed", self.id, name)

    def _update_rc(self) -> None:
        if self.error is None and self.is_cancelled:
            self.error = CANCELED_MESSAGE
        if self.error is not None:
            self._transition(JobStatus.ABORTING)

    def _completed(self) -> None:
        self._update_rc()
        if self.error is not None:
            self._txn_abort()
        else:
            self._transition(JobStatus.WAITING)
            # A lone job is its whole transaction: nobody else to wait for.
            self._transition(JobStatus.PENDING)
            if not self.auto_finalize:
                self.event_pending()
                self.wait_for_finalize()
                return
            self._do_finalize()

    def _do_finalize(self) -> None:
        if self.error is None:
            try:
                self.prepare()
            except JobFailed as exc:
                self.error = exc.message
            except Exception as exc:
                log.exception("job %s: prepare failed unexpectedly", self.id)
                self.error = f"internal error in qmpd: {exc}"
            self._update_rc()
        if self.error is not None:
            self._txn_abort()
        else:
            self._finalize_single()

    def _txn_abort(self) -> None:
        if self._txn_aborting:
            return
        self._txn_aborting = True
        self._finalize_single()

    def _finalize_single(self) -> None:
        self._update_rc()
        if self.error is None:
            self._hook("commit", self.commit)
        else:
            self._hook("abort", self.abort)
        self._hook("clean", self.clean)
        # A job that never started reports nothing but its status changes.
        if self.started:
            if self.is_cancelled:
                self.event_cancelled()
            else:
                self.event_completed()
        self._transition(JobStatus.CONCLUDED)
        if self.auto_dismiss or not self.started:
            self._dismiss()

    def _dismiss(self) -> None:
        self.busy = False
        self.paused = False
        self.deferred = True
        self._transition(JobStatus.NULL)
        if self._host is not None:
            self._host.remove(self)


__all__ = ["CANCELED_MESSAGE", "Job", "JobFailed", "JobHost", "Progress"]
