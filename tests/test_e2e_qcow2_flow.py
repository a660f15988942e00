"""Issue 5's management flow, end to end over qmpd's real socket.

What a libvirt-like client does to copy a running guest's disk into a new
qcow2 image: ``blockdev-create`` a file, ``blockdev-add`` it,
``blockdev-create`` a qcow2 on it, ``blockdev-add`` that, then
``blockdev-mirror`` the guest's disk into it while the guest writes
(``qemu-io`` through the device over HMP, as iotests do), first mid-copy
and again once the job is ready, and at last complete the job (the disk
pivots to the new image) or cancel it softly (the image stays a consistent
copy).  The client is qemu.qmp's QMPClient; qmpd runs as a process, one
for the module, each case using names of its own.

The source is a raw file, a qcow2 image, or a qcow2 image over a qcow2
backing file, all written by QEMU's own tools (11.1 where set up, else
Debian's); the target qcow2 is created with preallocation off or metadata.
After every case QEMU's tools judge the result: ``qemu-img compare`` finds
source and target identical, ``qemu-img check`` finds the target clean,
and the zero state held: the new image was known to read as zero, so the
job wrote about the source's data, skipped zero regions
(``x-zero-stats``), and the target holds about the data, not the size.

The mirror starts limited to one byte per second: it copies the first
window holding data and then sleeps until the limit is lifted, so the
guest's first writes land while the job is certainly not ready.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from tests.qcow2.conftest import QEMU_IMG, QEMU_IMG_NEW, QEMU_IO, QEMU_IO_NEW, check_clean
from tests.support.daemons import Daemon, qmpd_kind, running
from tests.support.qemu_tools import why_new_missing, why_system_missing

KiB = 1 << 10
MiB = 1 << 20
SIZE = 16 * MiB
#: The mirror's granularity (the qcow2 cluster size too) and window: small,
#: so that the rate-limited job stops after the first window of data.
GRANULARITY = 64 * KiB
BUF_SIZE = 256 * KiB
#: Seconds one reply or event may take before the case fails (not hangs).
TIMEOUT = 15.0

#: QEMU 11.1's tools where set up (they open files under /tmp only, where
#: pytest's tmp_path is), else Debian's.
IMG_TOOL = QEMU_IMG_NEW or QEMU_IMG
IO_TOOL = QEMU_IO_NEW or QEMU_IO
needs_tools = pytest.mark.skipif(
    IMG_TOOL is None or IO_TOOL is None,
    reason=f"{why_new_missing('qemu-img')}; {why_system_missing('qemu-img')}",
)

#: What the source holds before the mirror (qemu-io commands).
DATA = ["write -P 0x11 1M 1M", "write -P 0x22 6208k 192k", "write -P 0x33 15M 64k"]
#: The same, split over a backing file and the top image: the top adds
#: data, hides some of the backing's with its own, and some with a zero
#: cluster.
BASE = ["write -P 0x11 1M 1M", "write -P 0x33 15M 64k"]
TOP = ["write -P 0x22 6208k 192k", "write -P 0x44 1536k 64k", "write -z 1M 64k"]
#: The guest's writes mid-copy.  By then the job has usually skipped 0..1M
#: as zero and copied the first data window (1M..1.25M): 1088k re-dirties a
#: copied range, 8M is a zero region, 6208k zeroes data not yet copied, and
#: 40k is clean, so write-blocking writes it through to the target.
MID_COPY = [
    "write -P 0x55 1088k 64k",
    "write -P 0x66 8M 128k",
    "write -z 6208k 64k",
    "write -P 0x77 40k 4k",
]
#: Once ready: a new data region, a partial cluster over data, a partial
#: zero write.
AFTER_READY = ["write -P 0x88 12M 64k", "write -P 0x99 1M 4k", "write -z 15M 32k"]
#: The guest disk's device model, by source kind.
DEVICES = {"raw": "virtio-blk-pci", "qcow2": "scsi-hd", "backed": "virtio-blk-pci"}
#: A mirror's events from start to end, for job-complete and for the soft
#: cancel of a ready job alike (qmp-facts §4).
MIRROR_EVENTS = [
    "JSC created", "JSC running", "JSC ready", "BLOCK_JOB_READY", "JSC waiting",
    "JSC pending", "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Case:
    source: str  # raw, qcow2, backed
    prealloc: str  # the target's: off, metadata
    copy_mode: str  # background, write-blocking
    finish: str  # complete, cancel

    @property
    def source_fmt(self) -> str:
        return "raw" if self.source == "raw" else "qcow2"


def cases() -> Iterator[object]:
    for source, prealloc, mode, finish in itertools.product(
        ("raw", "qcow2", "backed"),
        ("off", "metadata"),
        ("background", "write-blocking"),
        ("complete", "cancel"),
    ):
        yield pytest.param(
            Case(source, prealloc, mode, finish), id=f"{source}-{prealloc}-{mode}-{finish}"
        )


# ------------------------------------------------------------ QEMU's tools


def run_tool(exe: str | None, *args: str) -> str:
    """Run a QEMU tool; its stdout.  Fails the test on any error."""
    assert exe is not None
    result = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    out = result.stdout + result.stderr
    assert result.returncode == 0, (args, out)
    assert "error" not in out.lower(), (args, out)
    return result.stdout


def qemu_io(path: Path, fmt: str, commands: list[str]) -> None:
    run_tool(IO_TOOL, "-f", fmt, *[a for c in commands for a in ("-c", c)], str(path))


def make_source(kind: str, workdir: Path, data: list[str] = DATA) -> Path:
    """The source image (``raw``, ``qcow2``, ``backed``), written by QEMU's tools."""
    if kind == "backed":
        base = workdir / "base.qcow2"
        run_tool(IMG_TOOL, "create", "-f", "qcow2", str(base), str(SIZE))
        qemu_io(base, "qcow2", BASE)
        path = workdir / "top.qcow2"
        run_tool(IMG_TOOL, "create", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(path))
        qemu_io(path, "qcow2", TOP)
        return path
    path = workdir / f"src.{kind}"
    run_tool(IMG_TOOL, "create", "-f", kind, str(path), str(SIZE))
    qemu_io(path, kind, data)
    return path


