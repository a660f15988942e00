"""Job types for the engine's tests.

:class:`CountingJob` copies ``chunks`` pieces of ``chunk`` bytes under the
speed limit, optionally becomes ready and waits to be completed, and can
fail on demand; it behaves like a small active commit.  :class:`ScriptedJob`
does nothing on its own: the test sends it orders (progress, ready, fail,
finish), which lets a state machine decide every step.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from qmpd.jobs import BlockJob, JobFailed, JobStatus, JobType

MiB = 1 << 20


class CountingJob(BlockJob):
    job_type = JobType.COMMIT

    def __init__(
        self,
        job_id: str,
        *,
        chunks: int = 4,
        chunk: int = MiB,
        reach_ready: bool = False,
        soft_cancel: bool = False,
        fail_at: int | None = None,
        fail_prepare: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(job_id, **kwargs)
        self.chunks = chunks
        self.chunk = chunk
        self.reach_ready = reach_ready
        self.soft_cancel = soft_cancel
        self.fail_at = fail_at
        self.fail_prepare = fail_prepare
        self.should_complete = False
        #: Finalization hooks in the order they ran.
        self.calls: list[str] = []

    async def run(self) -> None:
        self.progress.set_remaining(self.chunks * self.chunk)
        for index in range(self.chunks):
            await self.throttle()
            if self.is_cancelled:
                return
            if index == self.fail_at:
                raise JobFailed(f"chunk {index} failed")
            self.progress.update(self.chunk)
            self.account(self.chunk)
        # Pay for the last chunk too, so a copy of N bytes takes N / speed.
        await self.throttle()
        if not self.reach_ready or self.is_cancelled:
            return
        self.transition_to_ready()
        while not self.should_complete and not self.cancel_requested:
            await self.yield_()

    def complete(self) -> None:
        self.should_complete = True
        self.kick()

    def on_cancel(self, force: bool) -> bool:
        # Mirror's rule: soft only when ready.
        return force or not (self.soft_cancel and self.is_ready)

    def prepare(self) -> None:
        self.calls.append("prepare")
        if self.fail_prepare is not None:
            raise JobFailed(self.fail_prepare)

    def commit(self) -> None:
        self.calls.append("commit")

    def abort(self) -> None:
        self.calls.append("abort")

    def clean(self) -> None:
        self.calls.append("clean")


class ScriptedJob(BlockJob):
    """A block job that only acts on orders; see the module docstring."""

    job_type = JobType.STREAM

    def __init__(self, job_id: str, *, fail_prepare: bool = False, **kwargs: Any) -> None:
        super().__init__(job_id, **kwargs)
        self.orders: deque[str] = deque()
        self.fail_prepare = fail_prepare
        self.should_complete = False
        #: Every write of ``status``: (old, new), including non-changes.
        self.writes: list[tuple[JobStatus, JobStatus]] = []

    # Watch the status attribute itself, independently of _transition().
    @property  # type: ignore[override]
    def status(self) -> JobStatus:
        return self._status

    @status.setter
    def status(self, new: JobStatus) -> None:
        old = getattr(self, "_status", None)
        if old is not None:
            self.writes.append((old, new))
        self._status = new

    def order(self, what: str) -> None:
        self.orders.append(what)
        self.kick()

    async def run(self) -> None:
        while not self.is_cancelled:
            if self.orders:
                what = self.orders.popleft()
                if what == "progress":
                    self.progress.update(1)
                    self.progress.set_remaining(3)
                elif what == "ready" and self.status is JobStatus.RUNNING:
                    self.transition_to_ready()
                elif what == "fail":
                    raise JobFailed("scripted failure")
                elif what == "finish" and not self.is_ready:
                    return
                elif what == "sleep":
                    # A timer sleep, as under a speed limit: only a kick,
                    # a pause or a cancel ends it in a test's time.
                    await self.sleep(1e9)
                continue
            if self.is_ready and (self.should_complete or self.cancel_requested):
                return
            await self.yield_()

    def complete(self) -> None:
        self.should_complete = True
        self.kick()

    def on_cancel(self, force: bool) -> bool:
        return force or not self.is_ready

    def prepare(self) -> None:
        if self.fail_prepare:
            raise JobFailed("prepare failed")
