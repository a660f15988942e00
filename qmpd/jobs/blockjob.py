"""Block jobs: the jobs ``query-block-jobs`` lists and ``BLOCK_JOB_*`` reports.

A :class:`BlockJob` is a :class:`~qmpd.jobs.job.Job` that also emits QEMU's
block-job events (blockjob.c) at the engine's moments:

* ``BLOCK_JOB_READY`` right after the ``ready`` status change;
* ``BLOCK_JOB_PENDING`` (with ``id``, not ``device``) on entering pending,
  only when auto-finalize is off;
* ``BLOCK_JOB_COMPLETED`` when a started job finalizes without a forced
  cancel: success, a soft cancel, and failure (then with ``error``);
* ``BLOCK_JOB_CANCELLED`` when a started, force-cancelled job finalizes;
* ``BLOCK_JOB_ERROR`` from :meth:`BlockJob.error_action`, when the job's
  I/O fails and the ``on-*-error`` policy decides what to do.

Policy ``stop`` pauses the job as if the user had (so ``job-resume`` goes
on) and records the failure in ``io-status``; resuming clears it.  Mirror,
commit, stream and backup are block jobs; ``create`` is not.
"""

from __future__ import annotations

import enum
import errno
from typing import Any

from .job import Job


class BlockdevOnError(enum.Enum):
    """``BlockdevOnError``: what a job does when its I/O fails."""

    REPORT = "report"
    IGNORE = "ignore"
    ENOSPC = "enospc"
    STOP = "stop"
    AUTO = "auto"


class BlockErrorAction(enum.Enum):
    """``BlockErrorAction``: what was done about one I/O error."""

    IGNORE = "ignore"
    REPORT = "report"
    STOP = "stop"


class IoStatus(enum.Enum):
    """``BlockDeviceIoStatus``."""

    OK = "ok"
    FAILED = "failed"
    NOSPACE = "nospace"


def decide_action(policy: BlockdevOnError, error: int) -> BlockErrorAction:
    """QEMU's mapping of a policy and an errno to an action."""
    if policy in (BlockdevOnError.ENOSPC, BlockdevOnError.AUTO):
        return BlockErrorAction.STOP if error == errno.ENOSPC else BlockErrorAction.REPORT
    if policy is BlockdevOnError.STOP:
        return BlockErrorAction.STOP
    if policy is BlockdevOnError.IGNORE:
        return BlockErrorAction.IGNORE
    return BlockErrorAction.REPORT


class BlockJob(Job):
    """A job on block nodes; see the module docstring."""

    def __init__(
        self,
        job_id: str,
        *,
        auto_finalize: bool = True,
        auto_dismiss: bool = True,
        speed: int = 0,
    ) -> None:
        super().__init__(
            job_id, auto_finalize=auto_finalize, auto_dismiss=auto_dismiss, speed=speed
        )
        self.iostatus = IoStatus.OK

    def _progress_data(self) -> dict[str, Any]:
        return {
            "type": self.job_type.value,
            "device": self.id,
            "len": self.progress.total,
            "offset": self.progress.current,
            "speed": self.speed,
        }

    def event_ready(self) -> None:
        self._emit("BLOCK_JOB_READY", self._progress_data())

    def event_pending(self) -> None:
        self._emit("BLOCK_JOB_PENDING", {"type": self.job_type.value, "id": self.id})

    def event_completed(self) -> None:
        data = self._progress_data()
        if self.error is not None:
            data["error"] = self.error
        self._emit("BLOCK_JOB_COMPLETED", data)

    def event_cancelled(self) -> None:
        self._emit("BLOCK_JOB_CANCELLED", self._progress_data())

    def on_user_resume(self) -> None:
        # Resuming after an error stop means "try again": forget the error.
        self.iostatus = IoStatus.OK

    def error_action(self, policy: BlockdevOnError, is_read: bool, error: int) -> BlockErrorAction:
        """Apply ``policy`` to an I/O error ``error`` (an errno) of this job.

        Emits BLOCK_JOB_ERROR; on ``stop`` the job is paused as by the user
        (it stops at its next yield point) and io-status records the error.
        The caller reports (fails the job), retries or goes on according to
        the returned action.
        """
        action = decide_action(policy, error)
        self._emit(
            "BLOCK_JOB_ERROR",
            {
                "device": self.id,
                "operation": "read" if is_read else "write",
                "action": action.value,
            },
        )
        if action is BlockErrorAction.STOP:
            if not self.user_paused:
                self.pause()
                self.user_paused = True
            if self.iostatus is IoStatus.OK:
                self.iostatus = IoStatus.NOSPACE if error == errno.ENOSPC else IoStatus.FAILED
        return action

    def query_extra(self) -> dict[str, Any]:
        """Members of this job type's ``BlockJobInfo`` branch (mirror: actively-synced)."""
        return {}

    def block_info(self) -> dict[str, Any]:
        """``BlockJobInfo`` for query-block-jobs."""
        info: dict[str, Any] = {
            "type": self.job_type.value,
            "device": self.id,
            "len": self.progress.total,
            "offset": self.progress.current,
            "busy": self.busy,
            "paused": self.pause_count > 0,
            "speed": self.speed,
            "io-status": self.iostatus.value,
            "ready": self.is_ready,
            "status": self.status.value,
            "auto-finalize": self.auto_finalize,
            "auto-dismiss": self.auto_dismiss,
        }
        if self.error is not None:
            info["error"] = self.error
        info.update(self.query_extra())
        return info


__all__ = ["BlockErrorAction", "BlockJob", "BlockdevOnError", "IoStatus", "decide_action"]
