"""Permissions: every party on a node and below it is checked, as in QEMU.

Each test plays one script of QMP commands on qmpd and expects QEMU 11.1's
replies, word for word; :func:`test_texts_match_qemu` plays the same
scripts on QEMU 11.1 (qemu-storage-daemon, or the system emulator where a
script plugs devices) and checks that QEMU still gives those texts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.daemons import wait_for_socket
from tests.support.qemu_tools import new_tool, system_tool, why_new_missing, why_system_missing
from tests.support.transcript import Transcript

MiB = 1 << 20
QEMU_IMG = system_tool("qemu-img")
QEMU_IO = system_tool("qemu-io")
needs_qemu_img = pytest.mark.skipif(QEMU_IMG is None, reason=why_system_missing("qemu-img"))
needs_qemu_io = pytest.mark.skipif(QEMU_IO is None, reason=why_system_missing("qemu-io"))

#: One step: (command, arguments, expected reply or None to accept any).
Step = tuple[str, dict[str, Any], Any]


def conflict(node: str, perms: str, required: str, unshared: str) -> str:
    """QEMU's permission conflict text; parties as ``who (role)``."""
    (r_who, r_role), (u_who, u_role) = (p.rsplit(" as ", 1) for p in (required, unshared))
    return (
        f"Permission conflict on node '{node}': permissions '{perms}' are both required by "
        f"{r_who} (uses node '{node}' as '{r_role}' child) and unshared by {u_who} "
        f"(uses node '{node}' as '{u_role}' child)."
    )


def hmp(line: str, expected: str) -> Step:
    return ("human-monitor-command", {"command_line": line}, expected)


def mirror_setup(work: Path) -> list[Step]:
    """Raw source and target over files, mirror ``j`` (wait for ready after)."""
    steps: list[Step] = []
    for name in ("src", "dst"):
        with (work / f"{name}.img").open("wb") as f:
            f.truncate(8 * MiB)
        file = {"driver": "file", "node-name": f"{name}f", "filename": str(work / f"{name}.img")}
        steps.append(("blockdev-add", file, {}))
        steps.append(("blockdev-add", {"driver": "raw", "node-name": name, "file": f"{name}f"}, {}))
    steps.append(
        ("blockdev-mirror", {"job-id": "j", "device": "src", "target": "dst", "sync": "full"}, {})
    )
    return steps


UNNAMED = "an unnamed block device as root"


def resize_source_steps() -> list[Step]:
    """Defect 11: the mirror's source may not be resized, directly or below."""
    return [
        hmp(
            'qemu-io src "truncate 64M"',
            conflict("src", "resize", UNNAMED, "mirror job 'j' as source") + "\r\n",
        ),
        hmp(
            'qemu-io srcf "truncate 64M"',
            conflict("srcf", "resize", UNNAMED, "node 'src' as file") + "\r\n",
        ),
        # qemu-io's truncate asks for write too, which the target refuses.
        hmp(
            'qemu-io dstf "truncate 64M"',
            conflict("dstf", "write, resize", UNNAMED, "node 'dst' as file") + "\r\n",
        ),
    ]


def target_writer_steps() -> list[Step]:
    """Defect 18: nobody but the job writes the mirror's target, whether
    through it, below it, or through a second node on its file."""
    vd = "block device '/machine/peripheral/vd/virtio-backend' as root"
    return [
        hmp(
            'qemu-io dst "write 0 4k"',
            conflict("dst", "write", UNNAMED, UNNAMED) + "\r\n",
        ),
        hmp(
            'qemu-io dstf "write 0 4k"',
            conflict("dstf", "write", UNNAMED, "node 'dst' as file") + "\r\n",
        ),
        ("blockdev-add", {"driver": "raw", "node-name": "dst2", "file": "dstf"}, {}),
        hmp(
            'qemu-io dst2 "write 0 4k"',
            conflict("dstf", "write", "node 'dst2' as file", "node 'dst' as file") + "\r\n",
        ),
        (
            "device_add",
            {"driver": "virtio-blk-pci", "id": "vd", "drive": "dst2"},
            {"error": conflict("dstf", "write", "node 'dst' as file", "node 'dst2' as file")},
        ),
        (
            "device_add",
            {"driver": "virtio-blk-pci", "id": "vd", "drive": "dst"},
            {"error": conflict("dst", "write", UNNAMED, vd)},
        ),
    ]


def create_steps(work: Path) -> list[Step]:
    """Defect 5: blockdev-create may not format a node in use."""
    image, other = work / "a.qcow2", work / "b.qcow2"
    assert QEMU_IMG is not None
    for path in (image, other):
        subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(path), "1M"], check=True)
    read_only = {"driver": "qcow2", "node-name": "qr", "read-only": True,
                 "file": {"driver": "file", "filename": str(other)}}  # fmt: skip
    return [
        ("blockdev-add", {"driver": "file", "node-name": "f", "filename": str(image)}, {}),
        ("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f"}, {}),
        ("blockdev-add", {"driver": "raw", "node-name": "r", "file": "f"}, {}),
        # Read-only, the format node still keeps everybody from writing.
        ("blockdev-add", read_only, {}),
    ]


