"""Several copy operations in flight: races with guest writes, pause, errors.

The nodes here keep their bytes in memory and take a random (seeded) time
for every request, under the autojump clock, so that copy operations
overlap each other and the guest's writes in many orders.  Each test would
fail with a naive concurrent copy loop: without waiting for an overlapping
operation (a stale copy lands last), with the dirty bits cleared after the
block status was asked, by pausing or failing while requests are in flight.
"""

from __future__ import annotations

import errno
import random

import pytest
import trio
from trio.testing import MockClock

from qmpd.app import App
from qmpd.block import BACKEND_KIND, BlockIOError, CommonOptions, NodeUser, NullNode, Perm
from qmpd.block.backend import DISK_PERM, DISK_SHARED
from qmpd.block.extents import Extent
from qmpd.block.zerostate import KnownZero
from qmpd.jobs.mirror import MirrorJob
from qmpd.jobs.status import JobStatus
from tests.mirror.conftest import MiB
from tests.support.transcript import Transcript

KiB = 1 << 10
BLOCK = 4 * KiB
#: Statuses in which the job must have no request of its own in flight.
QUIET = {JobStatus.PAUSED, JobStatus.STANDBY, JobStatus.ABORTING, JobStatus.CONCLUDED}


class MemNode(NullNode):
    """A node in memory; every request takes a random time and is watched.

    Block status is exact per 4 KiB block (zero where all bytes are zero),
    so copies mix data and zero pieces.  ``gate``: writes wait for it.
    ``fail_at``: the write covering that offset fails once with EIO.
    ``shared``: other processes may write it (their writes change ``data``
    directly, unseen by qmpd).  ``hold``: a write whose data has landed
    sets ``landed`` and is not seen complete until ``hold`` is set.
    ``status_fails``: that many block-status queries fail with EIO.
    """

    def __init__(self, name: str, size: int, rng: random.Random) -> None:
        super().__init__(name, CommonOptions(), size=size)
        self.data = bytearray(size)
        self.rng = rng
        self.job: MirrorJob | None = None
        self.gate: trio.Event | None = None
        self.fail_at: int | None = None
        self.active = 0
        self.max_active = 0
        self.requests = 0
        self.started: set[int] = set()
        self.completed: set[int] = set()
        self.violations: list[str] = []
        self._crowd: tuple[int, trio.Event] | None = None
        self.shared = False
        self.hold: trio.Event | None = None
        #: Block-status queries still to fail with EIO.
        self.status_fails = 0
        self.landed = trio.Event()

    def others_may_write(self) -> bool:
        return self.shared

    async def until_active(self, count: int) -> None:
        """Wait until ``count`` requests are in flight at once."""
        self._crowd = (count, trio.Event())
        if self.active < count:
            await self._crowd[1].wait()

    def _watch(self, what: str) -> None:
        # Called when a request starts and when it ends: a job that is
        # paused or failed must have none of its requests in flight.
        if self.job is not None and self.job.status in QUIET:
            self.violations.append(f"{what} while {self.job.status.value}")

    async def _io(self, offset: int) -> None:
        self.requests += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self._crowd is not None and self.active >= self._crowd[0]:
            self._crowd[1].set()
        self._watch(f"start {offset}")
        # Mostly quick, now and then slow: requests overtake each other.
        await trio.sleep(self.rng.random() ** 4 * 0.05)

    def _done(self, offset: int) -> None:
        self.active -= 1
        self._watch(f"end {offset}")

    async def _read(self, offset: int, length: int) -> bytes:
        await self._io(offset)
        try:
            return bytes(self.data[offset : offset + length])
        finally:
            self._done(offset)

    async def _write(self, offset: int, data: bytes) -> None:
        self.started.add(offset)
        await self._io(offset)
        try:
            if self.gate is not None:
                await self.gate.wait()
            fail = self.fail_at
            if fail is not None and offset <= fail < offset + len(data):
                self.fail_at = None
                raise BlockIOError(errno.EIO)
            self.data[offset : offset + len(data)] = data
            self.completed.add(offset)
            if self.hold is not None:
                self.landed.set()
                await self.hold.wait()
            # As with a worker thread: the data is there some time before
            # the request is seen complete, so two writes may complete in
            # the other order than they landed.
            await trio.sleep(self.rng.random() ** 4 * 0.02)
        finally:
            self._done(offset)

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        await self._write(offset, bytes(length))
        return "written"

    async def _block_status(self, offset: int, length: int) -> list[Extent]:
        if self.status_fails:
            self.status_fails -= 1
            raise BlockIOError(errno.EIO)
        out = []
        for pos in range(offset, offset + length, BLOCK):
            n = min(BLOCK, offset + length - pos)
            zero = not any(self.data[pos : pos + n])
            out.append(Extent(pos, n, data=not zero, zero=zero, offset=pos))
        # The answer takes time to arrive: guest writes may land meanwhile.
        await trio.sleep(self.rng.random() * 0.005)
        return out

    async def _open_zero(self) -> KnownZero:
        return KnownZero(False, "none")


