"""Speed limits in virtual time: exact completion times under MockClock."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from qmpd.jobs import JobManager, RateLimiter
from tests.jobs.testjobs import CountingJob, MiB
from tests.support.transcript import Transcript


async def run_job(client: Transcript, jobs: JobManager, job: CountingJob) -> float:
    t0 = trio.current_time()
    jobs.add(job)
    job.start()
    await client.until("JSC null")
    return trio.current_time() - t0


async def sleeping_on_the_limit(jobs: JobManager) -> float:
    """Start job j1 (4 MiB at 1 MiB/s); return its start time once it has
    slept 1.5 s, half way through its wait for chunk 2 (due at 2.0)."""
    t0 = trio.current_time()
    jobs.add(CountingJob("j1", chunks=4, speed=MiB))
    jobs.find("j1").start()
    await trio.sleep(1.5)
    return t0


async def test_unlimited_takes_no_time(
    client: Transcript, jobs: JobManager, autojump_clock: MockClock
) -> None:
    assert await run_job(client, jobs, CountingJob("j1", chunks=1000)) == 0.0


async def test_speed_is_honoured_exactly(
    client: Transcript, jobs: JobManager, autojump_clock: MockClock
) -> None:
    # 10 MiB at 1 MiB/s.
    assert await run_job(client, jobs, CountingJob("j1", chunks=10, speed=MiB)) == 10.0


async def test_large_copy_takes_no_real_time(
    client: Transcript, jobs: JobManager, autojump_clock: MockClock
) -> None:
    # 64 GiB in 64 MiB pieces at 1 GiB/s: a minute of virtual time.
    job = CountingJob("j1", chunks=1024, chunk=64 * MiB, speed=1 << 30)
    assert await run_job(client, jobs, job) == 64.0


@pytest.mark.parametrize(
    ("new_speed", "finish"),
    [
        (0, 3.5),  # unlimited from 3.5 s: the sleep is cut short
        (2 * MiB, 6.5),  # 3.5 s for 4 MiB, then 6 MiB at 2 MiB/s
        (MiB // 2, 17.0),  # slower: the current sleep runs out, then 2 s a chunk
    ],
)
async def test_set_speed_while_running(
    client: Transcript, jobs: JobManager, autojump_clock: MockClock, new_speed: int, finish: float
) -> None:
    t0 = trio.current_time()
    jobs.add(CountingJob("j1", chunks=10, speed=MiB))
    jobs.find("j1").start()
    await trio.sleep(3.5)
    assert await client.cmd("block-job-set-speed", device="j1", speed=new_speed) == {}
    [info] = await client.cmd("query-block-jobs")
    assert info["speed"] == new_speed
    await client.until("JSC null")
    assert trio.current_time() - t0 == finish
    assert client.event("BLOCK_JOB_COMPLETED")["speed"] == new_speed


async def test_paused_time_does_not_count_as_credit(
    client: Transcript, jobs: JobManager, autojump_clock: MockClock
) -> None:
    t0 = await sleeping_on_the_limit(jobs)
    await client.cmd("job-pause", id="j1")
    await trio.sleep(100)
    await client.cmd("job-resume", id="j1")
    await client.until("JSC null")
    # Woken by resume at 101.5 with chunk 2 due since 2.0: it goes at once,
    # and the last two chunks take a second each, as before the pause.
    assert trio.current_time() - t0 == 103.5


def test_rate_limiter_arithmetic() -> None:
    limiter = RateLimiter(100)
    assert limiter.delay(0.0) == 0.0
    limiter.account(50, 0.0)
    assert limiter.delay(0.0) == 0.5
    assert limiter.delay(0.25) == 0.25
    limiter.account(50, 0.25)
    assert limiter.delay(0.25) == 0.75
    assert limiter.delay(1.0) == 0.0  # on schedule: a new window
    limiter.account(100, 5.0)  # idle time is not saved up
    assert limiter.delay(5.0) == 1.0
    limiter.set_speed(0)
    assert limiter.delay(5.0) == 0.0
    with pytest.raises(ValueError, match="negative"):
        limiter.set_speed(-1)


async def test_pause_and_resume_while_sleeping_on_the_rate_limit(
    client: Transcript, jobs: JobManager, autojump_clock: MockClock
) -> None:
    # A job waiting out its speed limit must pause and carry on when resumed.
    t0 = await sleeping_on_the_limit(jobs)
    assert await client.cmd("job-pause", id="j1") == {}
    await trio.sleep(10)
    [info] = await client.cmd("query-jobs")
    assert info["status"] == "paused"
    assert await client.cmd("job-resume", id="j1") == {}
    with trio.fail_after(100):
        await client.until("JSC null")
    assert trio.current_time() - t0 >= 4.0


async def test_pause_and_resume_in_one_write_keep_a_rate_limited_job_running(
    client: Transcript, jobs: JobManager, autojump_clock: MockClock
) -> None:
    # Issue 10 defect 17: the pause ends the limiter's sleep on the job's
    # behalf, and the resume that follows before the job's task runs again
    # must let it go on, not find a "timer still pending" and do nothing.
    t0 = await sleeping_on_the_limit(jobs)
    await client.until("JSC running")
    await client.pair.send(
        b'{"execute": "job-pause", "arguments": {"id": "j1"}, "id": 1}'
        b'{"execute": "job-resume", "arguments": {"id": "j1"}, "id": 2}'
    )
    # Virtual seconds: a job stuck paused makes the clock jump there at once.
    with trio.fail_after(100):
        replies = [await client.pair.read_message() for _ in range(4)]
        shown = [m.get("return", m.get("data", {}).get("status")) for m in replies]
        assert shown == ["paused", {}, "running", {}]
        [info] = await client.cmd("query-block-jobs")
        assert (info["status"], info["paused"]) == ("running", False)
        await client.until("JSC null")
    # Chunk 2 is still due at 2.0: the pause did not cost or give time.
    assert trio.current_time() - t0 == 4.0