CREATE_ERRORS = {
    "c1": conflict("f", "write, resize", UNNAMED, "node 'q' as file"),
    "c2": conflict("f", "write, resize", "node 'r' as file", "node 'q' as file"),
    "c3": 'Failed to get "write" lock',
}


def create_job_steps(work: Path) -> list[Step]:
    steps: list[Step] = []
    for job, file in (("c1", "f"), ("c2", "r")):
        options = {"driver": "qcow2", "file": file, "size": MiB}
        steps.append(("blockdev-create", {"job-id": job, "options": options}, {}))
    options = {"driver": "file", "filename": str(work / "b.qcow2"), "size": 0}
    steps.append(("blockdev-create", {"job-id": "c3", "options": options}, {}))
    return steps


# ------------------------------------------------------------------ qmpd


async def play(client: Transcript, steps: list[Step]) -> None:
    for command, args, expected in steps:
        reply = await client.cmd(command, **{k.replace("-", "_"): v for k, v in args.items()})
        if isinstance(reply, dict) and "error" in reply:
            reply = {"error": reply["error"]["desc"]}
        assert expected is None or reply == expected, (command, args)


async def concluded(client: Transcript, job: str) -> None:
    def done(m: dict[str, Any]) -> bool:
        return m.get("data") == {"id": job, "status": "concluded"}

    # A job may conclude before the reply to the command that started it.
    if not any(done(m) for m in client.messages):
        await client.until(done)


async def until_ready(client: Transcript) -> None:
    await client.until("BLOCK_JOB_READY")


async def test_mirror_source_cannot_be_resized(client: Transcript, tmp_path: Path) -> None:
    await play(client, mirror_setup(tmp_path))
    await until_ready(client)
    await play(client, resize_source_steps())
    assert await client.cmd("human-monitor-command", command_line='qemu-io src "length"') == (
        "8 MiB\r\n"
    )
    assert (tmp_path / "src.img").stat().st_size == 8 * MiB


async def test_mirror_target_refuses_other_writers(client: Transcript, tmp_path: Path) -> None:
    await play(client, mirror_setup(tmp_path))
    await until_ready(client)
    await play(client, target_writer_steps())
    # Nothing but the mirror reached the target: complete, then compare.
    await client.cmd("job-complete", id="j")
    await client.until("JSC null")
    assert (tmp_path / "src.img").read_bytes() == (tmp_path / "dst.img").read_bytes()


@needs_qemu_img
async def test_blockdev_create_refuses_a_live_image(client: Transcript, tmp_path: Path) -> None:
    await play(client, create_steps(tmp_path))
    before = [(tmp_path / name).read_bytes() for name in ("a.qcow2", "b.qcow2")]
    await play(client, create_job_steps(tmp_path))
    for job in CREATE_ERRORS:
        await concluded(client, job)
    jobs = {j["id"]: j for j in await client.cmd("query-jobs")}
    assert {job: jobs[job].get("error") for job in CREATE_ERRORS} == CREATE_ERRORS
    assert [(tmp_path / name).read_bytes() for name in ("a.qcow2", "b.qcow2")] == before
    out = await client.cmd("human-monitor-command", command_line='qemu-io q "read -P 0 0 1M"')
    assert out.startswith("read 1048576/1048576 bytes"), out


# ------------------------------------------------------------- defect 9


async def outside_write(image: Path, fmt: str = "qcow2") -> subprocess.CompletedProcess[bytes]:
    """Another process (qemu-io) writes the image."""
    assert QEMU_IO is not None
    argv = [QEMU_IO, "-f", fmt, "-c", "write -P 0x55 0 64k", str(image)]
    return await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)


async def read_only_qcow2(client: Transcript, tmp_path: Path, **options: Any) -> Path:
    """A new qcow2 image (by qemu-img) added read-only as node ``q``."""
    assert QEMU_IMG is not None
    image = tmp_path / "a.qcow2"
    await trio.run_process([QEMU_IMG, "create", "-q", "-f", "qcow2", str(image), "4M"])
    file = {"driver": "file", "filename": str(image)}
    assert await client.cmd(
        "blockdev-add", driver="qcow2", node_name="q", read_only=True, file=file, **options
    ) == {}  # fmt: skip
    return image


@needs_qemu_img
@needs_qemu_io
async def test_read_only_qcow2_keeps_outside_writers_out(
    client: Transcript, tmp_path: Path
) -> None:
    image = await read_only_qcow2(client, tmp_path)
    run = await outside_write(image)
    assert run.returncode != 0
    assert b'Failed to get "write" lock' in run.stderr, run.stderr
    # Not even as raw bytes: the format node never shares writing its file.
    run = await outside_write(image, "raw")
    assert b'Failed to get "write" lock' in run.stderr, run.stderr
    graph = await client.cmd("x-debug-query-block-graph")
    [edge] = graph["edges"]
    assert edge["name"] == "file"
    assert (edge["perm"], edge["shared-perm"]) == (
        ["consistent-read"],
        ["write-unchanged", "consistent-read"],
    )


