"""Mirror of real files with a guest writing through a disk, checked by qemu-img.

Each case: a sparse source file with some data, a target file, a guest
disk (``ide-hd``) on the source; the mirror starts rate-limited so that it
is mid-copy while the guest writes (qemu-io through the disk, which now
goes through the mirror_top filter); then the limit is lifted, the guest
writes again once the job is ready, and the job is completed (the disk
moves to the target) or cancelled.  ``qemu-img compare`` must find the
files identical, and ``qemu-img map`` must show the target allocated where
the source is (or, for ``sync: none``, only where the guest wrote).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from qmpd.app import App
from qmpd.block.file import FileNode
from qmpd.jobs.mirror import MirrorJob
from tests.mirror.conftest import (
    QEMU_IMG,
    MiB,
    data_ranges,
    make_image,
    needs_qemu_img,
    qemu_img_compare,
    qemu_img_map,
    spy_block_status,
)
from tests.support.transcript import Transcript

SIZE = 8 * MiB
SOURCE_DATA = [(MiB, MiB, 0x11), (5 * MiB, 512 * 1024, 0x22)]
DONE = ["JSC waiting", "JSC pending", "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null"]


async def hmp(client: Transcript, line: str) -> str:
    out = await client.cmd("human-monitor-command", command_line=line)
    assert isinstance(out, str), out
    return out


async def guest_write(client: Transcript, cmd: str) -> None:
    out = await hmp(client, f'qemu-io -d disk0 "{cmd}"')
    assert "wrote" in out, out


async def setup(client: Transcript, tmp_path: Path, **target_opts: Any) -> tuple[Path, Path]:
    src = make_image(tmp_path / "src.img", SIZE, SOURCE_DATA)
    dst = make_image(tmp_path / "dst.img", SIZE)
    assert await client.cmd("blockdev-add", driver="file", node_name="src", filename=str(src)) == {}
    assert await client.cmd(
        "blockdev-add", driver="file", node_name="dst", filename=str(dst), **target_opts
    ) == {}  # fmt: skip
    assert await client.cmd("device_add", driver="ide-hd", id="disk0", drive="src") == {}
    return src, dst


async def inserted(client: Transcript) -> str:
    [blk] = await client.cmd("query-block")
    return str(blk["inserted"]["node-name"])


@needs_qemu_img
@pytest.mark.parametrize("sync", ["full", "top", "none"])
@pytest.mark.parametrize("target_is_zero", [False, True])
@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
async def test_complete_with_guest_writes(
    client: Transcript, tmp_path: Path, sync: str, target_is_zero: bool, copy_mode: str
) -> None:
    src, dst = await setup(client, tmp_path)
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync=sync, job_id="m", speed=1,
        buf_size=MiB, copy_mode=copy_mode, target_is_zero=target_is_zero,
    ) == {}  # fmt: skip
    if sync != "none":
        [info] = await client.cmd("query-block-jobs")
        assert info["status"] == "running"
        assert info["offset"] < SIZE
    # Mid-copy (or, for sync none, already ready): the guest writes.
    await guest_write(client, "write -P 0x33 6M 64k")
    await guest_write(client, "write -P 0x44 1536k 4k")
    await guest_write(client, "write -z 5M 64k")
    assert await inserted(client) == "src"  # the implicit filter is hidden
    assert await client.cmd("block-job-set-speed", device="m", speed=0) == {}
    if sync != "none":
        await client.until("BLOCK_JOB_READY")
    # Ready: new writes keep the target in sync.
    await guest_write(client, "write -P 0x55 7M 128k")
    client.take()
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert client.take() == ["return", *DONE]
    assert await inserted(client) == "dst"
    await guest_write(client, "write -P 0x66 0 4k")  # now on the target only
    assert await client.cmd("device_del", id="disk0") == {}
    if sync == "none":
        # Only what the guest wrote during the job reached the target.
        mapped = data_ranges(qemu_img_map(dst))
        assert (6 * MiB, 64 * 1024) in mapped or any(s <= 6 * MiB < s + n for s, n in mapped)
        return
    # The source lacks only the write made after the pivot.
    with src.open("r+b") as f:
        f.write(b"\x66" * 4096)
    assert qemu_img_compare(src, dst) == "Images are identical."
    assert data_ranges(qemu_img_map(dst)) == data_ranges(qemu_img_map(src))


@needs_qemu_img
@pytest.mark.parametrize("force", [False, True])
async def test_cancel(client: Transcript, tmp_path: Path, force: bool) -> None:
    src, dst = await setup(client, tmp_path)
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m"
    ) == {}  # fmt: skip
    await client.until("BLOCK_JOB_READY")
    await guest_write(client, "write -P 0x77 3M 64k")
    client.take()
    assert await client.cmd("block-job-cancel", device="m", force=force) == {}
    await client.until("JSC null")
    if force:
        assert client.take() == [
            "return", "JSC aborting", "BLOCK_JOB_CANCELLED", "JSC concluded", "JSC null"
        ]  # fmt: skip
    else:
        assert client.take() == ["return", *DONE]
    # No pivot: the disk stays on the source.
    assert await inserted(client) == "src"
    assert await client.cmd("device_del", id="disk0") == {}
    if not force:
        # A soft cancel of a ready job leaves a consistent copy.
        assert qemu_img_compare(src, dst) == "Images are identical."
        assert data_ranges(qemu_img_map(dst)) == data_ranges(qemu_img_map(src))


async def test_x_zero_stats(client: Transcript, tmp_path: Path) -> None:
    await setup(client, tmp_path)
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m",
        auto_dismiss=False,
    ) == {}  # fmt: skip
    await client.until("BLOCK_JOB_READY")
    [info] = await client.cmd("query-block-jobs")
    data = 3 * MiB // 2
    # The fresh target is all holes: source holes are skipped, not written.
    assert info["x-zero-stats"] == {"copied": data, "zeroed": 0, "skipped": SIZE - data}
    assert info["len"] == info["offset"] == SIZE
    assert await client.cmd("job-cancel", id="m") == {}
    await client.until("JSC concluded")
    [job] = await client.cmd("query-jobs")
    assert job["x-zero-stats"]["copied"] == data


def to_qcow2(raw: Path, out: Path) -> Path:
    """``raw``'s content as a qcow2 image with 4 KiB clusters, by qemu-img."""
    assert QEMU_IMG is not None
    args = ["convert", "-O", "qcow2", "-o", "cluster_size=4096", str(raw), str(out)]
    subprocess.run([QEMU_IMG, *args], check=True)
    return out


