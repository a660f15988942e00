"""Jobs belong to the daemon, not to the session that started them."""

from __future__ import annotations

from qmpd.app import App
from qmpd.jobs import JobManager
from tests.conftest import Connect
from tests.jobs.testjobs import CountingJob
from tests.support.transcript import Transcript


async def test_job_outlives_its_client_and_another_completes_it(
    app: App, jobs: JobManager, connect: Connect
) -> None:
    first = Transcript(await connect())
    job = CountingJob("j1", chunks=8, reach_ready=True)
    jobs.add(job)
    job.start()
    assert await first.cmd("job-pause", id="j1") == {}
    await first.pair.aclose()

    second = Transcript(await connect())
    [info] = await second.cmd("query-jobs")
    assert info["status"] == "paused"
    assert await second.cmd("job-resume", id="j1") == {}
    await second.until("BLOCK_JOB_READY")
    assert await second.cmd("job-complete", id="j1") == {}
    await second.until("JSC null")
    assert second.take() == [
        "return", "JSC running", "return", "JSC ready", "BLOCK_JOB_READY",
        "return", "JSC waiting", "JSC pending", "BLOCK_JOB_COMPLETED",
        "JSC concluded", "JSC null",
    ]  # fmt: skip
    assert job.calls == ["prepare", "commit", "clean"]


async def test_events_reach_every_session(jobs: JobManager, connect: Connect) -> None:
    one = Transcript(await connect())
    two = Transcript(await connect())
    job = CountingJob("j1")
    jobs.add(job)
    job.start()
    for client in (one, two):
        await client.until("JSC null")
        assert client.take() == [
            "JSC created", "JSC running", "JSC waiting", "JSC pending",
            "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null",
        ]  # fmt: skip