def add_mem(app: App, name: str, size: int, rng: random.Random, fill: float) -> MemNode:
    """A MemNode whose 64 KiB pieces hold random bytes with probability ``fill``."""
    node = MemNode(name, size, rng)
    for pos in range(0, size, 64 * KiB):
        if rng.random() < fill:
            node.data[pos : pos + 64 * KiB] = rng.randbytes(64 * KiB)
    app.graph.insert(node)
    node.monitor_owned = True
    return node


async def start(client: Transcript, app: App, **args: object) -> MirrorJob:
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m", **args
    ) == {}  # fmt: skip
    job = app.jobs.find_block_job("m")
    assert isinstance(job, MirrorJob)
    return job


async def complete(client: Transcript) -> None:
    await client.until("BLOCK_JOB_READY")
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert client.event("BLOCK_JOB_COMPLETED").get("error") is None


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
async def test_guest_writes_race_with_copies(
    client: Transcript, app: App, autojump_clock: MockClock, seed: int, copy_mode: str
) -> None:
    rng = random.Random(seed)
    size = 8 * MiB
    src = add_mem(app, "src", size, rng, fill=0.5)
    dst = add_mem(app, "dst", size, rng, fill=0.3)  # garbage: not known zero
    job = await start(client, app, granularity=64 * KiB, copy_mode=copy_mode)
    flt = job.filter
    assert flt is not None
    # The guests write through a BlockBackend holding WRITE, as a disk's.
    app.graph.attach(flt, NodeUser("guest", BACKEND_KIND, DISK_PERM, DISK_SHARED | Perm.WRITE))

    async def guest(writes: int) -> None:
        for _ in range(writes):
            offset = rng.randrange(0, size - 1)
            length = min(rng.randrange(1, 300 * KiB), size - offset)
            if rng.random() < 0.3:
                await flt.write_zeroes(offset, length)
            else:
                await flt.write(offset, rng.randbytes(length))
            await trio.sleep(rng.random() * 0.01)

    # Two guests at once: in write-blocking mode their overlapping writes
    # must reach source and target in the same order.
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(guest, 150)
    # Copies overlapped each other.
    assert src.max_active > 1
    assert dst.max_active > 2
    await complete(client)
    assert bytes(dst.data) == bytes(src.data)


async def test_pause_drains_requests_in_flight(
    client: Transcript, app: App, autojump_clock: MockClock
) -> None:
    rng = random.Random(1)
    src = add_mem(app, "src", 8 * MiB, rng, fill=1.0)
    dst = add_mem(app, "dst", 8 * MiB, rng, fill=0.0)
    dst.gate = gate = trio.Event()
    job = await start(client, app, granularity=64 * KiB)
    src.job = dst.job = job
    await dst.until_active(4)
    client.take()
    assert await client.cmd("job-pause", id="m") == {}
    # Busy with its own requests: it cannot be paused yet.
    [info] = await client.cmd("query-jobs")
    assert info["status"] == "running"
    gate.set()
    await client.until("JSC paused")
    assert src.active == dst.active == 0
    seen = src.requests + dst.requests
    await trio.sleep(10)
    assert src.requests + dst.requests == seen
    assert src.violations == dst.violations == []
    assert await client.cmd("job-resume", id="m") == {}
    await complete(client)
    assert bytes(dst.data) == bytes(src.data)


async def test_report_error_waits_for_the_other_requests(
    client: Transcript, app: App, autojump_clock: MockClock
) -> None:
    rng = random.Random(2)
    add_mem(app, "src", 8 * MiB, rng, fill=1.0)
    dst = add_mem(app, "dst", 8 * MiB, rng, fill=0.0)
    dst.gate = gate = trio.Event()
    dst.fail_at = 3 * MiB + 5
    job = await start(client, app, granularity=64 * KiB)
    dst.job = job
    await dst.until_active(8)
    gate.set()
    await client.until("JSC null")
    assert client.event("BLOCK_JOB_ERROR") == {
        "device": "m", "operation": "write", "action": "report",
    }  # fmt: skip
    assert client.event("BLOCK_JOB_COMPLETED")["error"] == "Input/output error"
    # Every other request in flight finished (none was cancelled) before
    # the job failed: none was in flight once it was aborting.
    assert dst.completed == dst.started - {3 * MiB}
    assert dst.violations == []


