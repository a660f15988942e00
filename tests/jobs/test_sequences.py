"""Event sequences of QEMU's job engine, as observed on QEMU (qmp-facts §4.5).

Each test drives a CountingJob through QMP and compares the exact list of
replies and events; events a command causes come before its reply.
"""

from __future__ import annotations

import pytest

from qmpd.app import App
from qmpd.jobs import Job, JobManager, JobType
from tests.jobs.testjobs import CountingJob, MiB
from tests.support.transcript import Transcript

DONE = ["JSC waiting", "JSC pending", "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null"]
CANCELLED = ["JSC aborting", "BLOCK_JOB_CANCELLED", "JSC concluded", "JSC null"]


def start(jobs: JobManager, job: Job) -> Job:
    jobs.add(job)
    job.start()
    return job


async def ready_job(client: Transcript, jobs: JobManager, **kwargs: object) -> CountingJob:
    job = CountingJob("j1", reach_ready=True, **kwargs)  # type: ignore[arg-type]
    start(jobs, job)
    await client.until("BLOCK_JOB_READY")
    assert client.take() == ["JSC created", "JSC running", "JSC ready", "BLOCK_JOB_READY"]
    return job


async def test_complete(client: Transcript, jobs: JobManager) -> None:
    job = await ready_job(client, jobs)
    assert client.event("BLOCK_JOB_READY") == {
        "type": "commit", "device": "j1", "len": 4 * MiB, "offset": 4 * MiB, "speed": 0,
    }  # fmt: skip
    assert await client.cmd("job-complete", id="j1") == {}
    await client.until("JSC null")
    assert client.take() == ["return", *DONE]
    assert "error" not in client.event("BLOCK_JOB_COMPLETED")
    assert job.calls == ["prepare", "commit", "clean"]
    assert await client.cmd("query-jobs") == []


async def test_soft_cancel_when_ready_completes_without_error(
    client: Transcript, jobs: JobManager
) -> None:
    job = await ready_job(client, jobs, soft_cancel=True)
    assert await client.cmd("block-job-cancel", device="j1") == {}
    await client.until("JSC null")
    assert client.take() == ["return", *DONE]
    assert "error" not in client.event("BLOCK_JOB_COMPLETED")
    assert job.should_complete is False
    assert job.calls == ["prepare", "commit", "clean"]


@pytest.mark.parametrize(
    ("command", "args"),
    [("job-cancel", {"id": "j1"}), ("block-job-cancel", {"device": "j1", "force": True})],
)
async def test_force_cancel_when_ready(
    client: Transcript, jobs: JobManager, command: str, args: dict[str, object]
) -> None:
    job = await ready_job(client, jobs, soft_cancel=True)
    assert await client.cmd(command, **args) == {}
    await client.until("JSC null")
    assert client.take() == ["return", *CANCELLED]
    assert client.event("BLOCK_JOB_CANCELLED")["device"] == "j1"
    assert job.calls == ["abort", "clean"]


async def test_cancel_before_ready_is_forced_and_reports_operation_canceled(
    client: Transcript, jobs: JobManager, autojump_clock: object
) -> None:
    start(jobs, CountingJob("j1", soft_cancel=True, speed=MiB, auto_dismiss=False))
    await client.until("JSC running")
    assert await client.cmd("block-job-cancel", device="j1") == {}
    await client.until("JSC concluded")
    assert client.take() == [
        "JSC created", "JSC running", "return",
        "JSC aborting", "BLOCK_JOB_CANCELLED", "JSC concluded",
    ]  # fmt: skip
    [info] = await client.cmd("query-jobs")
    assert info == {
        "id": "j1", "type": "commit", "status": "concluded",
        "current-progress": MiB, "total-progress": 4 * MiB, "error": "Operation canceled",
    }  # fmt: skip
    [binfo] = await client.cmd("query-block-jobs")
    assert binfo["error"] == "Operation canceled"
    assert binfo["status"] == "concluded"
    client.take()
    assert await client.cmd("job-dismiss", id="j1") == {}
    assert client.take() == ["JSC null", "return"]


async def test_manual_finalize_and_dismiss(client: Transcript, jobs: JobManager) -> None:
    job = await ready_job(client, jobs, auto_finalize=False, auto_dismiss=False)
    assert await client.cmd("job-complete", id="j1") == {}
    await client.until("BLOCK_JOB_PENDING")
    assert client.take() == ["return", "JSC waiting", "JSC pending", "BLOCK_JOB_PENDING"]
    assert client.event("BLOCK_JOB_PENDING") == {"type": "commit", "id": "j1"}
    assert job.calls == []
    reply = await client.cmd("job-dismiss", id="j1")
    assert reply["error"] == {
        "class": "GenericError",
        "desc": "Job 'j1' in state 'pending' cannot accept command verb 'dismiss'",
    }
    client.take()
    assert await client.cmd("job-finalize", id="j1") == {}
    assert client.take() == ["BLOCK_JOB_COMPLETED", "JSC concluded", "return"]
    assert job.calls == ["prepare", "commit", "clean"]
    assert await client.cmd("job-dismiss", id="j1") == {}
    assert client.take() == ["JSC null", "return"]


