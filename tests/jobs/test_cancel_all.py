"""JobManager.cancel_all: what the daemon does to its jobs before it exits."""

from __future__ import annotations

import trio.testing

from qmpd.app import App
from qmpd.jobs import JobManager, JobStatus
from tests.jobs.test_engine import statuses
from tests.jobs.testjobs import CountingJob

MiB = 1 << 20


async def test_every_job_is_drained_then_cancelled_whatever_its_state(
    app: App, jobs: JobManager
) -> None:
    running = jobs.add(CountingJob("running", chunks=64, speed=MiB))
    ready = jobs.add(CountingJob("ready", chunks=1, reach_ready=True))
    paused = jobs.add(CountingJob("paused", chunks=64, speed=MiB))
    pending = jobs.add(CountingJob("pending", chunks=1, auto_finalize=False))
    kept = jobs.add(CountingJob("kept", chunks=1, auto_dismiss=False))
    jobs.add(CountingJob("created"))
    for job in (running, ready, paused, pending, kept):
        job.start()
    await trio.testing.wait_all_tasks_blocked()
    paused.user_pause()
    await trio.testing.wait_all_tasks_blocked()
    assert (ready.status, paused.status) == (JobStatus.READY, JobStatus.PAUSED)
    assert (pending.status, kept.status) == (JobStatus.PENDING, JobStatus.CONCLUDED)

    await jobs.cancel_all()

    assert len(jobs) == 0
    # Drained (paused, or standby when ready), then woken by the cancel.
    assert statuses(app, "running") == [
        "created", "running", "paused", "running", "aborting", "concluded", "null"
    ]  # fmt: skip
    assert statuses(app, "ready")[-5:] == ["standby", "ready", "aborting", "concluded", "null"]
    # The user's pause is dropped by the cancel, as by job-cancel.
    assert statuses(app, "paused")[-5:] == ["paused", "running", "aborting", "concluded", "null"]
    assert statuses(app, "pending")[-3:] == ["aborting", "concluded", "null"]
    assert statuses(app, "kept")[-2:] == ["concluded", "null"]
    assert statuses(app, "created") == ["created", "aborting", "concluded", "null"]
    assert app.events.history is not None
    history = app.events.history
    cancelled = {d["device"] for name, d in history if name == "BLOCK_JOB_CANCELLED" and d}
    assert cancelled == {"running", "ready", "paused", "pending"}