@pytest.mark.parametrize("policy", ["ignore", "stop"])
async def test_one_failed_request_among_many(
    client: Transcript, app: App, autojump_clock: MockClock, policy: str
) -> None:
    rng = random.Random(3)
    src = add_mem(app, "src", 8 * MiB, rng, fill=0.8)
    dst = add_mem(app, "dst", 8 * MiB, rng, fill=0.2)
    dst.fail_at = 5 * MiB + 100
    job = await start(client, app, granularity=64 * KiB, on_target_error=policy)
    src.job = job
    if policy == "stop":
        await client.until("JSC paused")
        assert src.active == dst.active == 0
        assert client.event("BLOCK_JOB_ERROR")["action"] == "stop"
        assert await client.cmd("job-resume", id="m") == {}
    await complete(client)
    assert client.event("BLOCK_JOB_ERROR")["action"] == policy
    assert dst.max_active > 2
    assert src.violations == []
    assert bytes(dst.data) == bytes(src.data)


@pytest.mark.parametrize("seed", range(8))
async def test_outside_writes_ahead_of_the_copy_are_mirrored(
    client: Transcript, app: App, autojump_clock: MockClock, seed: int
) -> None:
    # Review R4: another process writes the source (the job shares
    # writing, as QEMU's does) where the copy has not been yet, holes
    # when the job walked the source at its start included.  QEMU's mirror
    # asks the block status as it goes and copies them; so must qmpd.
    rng = random.Random(seed)
    size = 8 * MiB
    src = add_mem(app, "src", size, rng, fill=rng.choice([0.1, 0.5]))
    src.shared = True
    # Mostly a target that reads as zero: only then does the job keep its
    # first walk of the source (a target holding data makes it copy all).
    dst = add_mem(app, "dst", size, rng, fill=0.3 if seed % 4 == 3 else 0.0)
    buf = 512 * KiB
    await start(client, app, granularity=64 * KiB, buf_size=buf, speed=1)
    # The job has taken its first window at most: at this speed the next
    # one waits for virtual days, and no time passes before this task
    # blocks.  Writes from outside, beyond that window:
    for _ in range(rng.randrange(1, 20)):
        offset = rng.randrange(buf, size - 1)
        length = min(rng.randrange(1, 300 * KiB), size - offset)
        data = rng.randbytes(length) if rng.random() < 0.8 else bytes(length)
        src.data[offset : offset + length] = data
    assert max(dst.started, default=0) < buf
    assert await client.cmd("block-job-set-speed", device="m", speed=0) == {}
    await complete(client)
    assert bytes(dst.data) == bytes(src.data)


@pytest.mark.parametrize("policy", ["report", "ignore", "stop"])
async def test_failed_confirmation_of_the_first_walk(
    client: Transcript, app: App, autojump_clock: MockClock, policy: str
) -> None:
    # The walk before ready that confirms the zero claims cut from the
    # first one fails: a source error under on-source-error.  Ready only
    # once it succeeded, and then with the outside write copied.
    rng = random.Random(5)
    src = add_mem(app, "src", 4 * MiB, rng, fill=0.3)
    src.shared = True
    dst = add_mem(app, "dst", 4 * MiB, rng, fill=0.0)
    await start(client, app, granularity=64 * KiB, buf_size=256 * KiB, on_source_error=policy)
    # Windows come from the first walk; the next query is the confirmation.
    src.status_fails = 1
    hole = next(p for p in range(256 * KiB, 4 * MiB, 64 * KiB) if not any(src.data[p : p + 4096]))
    src.data[hole : hole + 4096] = b"\x42" * 4096
    if policy == "report":
        await client.until("JSC null")
        assert client.event("BLOCK_JOB_COMPLETED")["error"] == "Input/output error"
        assert "BLOCK_JOB_READY" not in client.entries
        return
    if policy == "stop":
        await client.until("JSC paused")
        assert await client.cmd("job-resume", id="m") == {}
    await complete(client)
    assert client.event("BLOCK_JOB_ERROR") == {
        "device": "m", "operation": "read", "action": policy,
    }  # fmt: skip
    assert bytes(dst.data) == bytes(src.data)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
