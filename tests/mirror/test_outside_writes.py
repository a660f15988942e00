"""Writes by other processes to a mirror's source, which the job shares
writing on (as QEMU's does, so QEMU's locks let another process's qemu-io
write it), and the block status the job reuses from its first walk.

A write ahead of the copy must be copied: QEMU's mirror asks the block
status per chunk as it goes, so it finds the new data (checked with QEMU
11.1).  qmpd cuts each window's block status from the walk it makes at the
start, and confirms that walk's zero claims with one more walk before
ready (see :mod:`qmpd.block.status_snapshot`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.block.conftest import needs_qemu_io, qemu_io
from tests.mirror.conftest import (
    MiB,
    make_image,
    needs_qemu_img,
    qemu_img_compare,
    spy_block_status,
)
from tests.mirror.test_files import guest_write
from tests.support.transcript import Transcript

KiB = 1 << 10


@needs_qemu_img
@needs_qemu_io
async def test_outside_write_ahead_of_the_copy_is_mirrored(
    client: Transcript, tmp_path: Path
) -> None:
    size = 64 * MiB
    src = make_image(tmp_path / "src.img", size, [(0, MiB, 0x11)])
    dst = make_image(tmp_path / "dst.img", size)
    assert await client.cmd("blockdev-add", driver="file", node_name="src", filename=str(src)) == {}
    assert await client.cmd("blockdev-add", driver="file", node_name="dst", filename=str(dst)) == {}
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m", speed=1,
        buf_size=MiB,
    ) == {}  # fmt: skip
    # The job is throttled after its first window; far ahead, in a range
    # that was a hole when the job started, another process writes.
    out = await trio.to_thread.run_sync(
        qemu_io, "-f", "raw", "-c", f"write -P 0x55 {48 * MiB} 64k", str(src)
    )
    assert "wrote" in out.stdout, out
    assert await client.cmd("block-job-set-speed", device="m", speed=0) == {}
    await client.until("BLOCK_JOB_READY")
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert qemu_img_compare(src, dst) == "Images are identical."


async def test_source_walked_twice_not_per_window(
    client: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench's case, without another writer: every window, holes
    included, is cut from the first walk, and one more walk before ready
    confirms the holes.  (Per window, a 4 GiB source took ~250 queries on
    the job's task, 10-15% of the time to ready.)"""
    size = 64 * MiB
    src = make_image(tmp_path / "src.img", size, [(i * 4 * MiB, MiB, 0x66) for i in range(16)])
    dst = make_image(tmp_path / "dst.img", size)
    asked = spy_block_status(monkeypatch, src)
    assert await client.cmd("blockdev-add", driver="file", node_name="src", filename=str(src)) == {}
    assert await client.cmd("blockdev-add", driver="file", node_name="dst", filename=str(dst)) == {}
    asked.clear()
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m", buf_size=MiB
    ) == {}  # fmt: skip
    await client.until("BLOCK_JOB_READY")
    assert asked == [(0, size), (0, size)]
    assert await client.cmd("job-cancel", id="m") == {}
    await client.until("JSC null")


@needs_qemu_img
async def test_guest_writes_are_not_copied_again_by_the_confirmation(
    client: Transcript, tmp_path: Path
) -> None:
    """The confirmation before ready is for other processes' writes.  The
    guest's go through the job, which copies them with a fresh block
    status; the confirmation must not take them for stale zero claims and
    copy them again (nor zero the rest of their chunks on the target).
    One guest write lands in a hole the first window's status served as
    zero, one in a hole never served."""
    src = make_image(tmp_path / "src.img", 8 * MiB, [(MiB, 32 * KiB, 0x11)])
    dst = make_image(tmp_path / "dst.img", 8 * MiB)
    assert await client.cmd("blockdev-add", driver="file", node_name="src", filename=str(src)) == {}
    assert await client.cmd("blockdev-add", driver="file", node_name="dst", filename=str(dst)) == {}
    assert await client.cmd("device_add", driver="ide-hd", id="disk0", drive="src") == {}
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m", speed=1,
        granularity=64 * KiB,
    ) == {}  # fmt: skip
    # Polled as a client would: the first window (the chunk at 1M: data,
    # then a hole served from the first walk) is copied, then the job sleeps.
    while (await client.cmd("query-block-jobs"))[0]["offset"] == 0:  # noqa: ASYNC110
        await trio.sleep(0.01)
    await guest_write(client, f"write -P 0x55 {MiB + 48 * KiB} 4k")
    await guest_write(client, f"write -P 0x66 {6 * MiB} 4k")
    assert await client.cmd("block-job-set-speed", device="m", speed=0) == {}
    await client.until("BLOCK_JOB_READY")
    [job] = await client.cmd("query-block-jobs")
    # The data once, then each guest write's chunk once more: its data,
    # and (at 1M, whose zero bit the first copy cleared) the holes around it.
    assert job["x-zero-stats"]["copied"] == 32 * KiB + (32 + 4) * KiB + 4 * KiB, job
    assert job["x-zero-stats"]["zeroed"] == (16 + 12) * KiB, job
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert qemu_img_compare(src, dst) == "Images are identical."
