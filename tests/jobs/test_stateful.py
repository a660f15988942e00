"""A stateful property test of the job engine.

Hypothesis drives random client commands (the real handlers), the jobs' own
steps (progress, ready, fail, finish) and job creation, against a trio loop
running in a worker thread: each step runs in trio and then lets every job
task run until all are blocked, so the checks see a settled engine.

After every step: each status write of each job is a move QEMU's table
allows (a literal copy, not the engine's), every real change produced
exactly one JOB_STATUS_CHANGE and nothing else did, a refused verb was
refused exactly when QEMU's verb table says so, pauses have taken effect,
and each started job that finished sent exactly one BLOCK_JOB_COMPLETED or
BLOCK_JOB_CANCELLED, the latter only for a forced cancel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from qmpd.app import CommandContext, build_app
from qmpd.errors import CommandError
from qmpd.jobs import JobStatus
from tests.jobs.test_tables import ORDER, QEMU_STT, QEMU_VERBS
from tests.jobs.testjobs import ScriptedJob

JOB_IDS = ("a", "b")
PAUSED = (JobStatus.PAUSED, JobStatus.STANDBY)


def stt(old: JobStatus, new: JobStatus) -> bool:
    return bool(QEMU_STT[old.value][ORDER.index(new)])


def verb_ok(verb: str, status: JobStatus) -> bool:
    return bool(QEMU_VERBS[verb][ORDER.index(status)])


class TrioThread:
    """A trio loop in a worker thread, serving the job manager."""

    def __init__(self, serve: Callable[..., Any]) -> None:
        self.crash: BaseException | None = None
        self._serve = serve
        started = threading.Event()

        def target() -> None:
            try:
                trio.run(self._main, started)
            except BaseException as exc:
                self.crash = exc
                started.set()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        started.wait(10)
        assert self.crash is None, self.crash

    async def _main(self, started: threading.Event) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self.stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self._serve)
            started.set()
            await self.stop.wait()
            nursery.cancel_scope.cancel()

    def call(self, func: Callable[[], Any]) -> tuple[Any, Exception | None]:
        """Run ``func`` in trio, then let the jobs run until all are blocked."""

        async def step() -> tuple[Any, Exception | None]:
            outcome: tuple[Any, Exception | None]
            try:
                outcome = (func(), None)
            except Exception as exc:
                outcome = (None, exc)
            await trio.testing.wait_all_tasks_blocked()
            return outcome

        return trio.from_thread.run(step, trio_token=self.token)

    def close(self) -> None:
        if self.crash is None:
            trio.from_thread.run_sync(self.stop.set, trio_token=self.token)
        self.thread.join(10)


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.app = build_app(strict=True)
        self.app.events.history = []
        self.ctx = CommandContext(self.app, self.app.new_session())
        self.trio = TrioThread(self.app.jobs.serve)
        self.made: list[ScriptedJob] = []
        self.seen_events = 0
        self.seen_writes: dict[int, int] = {}
        #: Per live id: BLOCK_JOB_COMPLETED/CANCELLED events in its life so far.
        self.finish_events: dict[str, list[str]] = {}

    def teardown(self) -> None:
        self.trio.close()

    # -- helpers -------------------------------------------------------------

    def live(self, job_id: str) -> ScriptedJob | None:
        job = self.app.jobs.get(job_id)
        assert job is None or isinstance(job, ScriptedJob)
        return job

    def command(self, name: str, **args: Any) -> CommandError | None:
        handler = self.app.handlers[name].func
        kwargs = {k.replace("-", "_"): v for k, v in args.items()}
        result, exc = self.trio.call(lambda: handler(self.ctx, **kwargs))
        if exc is not None:
            assert isinstance(exc, CommandError), repr(exc)
            return exc
        self.app.schema.check_return(name, {} if result is None else result)
        return None

    # -- rules ---------------------------------------------------------------

    @rule(
        job_id=st.sampled_from(JOB_IDS),
        auto_finalize=st.booleans(),
        auto_dismiss=st.booleans(),
        fail_prepare=st.booleans(),
        start=st.booleans(),
    )
    def create(
        self, job_id: str, auto_finalize: bool, auto_dismiss: bool, fail_prepare: bool, start: bool
    ) -> None:
        job = ScriptedJob(
            job_id,
            auto_finalize=auto_finalize,
            auto_dismiss=auto_dismiss,
            fail_prepare=fail_prepare,
        )
        taken = self.live(job_id) is not None

        def add() -> None:
            self.app.jobs.add(job)
            if start:
                job.start()

        _, exc = self.trio.call(add)
        if taken:
            assert isinstance(exc, CommandError)
            assert exc.desc == f"Job ID '{job_id}' already in use"
            assert job.writes == []
        else:
            assert exc is None
            self.made.append(job)

    @rule(job_id=st.sampled_from(JOB_IDS))
    def start(self, job_id: str) -> None:
        job = self.live(job_id)
        if job is not None and not job.started and job.status is JobStatus.CREATED:
            self.trio.call(job.start)

    @rule(
        job_id=st.sampled_from(JOB_IDS),
        what=st.sampled_from(["progress", "ready", "fail", "finish", "sleep"]),
    )
    def job_step(self, job_id: str, what: str) -> None:
        job = self.live(job_id)
        if job is not None:
            self.trio.call(lambda: job.order(what))

    @rule(
        job_id=st.sampled_from(JOB_IDS),
        command=st.sampled_from(
            [
                ("job-pause", "pause"),
                ("job-resume", "resume"),
                ("job-cancel", "cancel"),
                ("job-complete", "complete"),
                ("job-finalize", "finalize"),
                ("job-dismiss", "dismiss"),
                ("block-job-pause", "pause"),
                ("block-job-resume", "resume"),
                ("block-job-complete", "complete"),
                ("block-job-cancel", "cancel"),
                ("block-job-set-speed", "set-speed"),
            ]
        ),
        force=st.booleans(),
        speed=st.integers(-1, 3),
    )
    def verb(self, job_id: str, command: tuple[str, str], force: bool, speed: int) -> None:
        name, verb = command
        job = self.live(job_id)
        before = job.status if job is not None else None
        user_paused = job.user_paused if job is not None else False
        key = (
            "device"
            if name.startswith("block-job-") and verb not in ("finalize", "dismiss")
            else "id"
        )
        args: dict[str, Any] = {key: job_id}
        if name == "block-job-cancel":
            args["force"] = force
        if name == "block-job-set-speed":
            args["speed"] = speed
        error = self.command(name, **args)
        if before is None:
            assert error is not None
            assert error.desc in ("Job not found", f"Block job '{job_id}' not found")
            return
        refusal = f"Job '{job_id}' in state '{before.value}' cannot accept command verb '{verb}'"
        # Checks QEMU makes before the verb table.
        prechecked = (verb == "resume" and not user_paused) or (
            name == "block-job-cancel" and user_paused and not force
        )
        if not verb_ok(verb, before) and not prechecked:
            assert error is not None
            assert error.desc == refusal
        if error is not None and "cannot accept command verb" in error.desc:
            assert error.desc == refusal
            assert not verb_ok(verb, before)

    @rule(job_id=st.sampled_from(JOB_IDS), block=st.booleans())
    def pause_and_resume_at_once(self, job_id: str, block: bool) -> None:
        """Both verbs with no job step between them, as when a client sends
        them in one write (issue 10 defect 17)."""
        prefix = "block-job-" if block else "job-"
        key = "device" if block else "id"
        pause = self.app.handlers[prefix + "pause"].func
        resume = self.app.handlers[prefix + "resume"].func

        def both() -> list[CommandError | None]:
            errors: list[CommandError | None] = []
            for func in (pause, resume):
                try:
                    func(self.ctx, **{key: job_id})
                    errors.append(None)
                except CommandError as exc:
                    errors.append(exc)
            return errors

        job = self.live(job_id)
        was_paused = job is not None and job.user_paused
        (paused, resumed), _ = self.trio.call(both)
        if job is not None and paused is None and not was_paused:
            # Our pause was taken, so our resume must be too.
            assert resumed is None, resumed.desc
            assert not job.user_paused

    @rule()
    def query(self) -> None:
        for name in ("query-jobs", "query-block-jobs"):
            result, exc = self.trio.call(lambda n=name: self.app.handlers[n].func(self.ctx))
            assert exc is None
            self.app.schema.check_return(name, result)
            live = [j.id for j in self.made if j.status is not JobStatus.NULL]
            key = "id" if name == "query-jobs" else "device"
            assert [entry[key] for entry in result] == live[::-1]

    # -- invariants ------------------------------------------------------------

    @invariant()
    def engine_healthy(self) -> None:
        assert self.trio.crash is None, self.trio.crash
        assert self.app.jobs.failures == []

    @invariant()
    def writes_follow_the_table_and_match_events(self) -> None:
        history = self.app.events.history
        assert history is not None
        new_events, self.seen_events = history[self.seen_events :], len(history)
        by_id: dict[str, list[str]] = {}
        for name, data in new_events:
            assert data is not None
            if name == "JOB_STATUS_CHANGE":
                by_id.setdefault(data["id"], []).append(data["status"])
            elif name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
                self.finish_events.setdefault(data["device"], []).append(name)
        for job in self.made:
            start = self.seen_writes.get(id(job), 0)
            writes = job.writes[start:]
            self.seen_writes[id(job)] = len(job.writes)
            for old, new in writes:
                assert stt(old, new), f"{job.id}: {old.value} -> {new.value}"
            changes = [new.value for old, new in writes if new is not old]
            if changes:
                assert by_id.pop(job.id, []) == changes
                if JobStatus.NULL.value in changes:
                    self.check_finish(job)
        assert by_id == {}, f"events without status changes: {by_id}"

    def check_finish(self, job: ScriptedJob) -> None:
        finished = self.finish_events.pop(job.id, [])
        if not job.started:
            assert finished == []
        elif job.force_cancel:
            assert finished == ["BLOCK_JOB_CANCELLED"]
        else:
            assert finished == ["BLOCK_JOB_COMPLETED"]

    @invariant()
    def registry_matches_statuses(self) -> None:
        live = {j.id: j for j in self.made if j.status is not JobStatus.NULL}
        assert {j.id: j for j in self.app.jobs} == live

    @invariant()
    def pauses_have_taken_effect(self) -> None:
        for job in self.app.jobs:
            assert job.pause_count >= 0
            assert not job.user_paused or job.pause_count >= 1
            if not job.started or job.deferred:
                continue
            assert job.paused == (job.status in PAUSED)
            if job.should_pause and not job.is_cancelled:
                assert job.status in PAUSED, job.status
            else:
                assert job.status not in PAUSED, job.status

    @invariant()
    def cancelled_jobs_say_so(self) -> None:
        for job in self.made:
            if job.force_cancel and job.status in (JobStatus.CONCLUDED, JobStatus.NULL):
                assert job.error is not None


JobMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobMachine = JobMachine.TestCase
