"""A guest write that fails on the mirror's source after part of it landed
(here: a qcow2 write spanning two L2 tables whose second update fails) has
changed the source all the same, so the job must copy the range again:
QEMU's mirror_top marks the job's bitmap whatever the write returned.
Found in review (R5)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.mirror.conftest import MiB, make_image, needs_qemu_img
from tests.support.qemu_tools import system_tool_or_skip
from tests.support.transcript import Transcript


def _img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [system_tool_or_skip("qemu-img"), *args], capture_output=True, text=True, check=False
    )


@needs_qemu_img
@pytest.mark.parametrize("copy_mode", ["background", "write-blocking"])
async def test_partly_failed_guest_write_is_still_mirrored(
    client: Transcript, tmp_path: Path, copy_mode: str
) -> None:
    src = tmp_path / "src.qcow2"
    created = _img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(src), "1M")
    assert created.returncode == 0, created.stderr
    dst = make_image(tmp_path / "dst.img", MiB)
    # One 8 KiB write spanning two L2 tables: the second table's update
    # fails once the first one's has landed.
    debug = {
        "driver": "blkdebug",
        "set-state": [{"event": "l2_update", "state": 1, "new_state": 2}],
        "inject-error": [{"event": "l2_update", "state": 2, "errno": 28, "once": True}],
        "image": {"driver": "file", "filename": str(src)},
    }
    assert await client.cmd("blockdev-add", driver="qcow2", node_name="src", file=debug) == {}
    assert await client.cmd("blockdev-add", driver="file", node_name="dst", filename=str(dst)) == {}
    assert await client.cmd("device_add", driver="ide-hd", id="disk0", drive="src") == {}
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m",
        copy_mode=copy_mode,
    ) == {}  # fmt: skip
    if "BLOCK_JOB_READY" not in client.take():  # an empty source is ready at once
        await client.until("BLOCK_JOB_READY")
    out = await client.cmd(
        "human-monitor-command", command_line='qemu-io -d disk0 "write -P 0x55 28k 8k"'
    )
    assert "write failed" in out, out
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert await client.cmd("device_del", id="disk0") == {}
    assert await client.cmd("blockdev-del", node_name="src") == {}
    result = _img("compare", "-f", "qcow2", "-F", "raw", str(src), str(dst))
    assert result.stdout.strip() == "Images are identical.", result.stdout
