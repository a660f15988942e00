"""The engine's Python API, as concrete jobs (mirror, create) use it."""

from __future__ import annotations

import pytest
import trio.testing

from qmpd.app import App, build_app
from qmpd.jobs import BlockJob, Job, JobManager, JobStatus, JobType, Progress
from tests.jobs.testjobs import CountingJob


def statuses(app: App, job_id: str) -> list[str]:
    assert app.events.history is not None
    return [
        d["status"]
        for name, d in app.events.history
        if name == "JOB_STATUS_CHANGE" and d is not None and d["id"] == job_id
    ]


class InstantReady(BlockJob):
    """Nothing to copy: ready at its first step, like a mirror of an empty disk."""

    job_type = JobType.COMMIT

    async def run(self) -> None:
        self.transition_to_ready()
        while not self.cancel_requested:
            await self.yield_()


async def test_until_first_yield_runs_the_first_steps(app: App, jobs: JobManager) -> None:
    job = jobs.add(InstantReady("j1"))
    job.start()
    await job.until_first_yield()
    assert app.events.history is not None
    assert [name for name, _ in app.events.history] == [
        "JOB_STATUS_CHANGE", "JOB_STATUS_CHANGE", "JOB_STATUS_CHANGE", "BLOCK_JOB_READY",
    ]  # fmt: skip
    assert statuses(app, "j1") == ["created", "running", "ready"]
    job.user_cancel(force=True)


class Broken(Job):
    job_type = JobType.CREATE

    async def run(self) -> None:
        raise ZeroDivisionError("oops")


async def test_a_bug_in_run_fails_only_that_job(app: App, jobs: JobManager) -> None:
    job = jobs.add(Broken("j1", auto_dismiss=False))
    job.start()
    await job.until_first_yield()
    assert job.status is JobStatus.CONCLUDED
    assert job.error == "internal error in qmpd: oops"
    assert jobs.failures == []


async def test_internal_and_user_pauses_add_up(app: App, jobs: JobManager) -> None:
    job = jobs.add(CountingJob("j1", reach_ready=True))
    job.start()
    await trio.testing.wait_all_tasks_blocked()
    assert job.status is JobStatus.READY
    job.pause()  # e.g. a drained node
    assert job.status is JobStatus.STANDBY
    job.user_pause()
    job.user_resume()
    assert job.status is JobStatus.STANDBY  # the internal pause still holds
    job.resume()
    assert job.status is JobStatus.READY
    with pytest.raises(RuntimeError):
        job.resume()


def test_progress_moves_forward_only() -> None:
    progress = Progress()
    progress.set_remaining(10)
    progress.update(4)
    assert (progress.current, progress.total) == (4, 10)
    progress.set_remaining(2)  # re-estimated: less left than thought
    assert (progress.current, progress.total) == (4, 6)
    progress.increase_remaining(3)
    assert progress.total == 9
    with pytest.raises(ValueError, match="forward"):
        progress.update(-1)


def test_start_needs_a_running_manager() -> None:
    app = build_app()
    job = app.jobs.add(CountingJob("j1"))
    with pytest.raises(RuntimeError, match="not running"):
        job.start()


async def test_start_twice_is_a_bug(jobs: JobManager) -> None:
    job = jobs.add(CountingJob("j1", reach_ready=True))
    job.start()
    with pytest.raises(RuntimeError, match="cannot be started"):
        job.start()
    with pytest.raises(RuntimeError, match="past its set-up"):
        job.early_fail()
    job.user_cancel(force=True)