@needs_qemu_img
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
async def test_x_zero_stats_count_each_byte_once(
    client: Transcript, tmp_path: Path, fmt: str
) -> None:
    # 4 KiB of data in each of two 64 KiB chunks: the zero rest of those
    # chunks was counted as skipped when the job started and again when
    # their copy skipped it, so skipped ran past the disk's length.
    raw = make_image(tmp_path / "src.img", SIZE, [(MiB, 4096, 0x11), (5 * MiB + 8192, 4096, 0x22)])
    src = raw
    if fmt == "qcow2":
        src = to_qcow2(raw, tmp_path / "src.qcow2")
    dst = make_image(tmp_path / "dst.img", SIZE)
    file = {"driver": "file", "filename": str(src)}
    source = {"driver": fmt, "node-name": "src", "file": file}
    assert await client.cmd("blockdev-add", **source) == {}
    assert await client.cmd("blockdev-add", driver="file", node_name="dst",
                            filename=str(dst)) == {}  # fmt: skip
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m",
        target_is_zero=True,
    ) == {}  # fmt: skip
    await client.until("BLOCK_JOB_READY")
    [info] = await client.cmd("query-block-jobs")
    stats = info["x-zero-stats"]
    assert stats["copied"] + stats["zeroed"] + stats["skipped"] == SIZE, stats
    assert await client.cmd("job-cancel", id="m") == {}
    await client.until("JSC null")
    assert qemu_img_compare(raw, dst) == "Images are identical."


