"""Ending the daemon (``quit``, a signal) closes the block graph as QEMU does.

Against a real qmpd process: guest writes go on through a device and
through HMP ``qemu-io`` on a node while a mirror runs, and the daemon is
told to stop in the middle of them.  Afterwards, read with QEMU's own
tools: every write the daemon acknowledged is in its image, every image
passes ``qemu-img check`` with no leak and no dirty bit, and the exit
status is 0.  What a client sees on the way out (the jobs' cancel events
before the reply to ``quit``) is compared with QEMU 11.1's
qemu-storage-daemon when it is installed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from qmpd.block.qcow2.format import parse_header
from tests.mirror.procs import SyncClient
from tests.support.daemons import DaemonKind, qmpd_kind, qsd_new_kind, running, why_missing
from tests.support.qemu_tools import system_tool, why_system_missing

QEMU_IMG = system_tool("qemu-img")
QEMU_IO = system_tool("qemu-io")
needs_qemu = pytest.mark.skipif(
    QEMU_IMG is None or QEMU_IO is None,
    reason=why_system_missing("qemu-img" if QEMU_IMG is None else "qemu-io"),
)

MiB = 1 << 20
GiB = 1 << 30
#: One guest write; each lands in clusters no earlier write touched.
WRITE = 64 * 1024
#: Writes acknowledged before the daemon is told to stop.
BEFORE_STOP = 6
#: Writes at most, to each image (they stay apart: see GuestWriter).
WRITES_PER_IMAGE = 16


def tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def qcow2(path: Path, size: int, fill: int = 0) -> Path:
    assert QEMU_IMG is not None
    assert QEMU_IO is not None
    assert tool(QEMU_IMG, "create", "-f", "qcow2", str(path), str(size)).returncode == 0
    if fill:
        # Data for a mirror to copy (slowly: it is rate-limited).
        result = tool(QEMU_IO, "-f", "qcow2", "-c", f"write -P 0x77 0 {fill}", str(path))
        assert result.returncode == 0, result.stderr
    return path


def assert_clean(path: Path) -> None:
    """qemu-img check finds nothing, and the image is not left dirty."""
    assert QEMU_IMG is not None
    result = tool(QEMU_IMG, "check", "--output=json", str(path))
    assert result.returncode == 0, (path.name, result.stdout, result.stderr)
    report = json.loads(result.stdout)
    for key in ("check-errors", "leaks", "corruptions"):
        assert report.get(key, 0) == 0, (path.name, report)
    assert not parse_header(path.read_bytes()[:4096]).dirty, path.name


def assert_present(path: Path, writes: list[tuple[int, int]]) -> None:
    assert QEMU_IO is not None
    args = [QEMU_IO, "-r", "-f", "qcow2"]
    for offset, pattern in writes:
        args += ["-c", f"read -P {pattern} {offset} {WRITE}"]
    result = tool(*args, str(path))
    assert result.returncode == 0, result.stderr
    assert "failed" not in result.stdout, (path.name, result.stdout)


def hmp_write(target: str, offset: int, pattern: int) -> str:
    return f'qemu-io {target} "write -P {pattern} {offset} {WRITE}"'


class GuestWriter(threading.Thread):
    """Writes, one after the other, alternately through the device ``vd0``
    and through HMP qemu-io on the node ``other``, each to fresh clusters
    (a new L2 table, and so a new L1 entry, every 512 MiB), until the
    daemon goes away.  Keeps what was acknowledged."""

    def __init__(self, socket: str) -> None:
        super().__init__(daemon=True)
        self.client = SyncClient(socket)
        self.acked: dict[str, list[tuple[int, int]]] = {"vd0": [], "other": []}
        self.enough = threading.Event()

    def run(self) -> None:
        try:
            for i in range(2 * WRITES_PER_IMAGE):
                target = ("-d /machine/peripheral/vd0/virtio-backend", "other")[i % 2]
                # 127 MiB + 64 KiB apart: spread over both images' 2 GiB.
                offset = i // 2 * (127 * MiB + WRITE)
                pattern = i % 250 + 1
                reply = self.client.execute(
                    "human-monitor-command", command_line=hmp_write(target, offset, pattern)
                )
                assert "wrote" in reply, reply
                self.acked["other" if target == "other" else "vd0"].append((offset, pattern))
                if i + 1 >= BEFORE_STOP:
                    self.enough.set()
        except (EOFError, OSError):
            pass  # the daemon has gone
        finally:
            self.enough.set()
            self.client.close()


@needs_qemu
@pytest.mark.parametrize("job", ["none", "mirror", "ready-mirror"])
@pytest.mark.parametrize("how", ["quit", "SIGTERM"])
def test_stopping_keeps_acknowledged_writes_and_leaves_images_clean(
    tmp_path: Path, how: str, job: str
) -> None:
    src = qcow2(tmp_path / "src.qcow2", 2 * GiB, fill=32 * MiB if job != "none" else 0)
    other = qcow2(tmp_path / "other.qcow2", 2 * GiB)
    dst = qcow2(tmp_path / "dst.qcow2", 2 * GiB)
    with running(qmpd_kind()) as daemon:
        qmp = SyncClient(daemon.sockets[0])
        for name, path in (("src", src), ("other", other), ("dst", dst)):
            file = {"driver": "file", "filename": str(path)}
            assert qmp.execute("blockdev-add", driver="qcow2", node_name=name, file=file) == {}
        assert qmp.execute("device_add", driver="virtio-blk-pci", id="vd0", drive="src") == {}
        if job == "mirror":  # still copying, rate-limited
            reply = qmp.execute(
                "blockdev-mirror", job_id="m", device="src", target="dst", sync="full", speed=MiB
            )
            assert reply == {}
        elif job == "ready-mirror":  # every guest write goes to both images
            reply = qmp.execute(
                "blockdev-mirror", job_id="m", device="src", target="dst", sync="full",
                copy_mode="write-blocking",
            )  # fmt: skip
            assert reply == {}
            qmp.wait("BLOCK_JOB_READY")
        writer = GuestWriter(daemon.sockets[0])
        writer.start()
        writer.enough.wait()
        if how == "quit":
            assert qmp.execute("quit") == {}
        else:
            daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=120) == 0, daemon.stderr()
        writer.join()
        qmp.close()
    assert len(writer.acked["vd0"]) + len(writer.acked["other"]) >= BEFORE_STOP
    assert_present(src, writer.acked["vd0"])
    assert_present(other, writer.acked["other"])
    if job == "ready-mirror":  # write-blocking: acknowledged once on both
        assert_present(dst, writer.acked["vd0"])
    for path in (src, other, dst):
        assert_clean(path)


def quit_transcript(kind: DaemonKind, tmp_path: Path, how: str, ready: bool) -> list[str]:
    """What a client sees after a mirror runs (or is ready) and the daemon
    is told to stop: the messages' short forms, up to the end of the
    connection."""
    src, dst = tmp_path / f"{kind.name}-src.img", tmp_path / f"{kind.name}-dst.img"
    with open(src, "wb") as f:
        f.truncate(64 * MiB)
        f.write(b"\x55" * 16 * MiB)
    with open(dst, "wb") as f:
        f.truncate(64 * MiB)
    with running(kind) as daemon:
        qmp = SyncClient(daemon.sockets[0])
        for name, path in (("s", src), ("t", dst)):
            reply = qmp.execute("blockdev-add", driver="file", node_name=name, filename=str(path))
            assert reply == {}
        speed = 0 if ready else MiB
        args: dict[str, Any] = {"job_id": "j", "device": "s", "target": "t", "sync": "full"}
        assert qmp.execute("blockdev-mirror", speed=speed, **args) == {}
        if ready:
            qmp.wait("BLOCK_JOB_READY")
        else:
            qmp.wait("JOB_STATUS_CHANGE", "running")
        start = len(qmp.log)
        if how == "quit":
            qmp.raw.send(b'{"execute": "quit"}')
        else:
            daemon.proc.send_signal(signal.Signals[how])
        try:
            while True:
                qmp._read()
        except EOFError:
            pass
        assert daemon.proc.wait(timeout=60) == 0
        qmp.close()
        return qmp.log[start:]


def _kinds() -> list[Any]:
    qsd = qsd_new_kind()
    skip = pytest.mark.skipif(qsd is None, reason=why_missing("qsd-new"))
    return [pytest.param(qmpd_kind(), id="qmpd"), pytest.param(qsd, id="qsd-11.1", marks=skip)]


@pytest.mark.parametrize("kind", _kinds())
@pytest.mark.parametrize("ready", [False, True], ids=["running", "ready"])
@pytest.mark.parametrize("how", ["quit", "SIGTERM", "SIGINT", "SIGHUP"])
def test_stopping_cancels_jobs_as_qemu_does(
    tmp_path: Path, kind: DaemonKind, ready: bool, how: str
) -> None:
    """QEMU drains (the job pauses and goes on), cancels each job and waits
    for it to end, and answers ``quit`` after that."""
    before, after = ("standby", "ready") if ready else ("paused", "running")
    expected = [
        f"JSC {before}",
        f"JSC {after}",
        "JSC aborting",
        "BLOCK_JOB_CANCELLED",
        "JSC concluded",
        "JSC null",
    ]
    if how == "quit":
        expected.append("return")
    assert quit_transcript(kind, tmp_path, how, ready) == expected