def data_bytes(path: Path, fmt: str) -> int:
    """Bytes ``qemu-img map`` shows as data not reading as zero (through
    the backing chain)."""
    entries = json.loads(run_tool(IMG_TOOL, "map", "--output=json", "-f", fmt, str(path)))
    return sum(e["length"] for e in entries if e["data"] and not e["zero"])


def compare(src: Path, fmt: str, dst: Path) -> str:
    assert IMG_TOOL is not None
    result = subprocess.run(
        [IMG_TOOL, "compare", "-f", fmt, "-F", "qcow2", str(src), str(dst)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return (result.stdout + result.stderr).strip()


# ------------------------------------------------------------ the client


class Client:
    """A QMPClient and what every step needs: replies, events, the guest."""

    def __init__(self, qmp: QMPClient) -> None:
        self.qmp = qmp
        #: Events read and not yet taken by :meth:`event`.
        self.pending: list[dict[str, Any]] = []
        #: Every event, short: "JSC <status>" or the name, with its job.
        self.log: list[tuple[str, str]] = []

    async def cmd(self, name: str, **args: Any) -> Any:
        """The command's ``return``; an error reply raises ExecuteError."""
        arguments = {k.replace("_", "-"): v for k, v in args.items()}
        return await asyncio.wait_for(self.qmp.execute(name, arguments), TIMEOUT)

    async def event(self, name: str, **data: Any) -> dict[str, Any]:
        """The first event ``name`` whose data has ``data`` (reading on as
        needed); it and the events before it are taken."""

        def matches(m: dict[str, Any]) -> bool:
            return m["event"] == name and all(m["data"].get(k) == v for k, v in data.items())

        while True:
            for i, message in enumerate(self.pending):
                if matches(message):
                    del self.pending[: i + 1]
                    return message
            message = dict(await asyncio.wait_for(self.qmp.events.get(), TIMEOUT))
            self.pending.append(message)
            event, info = message["event"], message["data"]
            short = f"JSC {info['status']}" if event == "JOB_STATUS_CHANGE" else event
            self.log.append((short, info.get("id", info.get("device", ""))))

    def events_of(self, job: str) -> list[str]:
        return [short for short, who in self.log if who == job]

    async def create(self, job: str, options: dict[str, Any]) -> None:
        """blockdev-create to its end, which must be a success."""
        assert await self.cmd("blockdev-create", job_id=job, options=options) == {}
        await self.event("JOB_STATUS_CHANGE", id=job, status="concluded")
        (info,) = [j for j in await self.cmd("query-jobs") if j["id"] == job]
        assert "error" not in info, info
        assert await self.cmd("job-dismiss", id=job) == {}

    async def guest(self, qdev: str, command: str) -> None:
        line = f'qemu-io -d {qdev} "{command}"'
        out = await self.cmd("human-monitor-command", command_line=line)
        assert "wrote" in out, (command, out)

    async def block_job(self, job: str) -> dict[str, Any]:
        (info,) = [j for j in await self.cmd("query-block-jobs") if j["device"] == job]
        result: dict[str, Any] = info
        return result


async def make_target(client: Client, n: int, dst: Path, prealloc: str) -> dict[str, Any]:
    """The management flow's target: a file, then a qcow2 on it, both
    created and added (``tf<n>``, ``tgt<n>``).  Its x-query-zero-state."""
    tf, tgt = f"tf{n}", f"tgt{n}"
    await client.create(f"c{n}", {"driver": "file", "filename": str(dst), "size": 0})
    assert await client.cmd("blockdev-add", driver="file", node_name=tf, filename=str(dst)) == {}
    options = {"driver": "qcow2", "file": tf, "size": SIZE, "preallocation": prealloc}
    await client.create(f"q{n}", options)
    assert await client.cmd("blockdev-add", driver="qcow2", node_name=tgt, file=tf) == {}
    (state,) = await client.cmd("x-query-zero-state", node_name=tgt)
    result: dict[str, Any] = state
    return result


async def add_source(client: Client, n: int, src: Path, fmt: str) -> None:
    file = {"driver": "file", "filename": str(src)}
    assert await client.cmd("blockdev-add", driver=fmt, node_name=f"src{n}", file=file) == {}


async def remove_nodes(client: Client, n: int) -> set[str]:
    """blockdev-del the case's nodes; the names still in the graph."""
    for name in (f"tgt{n}", f"tf{n}", f"src{n}"):
        assert await client.cmd("blockdev-del", node_name=name) == {}
    names = {node["node-name"] for node in await client.cmd("query-named-block-nodes")}
    return names & {f"tgt{n}", f"tf{n}", f"src{n}"}


async def flow(client: Client, n: int, case: Case, src: Path, dst: Path) -> dict[str, Any]:
    """The whole flow; what the test checks afterwards."""
    seen: dict[str, Any] = {}
    job = f"m{n}"
    seen["target_zero"] = await make_target(client, n, dst, case.prealloc)
    await add_source(client, n, src, case.source_fmt)

    model = DEVICES[case.source]
    bus: dict[str, str] = {}
    if model == "scsi-hd":
        assert await client.cmd("device_add", driver="virtio-scsi-pci", id=f"scsi{n}") == {}
        bus["bus"] = f"scsi{n}.0"
    assert await client.cmd("device_add", driver=model, id=f"disk{n}", drive=f"src{n}", **bus) == {}
    blocks = await client.cmd("query-block")
    (qdev,) = [b["qdev"] for b in blocks if b["inserted"]["node-name"] == f"src{n}"]

    assert await client.cmd(
        "blockdev-mirror", job_id=job, device=f"src{n}", target=f"tgt{n}", sync="full",
        speed=1, granularity=GRANULARITY, buf_size=BUF_SIZE, copy_mode=case.copy_mode,
    ) == {}  # fmt: skip
    mid = await client.block_job(job)
    seen["mid"] = (mid["status"], mid["ready"])
    for command in MID_COPY:
        await client.guest(qdev, command)
    assert await client.cmd("block-job-set-speed", device=job, speed=0) == {}
    await client.event("BLOCK_JOB_READY", device=job)
    for command in AFTER_READY:
        await client.guest(qdev, command)
    seen["ready"] = await client.block_job(job)

    if case.finish == "complete":
        assert await client.cmd("job-complete", id=job) == {}
    else:
        # A soft cancel: the job is ready, so it ends without a pivot.
        assert await client.cmd("block-job-cancel", device=job) == {}
    seen["completed"] = (await client.event("BLOCK_JOB_COMPLETED", device=job))["data"]
    await client.event("JOB_STATUS_CHANGE", id=job, status="null")
    seen["events"] = client.events_of(job)
    blocks = await client.cmd("query-block")
    (seen["inserted"],) = [b["inserted"]["node-name"] for b in blocks if b["qdev"] == qdev]

    assert await client.cmd("device_del", id=f"disk{n}") == {}
    if model == "scsi-hd":
        assert await client.cmd("device_del", id=f"scsi{n}") == {}
    seen["left"] = await remove_nodes(client, n)
    return seen


async def connected(socket: str, n: int, body: Any, *args: Any) -> dict[str, Any]:
    """``await body(client, n, *args)`` on a fresh QMP connection."""
    qmp = QMPClient(f"flow-{n}")
    await qmp.connect(socket)
    try:
        result: dict[str, Any] = await body(Client(qmp), n, *args)
        return result
    finally:
        await qmp.disconnect()


# ------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running(qmpd_kind()) as d:
        yield d


#: Node, device and job names differ per case: a failed case cannot break
#: the next ones on the shared daemon.
_numbers = itertools.count()


@pytest.mark.qemu
@needs_tools
@pytest.mark.parametrize("case", list(cases()))
def test_qcow2_flow(case: Case, daemon: Daemon, tmp_path: Path) -> None:
    src = make_source(case.source, tmp_path)
    dst = tmp_path / "dst.qcow2"
    data_before = data_bytes(src, case.source_fmt)
    n = next(_numbers)
    seen = asyncio.run(connected(daemon.sockets[0], n, flow, case, src, dst))

    # The freshly created qcow2 was known to read as zero, both ways.
    zero = seen["target_zero"]
    assert zero["create"]["value"] is True, zero
    assert zero["open"]["value"] is True, zero
    # The guest's first writes came while the job was still copying.
    assert seen["mid"] == ("running", False)
    ready = seen["ready"]
    assert (ready["status"], ready["ready"]) == ("ready", True), ready
    assert ready["actively-synced"] is (case.copy_mode == "write-blocking"), ready
    assert "error" not in seen["completed"], seen["completed"]
    assert seen["events"] == MIRROR_EVENTS
    # job-complete pivots the disk onto the target; a soft cancel leaves it.
    assert seen["inserted"] == (f"tgt{n}" if case.finish == "complete" else f"src{n}")
    assert seen["left"] == set()

    # QEMU's tools: the same content, a clean image.
    assert compare(src, case.source_fmt, dst) == "Images are identical."
    check_clean(dst)

    # The zero state held.  The job wrote about the source's data (the
    # data that was there, plus what the guest wrote, some of it twice),
    # not its size, and skipped zero regions rather than writing them.
    data_after = data_bytes(src, case.source_fmt)
    stats = ready["x-zero-stats"]
    assert stats["skipped"] > 0, stats
    assert data_before <= stats["copied"] <= data_after + 512 * KiB, stats
    # Zeroed: the guest's zero writes, and the holes of a chunk recopied
    # whose zero bit a data write cleared (56k around the guest's 4k at 40k
    # on a raw source, which allocates its first 4k), each once: the
    # confirmation before ready does not take the guest's writes for
    # another process's (test_guest_writes_are_not_copied_again_by_the_
    # confirmation).  Whether the copy of the writes after ready is counted
    # yet varies, which the bound allows for.
    assert stats["zeroed"] <= 128 * KiB, stats
    # The target holds the data (to a few clusters: qemu-io's 4k writes
    # allocate whole 64k clusters), not the size; metadata is small.
    assert abs(data_bytes(dst, "qcow2") - data_after) <= 4 * GRANULARITY
    assert dst.stat().st_blocks * 512 <= data_after + 512 * KiB


async def zero_stats(client: Client, n: int, src: Path, fmt: str, dst: Path) -> dict[str, Any]:
    """Mirror ``src`` into a fresh qcow2 (no guest); x-zero-stats at ready."""
    await make_target(client, n, dst, "off")
    await add_source(client, n, src, fmt)
    job = f"m{n}"
    assert await client.cmd(
        "blockdev-mirror", job_id=job, device=f"src{n}", target=f"tgt{n}", sync="full"
    ) == {}  # fmt: skip
    await client.event("BLOCK_JOB_READY", device=job)
    info = await client.block_job(job)
    assert await client.cmd("job-cancel", id=job) == {}
    await client.event("JOB_STATUS_CHANGE", id=job, status="null")
    assert await remove_nodes(client, n) == set()
    stats: dict[str, Any] = info["x-zero-stats"]
    return stats


@pytest.mark.qemu
@needs_tools
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_skipped_counts_every_zero_byte(fmt: str, daemon: Daemon, tmp_path: Path) -> None:
    """The same 1 MiB of data in 16 MiB, as raw and as qcow2: every byte
    the job did not write because the fresh target reads as zero is
    ``skipped``, whatever the source's format."""
    src = make_source(fmt, tmp_path, ["write -P 0x11 1M 1M"])
    n = next(_numbers)
    stats = asyncio.run(
        connected(daemon.sockets[0], n, zero_stats, src, fmt, tmp_path / "dst.qcow2")
    )
    # qemu-img allocates a raw file's first 4 KiB: the copy may read it as data.
    assert MiB <= stats["copied"] <= MiB + 4 * KiB, stats
    assert stats["zeroed"] == 0, stats
    assert stats["copied"] + stats["skipped"] == SIZE, stats