@needs_qemu_img
@pytest.mark.parametrize("detect_zeroes", ["off", "unmap"])
async def test_kernel_copy_and_write_behind(
    client: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, detect_zeroes: str
) -> None:
    """Data pieces between host files are copied by a worker thread (the
    kernel's copy_file_range, or a read-and-write that hands zero data back
    for detect-zeroes), and the target is synced beside the copy."""
    size = 48 * MiB
    # 40 MiB of data, 1 MiB of it written zeroes (allocated, reads as zero).
    src = make_image(tmp_path / "src.img", size, [(4 * MiB, 40 * MiB, 0x5C), (8 * MiB, MiB, 0)])
    dst = make_image(tmp_path / "dst.img", size)
    copies: list[bool] = []
    syncs_started = 0
    syncs: list[bool] = []
    real_copy = FileNode._copy_sync
    real_sync = FileNode._sync_behind

    def copy(self: FileNode, *args: Any) -> bool:
        copies.append(real_copy(self, *args))
        return copies[-1]

    async def sync(self: FileNode) -> bool:
        nonlocal syncs_started
        syncs_started += 1
        syncs.append(await real_sync(self))
        return syncs[-1]

    monkeypatch.setattr(FileNode, "_copy_sync", copy)
    monkeypatch.setattr(FileNode, "_sync_behind", sync)
    target = {"discard": "unmap", "detect_zeroes": "unmap"} if detect_zeroes == "unmap" else {}
    assert await client.cmd("blockdev-add", driver="file", node_name="src", filename=str(src)) == {}
    assert await client.cmd(
        "blockdev-add", driver="file", node_name="dst", filename=str(dst), **target
    ) == {}  # fmt: skip
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m"
    ) == {}  # fmt: skip
    await client.until("BLOCK_JOB_READY")
    [info] = await client.cmd("query-block-jobs")
    # 40 MiB of data pieces: a sync after 16 MiB, and one after 32 MiB
    # unless the first was still running then (one at a time), both over
    # before ready: the flush before ready waits for a write-behind.
    assert len(syncs) == syncs_started
    assert syncs in ([True], [True, True])
    if detect_zeroes == "off":
        assert copies == [True] * 40
        assert info["x-zero-stats"]["copied"] == 40 * MiB
    else:
        # The zero MiB came back and became a hole through detect-zeroes.
        assert sorted(copies) == [False] + [True] * 39
        assert info["x-zero-stats"]["copied"] == 39 * MiB
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert qemu_img_compare(src, dst) == "Images are identical."
    allocated = sum(n for _, n in data_ranges(qemu_img_map(dst)))
    assert allocated == (40 if detect_zeroes == "off" else 39) * MiB


async def test_block_status_walked_once(
    client: Transcript, app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job asks the source's block status once for the whole image
    and reuses it per window while nothing of qmpd's writes the source; a
    write anywhere below the job's view of the source ends that."""
    src = make_image(tmp_path / "src.img", 64 * MiB, [(i * 4 * MiB, MiB, 0x66) for i in range(16)])
    dst = make_image(tmp_path / "dst.img", 64 * MiB)
    asked = spy_block_status(monkeypatch)
    assert await client.cmd(
        "blockdev-add", driver="raw", node_name="src",
        file={"driver": "file", "node-name": "src-file", "filename": str(src)},
    ) == {}  # fmt: skip
    assert await client.cmd("blockdev-add", driver="file", node_name="dst", filename=str(dst)) == {}
    asked.clear()
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m", speed=1,
        buf_size=MiB,
    ) == {}  # fmt: skip
    # Target: one probe of its holes (known zero).  Source: one walk.
    assert (0, 64 * MiB) in asked
    job = app.jobs.find_block_job("m")
    assert isinstance(job, MirrorJob)
    assert job._status_map is not None
    walked = len(asked)
    # Polled as a client would: the first window is copied in threads.
    while (await client.cmd("query-block-jobs"))[0]["offset"] == 0:  # noqa: ASYNC110
        await trio.sleep(0.01)
    assert len(asked) == walked  # the first window came from the map
    # A write below the raw node, by its file node's name.
    assert "wrote 4096/4096" in await hmp(client, 'qemu-io src-file "write -P 0x77 60M 4k"')
    assert await client.cmd("block-job-set-speed", device="m", speed=0) == {}
    await client.until("BLOCK_JOB_READY")
    assert job._status_map is None
    assert len(asked) > walked  # windows asked again
    assert await client.cmd("job-cancel", id="m") == {}
    await client.until("JSC null")
