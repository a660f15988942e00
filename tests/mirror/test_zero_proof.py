"""What may prove that a mirror target reads as zero (defect 12).

Only a hole probe (SEEK_DATA/SEEK_HOLE) or a read may: the space a file
takes (``st_blocks``) may not, because file systems exist that report no
blocks for data (FUSE ones, compressed or deduplicating ones).  Such a
file system is stood in for by a target file node whose allocation query
answers 0 while the file holds data; everything else is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpd.app import App
from tests.mirror.conftest import MiB, make_image, needs_qemu_img, qemu_img_compare
from tests.support.transcript import Transcript

SIZE = 8 * MiB


@needs_qemu_img
async def test_a_target_reporting_no_blocks_is_not_taken_as_zero(
    client: Transcript, app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_image(tmp_path / "src.img", SIZE, [(MiB, MiB, 0x11)])
    # Data where the source reads as zero: the mirror must not skip it.
    dst = make_image(tmp_path / "dst.img", SIZE, [(4 * MiB, MiB, 0x99)])
    assert await client.cmd("blockdev-add", driver="file", node_name="src", filename=str(src)) == {}
    assert await client.cmd(
        "blockdev-add", driver="file", node_name="dst", filename=str(dst), discard="unmap"
    ) == {}  # fmt: skip
    target = app.graph.find("dst")
    monkeypatch.setattr(target, "actual_size", lambda: 0)
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m"
    ) == {}  # fmt: skip
    await client.until("BLOCK_JOB_READY")
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert qemu_img_compare(src, dst) == "Images are identical."