@pytest.mark.parametrize("auto_finalize", [True, False])
async def test_pivot_keeps_inflight_guest_writes(
    client: Transcript,
    app: App,
    autojump_clock: MockClock,
    seed: int,
    copy_mode: str,
    auto_finalize: bool,
) -> None:
    # Issue 10 defect 1: a guest keeps writing through its disk while
    # job-complete pivots it to the target.  Every write it saw complete
    # must be on the disk it ends up on, whichever side of the switch it
    # was issued on: the pivot must wait for the requests in flight (and
    # mirror them), and hold new ones until the disk is on the target.
    rng = random.Random(seed)
    size = 4 * MiB
    src = add_mem(app, "src", size, rng, fill=0.5)
    dst = add_mem(app, "dst", size, rng, fill=0.3)
    assert await client.cmd("device_add", driver="virtio-blk-pci", id="disk0", drive="src") == {}
    disk = app.devices.find_backend("/machine/peripheral/disk0/virtio-backend")
    model = bytearray(src.data)
    await start(client, app, granularity=64 * KiB, copy_mode=copy_mode, auto_finalize=auto_finalize)
    await client.until("BLOCK_JOB_READY")
    pivoted = trio.Event()

    async def guest() -> None:
        # One guest, one request at a time: what it reads back later is
        # exactly ``model``.  It goes on for a while after the pivot.
        after = 20
        while after:
            offset = rng.randrange(0, size - 1)
            length = min(rng.randrange(1, 200 * KiB), size - offset)
            data = rng.randbytes(length) if rng.random() < 0.8 else bytes(length)
            await disk.write(offset, data)
            model[offset : offset + length] = data
            if pivoted.is_set():
                after -= 1
            # A pause now and then: a background mirror converges only
            # when the guest is not writing all the time.
            await trio.sleep(rng.random() ** 2 * 0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(guest)
        await trio.sleep(rng.random() * 0.2)
        assert await client.cmd("job-complete", id="m") == {}
        if not auto_finalize:
            # The guest goes on writing while the job waits for finalize.
            await client.until("BLOCK_JOB_PENDING")
            await trio.sleep(rng.random() * 0.2)
            assert await client.cmd("job-finalize", id="m") == {}
        else:
            await client.until("JSC null")
        assert disk.node is dst
        pivoted.set()
    assert client.event("BLOCK_JOB_COMPLETED").get("error") is None
    assert bytes(dst.data) == bytes(model)


@pytest.mark.parametrize(
    ("copy_mode", "cancelled_in"),
    [("background", "source"), ("write-blocking", "source"), ("write-blocking", "target")],
)
async def test_cancelled_guest_write_is_still_mirrored(
    client: Transcript, app: App, autojump_clock: MockClock, copy_mode: str, cancelled_in: str
) -> None:
    # A guest write cancelled once its data is on the source, before the
    # job followed it up (re-dirtied the range, or wrote it to the target):
    # the source differs from the target there, so the range must be
    # copied again.  No session can cancel a guest write today (commands
    # are shielded), so the write is cancelled here in-process.
    rng = random.Random(4)
    size = 4 * MiB
    src = add_mem(app, "src", size, rng, fill=0.5)
    dst = add_mem(app, "dst", size, rng, fill=0.0)
    job = await start(client, app, granularity=64 * KiB, copy_mode=copy_mode)
    await client.until("BLOCK_JOB_READY")
    flt = job.filter
    assert flt is not None
    app.graph.attach(flt, NodeUser("guest", BACKEND_KIND, DISK_PERM, DISK_SHARED | Perm.WRITE))
    if cancelled_in == "source":
        src.hold = trio.Event()
    else:
        dst.gate = trio.Event()
    offset, data = MiB + 4 * KiB, rng.randbytes(100 * KiB)

    async def guest(scope: trio.CancelScope) -> None:
        with scope:
            await flt.write(offset, data)

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guest, scope)
        if cancelled_in == "source":
            await src.landed.wait()
        else:
            await dst.until_active(1)
        assert bytes(src.data[offset : offset + len(data)]) == data
        scope.cancel()
    assert scope.cancelled_caught
    src.hold = dst.gate = None
    assert bytes(dst.data[offset : offset + len(data)]) != data
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert client.event("BLOCK_JOB_COMPLETED").get("error") is None
    assert bytes(dst.data) == bytes(src.data)