async def test_block_job_finalize_and_dismiss(client: Transcript, jobs: JobManager) -> None:
    await ready_job(client, jobs, auto_finalize=False, auto_dismiss=False)
    await client.cmd("block-job-complete", device="j1")
    await client.until("BLOCK_JOB_PENDING")
    client.take()
    assert await client.cmd("block-job-finalize", id="j1") == {}
    assert await client.cmd("block-job-dismiss", id="j1") == {}
    assert client.take() == [
        "BLOCK_JOB_COMPLETED", "JSC concluded", "return", "JSC null", "return",
    ]  # fmt: skip


async def test_pause_resume_when_ready_and_complete_on_standby(
    client: Transcript, jobs: JobManager
) -> None:
    await ready_job(client, jobs)
    assert await client.cmd("job-pause", id="j1") == {}
    assert client.take() == ["JSC standby", "return"]
    [info] = await client.cmd("query-block-jobs")
    assert (info["paused"], info["ready"], info["busy"]) == (True, True, False)
    # Accepted on standby; takes effect once resumed.
    assert await client.cmd("job-complete", id="j1") == {}
    assert await client.cmd("query-jobs") == [
        {"id": "j1", "type": "commit", "status": "standby",
         "current-progress": 4 * MiB, "total-progress": 4 * MiB},
    ]  # fmt: skip
    client.take()
    assert await client.cmd("job-resume", id="j1") == {}
    await client.until("JSC null")
    assert client.take() == ["JSC ready", "return", *DONE]


async def test_pause_resume_while_running(
    client: Transcript, jobs: JobManager, autojump_clock: object
) -> None:
    start(jobs, CountingJob("j1", speed=MiB))
    await client.until("JSC running")
    assert await client.cmd("job-pause", id="j1") == {}
    assert client.take() == ["JSC created", "JSC running", "JSC paused", "return"]
    reply = await client.cmd("job-pause", id="j1")
    assert reply["error"]["desc"] == "Job is already paused"
    reply = await client.cmd("block-job-cancel", device="j1")
    assert reply["error"] == {
        "class": "GenericError",
        "desc": "The block job for device 'j1' is currently paused",
    }
    client.take()
    assert await client.cmd("block-job-resume", device="j1") == {}
    assert client.take() == ["JSC running", "return"]
    reply = await client.cmd("job-resume", id="j1")
    assert reply["error"]["desc"] == "Can't resume a job that was not paused"
    reply = await client.cmd("job-complete", id="j1")
    assert (
        reply["error"]["desc"]
        == "Job 'j1' in state 'running' cannot accept command verb 'complete'"
    )
    client.take()
    await client.cmd("block-job-pause", device="j1")
    # Cancelling a paused job drops the pause first, visibly.
    assert await client.cmd("job-cancel", id="j1") == {}
    await client.until("JSC null")
    assert client.take() == ["JSC paused", "return", "JSC running", "return", *CANCELLED]


async def test_failure_reports_completed_with_error(client: Transcript, jobs: JobManager) -> None:
    job = start(jobs, CountingJob("j1", fail_at=2, auto_dismiss=False))
    await client.until("JSC concluded")
    assert client.take() == [
        "JSC created", "JSC running", "JSC aborting", "BLOCK_JOB_COMPLETED", "JSC concluded",
    ]  # fmt: skip
    assert client.event("BLOCK_JOB_COMPLETED") == {
        "type": "commit", "device": "j1", "len": 4 * MiB, "offset": 2 * MiB,
        "speed": 0, "error": "chunk 2 failed",
    }  # fmt: skip
    [info] = await client.cmd("query-jobs")
    assert info["error"] == "chunk 2 failed"
    assert job.calls == ["abort", "clean"]


async def test_prepare_failure_at_finalize(client: Transcript, jobs: JobManager) -> None:
    job = await ready_job(client, jobs, auto_finalize=False, fail_prepare="cannot pivot")
    await client.cmd("job-complete", id="j1")
    await client.until("BLOCK_JOB_PENDING")
    client.take()
    assert await client.cmd("job-finalize", id="j1") == {}
    assert client.take() == [
        "JSC aborting", "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null", "return",
    ]  # fmt: skip
    assert client.event("BLOCK_JOB_COMPLETED")["error"] == "cannot pivot"
    assert job.calls == ["prepare", "abort", "clean"]


async def test_cancel_pending_job_is_forced_at_once(client: Transcript, jobs: JobManager) -> None:
    await ready_job(client, jobs, auto_finalize=False, soft_cancel=True)
    await client.cmd("job-complete", id="j1")
    await client.until("BLOCK_JOB_PENDING")
    client.take()
    # Not ready any more, so even block-job-cancel's soft cancel is forced.
    assert await client.cmd("block-job-cancel", device="j1") == {}
    assert client.take() == [*CANCELLED, "return"]


