"""I/O error policies of block jobs: BLOCK_JOB_ERROR, stop/resume, io-status."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from qmpd.errors import GenericError
from qmpd.jobs import (
    BlockdevOnError,
    BlockErrorAction,
    JobFailed,
    JobManager,
    decide_action,
)
from tests.jobs.testjobs import CountingJob
from tests.support.transcript import Transcript


@pytest.mark.parametrize(
    ("policy", "err", "action"),
    [
        (BlockdevOnError.REPORT, errno.EIO, BlockErrorAction.REPORT),
        (BlockdevOnError.REPORT, errno.ENOSPC, BlockErrorAction.REPORT),
        (BlockdevOnError.IGNORE, errno.ENOSPC, BlockErrorAction.IGNORE),
        (BlockdevOnError.STOP, errno.EIO, BlockErrorAction.STOP),
        (BlockdevOnError.ENOSPC, errno.ENOSPC, BlockErrorAction.STOP),
        (BlockdevOnError.ENOSPC, errno.EIO, BlockErrorAction.REPORT),
        (BlockdevOnError.AUTO, errno.ENOSPC, BlockErrorAction.STOP),
        (BlockdevOnError.AUTO, errno.EIO, BlockErrorAction.REPORT),
    ],
)
def test_policy_table(policy: BlockdevOnError, err: int, action: BlockErrorAction) -> None:
    assert decide_action(policy, err) is action


class FlakyJob(CountingJob):
    """Chunk 1 fails once with ``err``; the policy decides what happens."""

    def __init__(self, job_id: str, policy: BlockdevOnError, err: int, **kw: Any) -> None:
        super().__init__(job_id, **kw)
        self.policy = policy
        self.err = err

    async def run(self) -> None:
        self.progress.set_remaining(self.chunks * self.chunk)
        failed = False
        index = 0
        while index < self.chunks:
            await self.throttle()
            if self.is_cancelled:
                return
            if index == 1 and not failed:
                failed = True
                action = self.error_action(self.policy, is_read=False, error=self.err)
                if action is BlockErrorAction.REPORT:
                    raise JobFailed(os.strerror(self.err))
                continue  # stop: paused at the next yield; ignore: retry
            self.progress.update(self.chunk)
            index += 1


async def test_stop_pauses_until_resumed(client: Transcript, jobs: JobManager) -> None:
    job = FlakyJob("j1", BlockdevOnError.ENOSPC, errno.ENOSPC)
    jobs.add(job)
    job.start()
    await client.until("JSC paused")
    assert client.take() == ["JSC created", "JSC running", "BLOCK_JOB_ERROR", "JSC paused"]
    assert client.event("BLOCK_JOB_ERROR") == {
        "device": "j1", "operation": "write", "action": "stop",
    }  # fmt: skip
    [info] = await client.cmd("query-block-jobs")
    assert (info["io-status"], info["paused"], info["status"]) == ("nospace", True, "paused")
    # Stopped as if by the user: a second pause is refused.
    with pytest.raises(GenericError, match="already paused"):
        job.user_pause()
    client.take()
    assert await client.cmd("job-resume", id="j1") == {}
    assert job.iostatus.value == "ok"
    await client.until("JSC null")
    assert client.take() == [
        "JSC running", "return", "JSC waiting", "JSC pending",
        "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null",
    ]  # fmt: skip


async def test_report_fails_the_job(client: Transcript, jobs: JobManager) -> None:
    jobs.add(FlakyJob("j1", BlockdevOnError.ENOSPC, errno.EIO)).start()
    await client.until("JSC null")
    assert client.take() == [
        "JSC created", "JSC running", "BLOCK_JOB_ERROR", "JSC aborting",
        "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null",
    ]  # fmt: skip
    assert client.event("BLOCK_JOB_ERROR")["action"] == "report"
    assert client.event("BLOCK_JOB_COMPLETED")["error"] == "Input/output error"


async def test_ignore_goes_on(client: Transcript, jobs: JobManager) -> None:
    jobs.add(FlakyJob("j1", BlockdevOnError.IGNORE, errno.EIO)).start()
    await client.until("JSC null")
    assert client.take() == [
        "JSC created", "JSC running", "BLOCK_JOB_ERROR", "JSC waiting", "JSC pending",
        "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null",
    ]  # fmt: skip


async def test_ids_are_checked_before_anything_is_emitted(
    client: Transcript, jobs: JobManager
) -> None:
    jobs.add(CountingJob("j1", reach_ready=True)).start()
    with pytest.raises(GenericError, match=r"^Job ID 'j1' already in use$"):
        jobs.add(CountingJob("j1"))
    with pytest.raises(GenericError, match=r"^Invalid job ID '1x'$"):
        jobs.add(CountingJob("1x"))
    with pytest.raises(GenericError, match=r"^Invalid job ID ''$"):
        jobs.add(CountingJob(""))
    with pytest.raises(GenericError, match=r"^An explicit job ID is required$"):
        jobs.check_new_id(None)
    await client.until("BLOCK_JOB_READY")
    assert client.take() == ["JSC created", "JSC running", "JSC ready", "BLOCK_JOB_READY"]