@needs_qemu_img
@needs_qemu_io
async def test_node_sharing_write_does_not_answer_zero_from_cache(
    client: Transcript, tmp_path: Path
) -> None:
    # force-share: QEMU lets others write then, so the cache may go stale.
    image = await read_only_qcow2(client, tmp_path, force_share=True)
    run = await outside_write(image)
    assert run.returncode == 0, run.stderr
    (state,) = await client.cmd("x-query-zero-state", node_name="q")
    assert state["open"]["value"] is False, state
    extents = await client.cmd("x-blockdev-map", node_name="q")
    assert not any(e["zero"] for e in extents), extents


# ------------------------------------------------------------ QEMU 11.1


@contextmanager
def qemu_new(binary: str, work: Path) -> Iterator[Any]:
    """A QEMU 11.1 daemon (``qsd`` or ``qemu-system``) and a client on it."""
    from tests.mirror.procs import SyncClient

    path = new_tool(binary)
    if path is None:
        pytest.skip(why_new_missing(binary))
    sock = str(work / "qmp.sock")
    if binary == "qsd":
        argv = [str(path), "--chardev", f"socket,id=m,path={sock},server=on,wait=off",
                "--monitor", "chardev=m"]  # fmt: skip
    else:
        argv = [str(path), "-M", "pc", "-accel", "qtest", "-display", "none", "-nodefaults",
                "-qtest", "null", "-qmp", f"unix:{sock},server=on,wait=off"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_socket(sock, proc)
        client = SyncClient(sock)
        try:
            yield client
            client.execute("quit")
        finally:
            client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def play_sync(client: Any, steps: list[Step]) -> None:
    for command, args, expected in steps:
        reply = client.execute(command, **{k.replace("-", "_"): v for k, v in args.items()})
        if isinstance(reply, dict) and "class" in reply:
            reply = {"error": reply["desc"]}
        assert expected is None or reply == expected, (command, args)


def _work() -> Path:
    # QEMU 11.1's wrappers open files only under /tmp.
    work = Path("/tmp") / f"qmpd-perms-{os.getpid()}-{time.monotonic_ns()}"
    work.mkdir()
    return work


@pytest.mark.parametrize("script", ["resize-source", "target-writers", "create", "read-only-disks"])
def test_texts_match_qemu(script: str) -> None:
    """The expected texts above are QEMU 11.1's."""
    work = _work()
    binary = "qsd" if script == "create" else "qemu-system"  # HMP needs the emulator
    try:
        with qemu_new(binary, work) as client:
            if script == "create":
                if QEMU_IMG is None:
                    pytest.skip(why_system_missing("qemu-img"))
                play_sync(client, create_steps(work) + create_job_steps(work))
                for _ in CREATE_ERRORS:
                    client.wait("JOB_STATUS_CHANGE", "concluded")
                jobs = {j["id"]: j for j in client.execute("query-jobs")}
                assert {job: jobs[job].get("error") for job in CREATE_ERRORS} == CREATE_ERRORS
                return
            if script == "read-only-disks":
                play_sync(client, read_only_disk_steps())
                return
            play_sync(client, mirror_setup(work))
            client.wait("BLOCK_JOB_READY")
            if script == "resize-source":
                play_sync(client, resize_source_steps())
            else:
                play_sync(client, target_writer_steps())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_only_disk_steps() -> list[Step]:
    """virtio-blk and scsi-hd on a read-only node only read (ide-hd refuses
    it: tests/devices); a disk with an id is named by it, a virtio one by
    the QOM path of its backend holder."""
    v1 = "block device '/machine/peripheral/v1/virtio-backend' as root"
    v2 = {"driver": "virtio-blk-pci", "id": "v2", "drive": "n", "share-rw": True}
    return [
        ("blockdev-add", {"driver": "null-co", "node-name": "n", "read-only": True}, {}),
        ("device_add", {"driver": "virtio-blk-pci", "id": "v1", "drive": "n"}, {}),
        ("device_add", {"driver": "virtio-scsi-pci", "id": "scsi0"}, {}),
        ("device_add", {"driver": "scsi-hd", "id": "s1", "drive": "n"}, {}),
        ("device_add", v2, {}),
        hmp(
            'qemu-io -d /machine/peripheral/v1/virtio-backend "write 0 4k"',
            conflict("n", "write", v1, "block device 's1' as root") + "\r\n",
        ),
    ]  # fmt: skip


async def test_read_only_node_gives_read_only_disks(client: Transcript) -> None:
    await play(client, read_only_disk_steps())
    graph = await client.cmd("x-debug-query-block-graph")
    assert {tuple(e["perm"]) for e in graph["edges"]} == {("consistent-read",)}