async def test_cancel_before_start_emits_no_block_job_event(
    client: Transcript, jobs: JobManager
) -> None:
    job = CountingJob("j1")
    jobs.add(job)
    assert await client.cmd("job-cancel", id="j1") == {}
    assert client.take() == [
        "JSC created", "JSC aborting", "JSC concluded", "JSC null", "return",
    ]  # fmt: skip
    assert job.calls == ["abort", "clean"]


async def test_paused_while_created_stops_at_first_pause_point(
    client: Transcript, jobs: JobManager
) -> None:
    job = CountingJob("j1")
    jobs.add(job)
    assert await client.cmd("job-pause", id="j1") == {}
    job.start()
    assert await client.cmd("query-jobs") == [
        {"id": "j1", "type": "commit", "status": "paused",
         "current-progress": 0, "total-progress": 0},
    ]  # fmt: skip
    assert client.take() == ["JSC created", "return", "JSC running", "JSC paused", "return"]
    await client.cmd("job-resume", id="j1")
    await client.until("JSC null")
    assert client.take() == ["JSC running", "return", *DONE]


async def test_early_failure_goes_straight_to_null(client: Transcript, jobs: JobManager) -> None:
    job = CountingJob("j1")
    jobs.add(job)
    job.early_fail()
    await client.until("JSC null")
    assert client.take() == ["JSC created", "JSC null"]
    assert len(jobs) == 0


async def test_lookup_errors(client: Transcript, jobs: JobManager) -> None:
    for command in ("job-pause", "job-resume", "job-cancel", "job-complete",
                    "job-finalize", "job-dismiss"):  # fmt: skip
        reply = await client.cmd(command, id="nope")
        assert reply["error"] == {"class": "GenericError", "desc": "Job not found"}
    block_calls: list[tuple[str, dict[str, object]]] = [
        ("block-job-pause", {"device": "nope"}),
        ("block-job-resume", {"device": "nope"}),
        ("block-job-cancel", {"device": "nope"}),
        ("block-job-complete", {"device": "nope"}),
        ("block-job-set-speed", {"device": "nope", "speed": -1}),
        ("block-job-finalize", {"id": "nope"}),
        ("block-job-dismiss", {"id": "nope"}),
        ("block-job-change", {"id": "nope", "type": "mirror", "copy-mode": "background"}),
    ]
    for command, args in block_calls:
        reply = await client.cmd(command, **args)
        assert reply["error"] == {"class": "DeviceNotActive", "desc": "Block job 'nope' not found"}


async def test_set_speed_checks(client: Transcript, jobs: JobManager) -> None:
    await ready_job(client, jobs, auto_finalize=False)
    reply = await client.cmd("block-job-set-speed", device="j1", speed=-1)
    assert reply["error"]["desc"] == "Parameter 'speed' expects a non-negative value"
    assert await client.cmd("block-job-set-speed", device="j1", speed=5) == {}
    [info] = await client.cmd("query-block-jobs")
    assert info["speed"] == 5
    await client.cmd("job-complete", id="j1")
    await client.until("BLOCK_JOB_PENDING")
    # The verb table is consulted before the value.
    reply = await client.cmd("block-job-set-speed", device="j1", speed=-1)
    assert (
        reply["error"]["desc"]
        == "Job 'j1' in state 'pending' cannot accept command verb 'set-speed'"
    )


async def test_block_job_change_without_support(client: Transcript, jobs: JobManager) -> None:
    await ready_job(client, jobs)
    reply = await client.cmd("block-job-change", id="j1", type="commit")
    assert reply["error"]["desc"] == "Job type does not support change"


class CreateLike(Job):
    job_type = JobType.CREATE

    async def run(self) -> None:
        self.progress.set_remaining(1)
        await self.yield_()
        self.progress.update(1)


async def test_listing_newest_first_and_block_jobs_only(
    client: Transcript, jobs: JobManager, app: App
) -> None:
    start(jobs, CountingJob("a", reach_ready=True))
    start(jobs, CreateLike("b", auto_dismiss=False))
    start(jobs, CountingJob("c", reach_ready=True))
    await client.until(lambda m: m["event"] == "BLOCK_JOB_READY" and m["data"]["device"] == "c")
    assert [j["id"] for j in await client.cmd("query-jobs")] == ["c", "b", "a"]
    assert [j["device"] for j in await client.cmd("query-block-jobs")] == ["c", "a"]
    reply = await client.cmd("block-job-pause", device="b")
    assert reply["error"] == {"class": "DeviceNotActive", "desc": "Block job 'b' not found"}
    # A create job: only status changes, no BLOCK_JOB_* events.
    client.take()
    jobs.find("b").kick()
    await client.until(lambda m: m["data"].get("id") == "b" and m["data"]["status"] == "concluded")
    assert client.take() == ["JSC waiting", "JSC pending", "JSC concluded"]
    reply = await client.cmd("job-complete", id="b")
    assert (
        reply["error"]["desc"]
        == "Job 'b' in state 'concluded' cannot accept command verb 'complete'"
    )
