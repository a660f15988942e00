"""blockdev-create with driver qcow2 over QMP: QEMU's management flow (a
file, then a qcow2 on it), failures inside the job, zero state after."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.transcript import Transcript

from .conftest import IMGS, check_clean, img, needs_qemu, touch

MiB = 1 << 20


def compare(a: Path, b: Path) -> bool:
    return "identical" in img("compare", "-f", "qcow2", "-F", "raw", str(a), str(b)).stdout


async def _run(client: Transcript, job: str, options: dict[str, Any]) -> dict[str, Any]:
    def concluded(m: dict[str, Any]) -> bool:
        return m.get("data") == {"id": job, "status": "concluded"}

    assert await client.cmd("blockdev-create", job_id=job, options=options) == {}
    # The job may conclude before the reply (it does not always yield).
    if not any(concluded(m) for m in client.messages):
        await client.until(concluded)
    (info,) = [j for j in await client.cmd("query-jobs") if j["id"] == job]
    assert await client.cmd("job-dismiss", id=job) == {}
    result: dict[str, Any] = info
    return result


async def test_management_flow(client: Transcript, tmp_path: Path) -> None:
    path = tmp_path / "t.qcow2"
    info = await _run(client, "c0", {"driver": "file", "filename": str(path), "size": 0})
    assert "error" not in info
    assert await client.cmd("blockdev-add", driver="file", node_name="f", filename=str(path)) == {}
    options = {"driver": "qcow2", "file": "f", "size": 64 * MiB, "preallocation": "metadata"}
    info = await _run(client, "c1", options)
    assert "error" not in info, info
    assert info["type"] == "create"
    assert await client.cmd("blockdev-add", driver="qcow2", node_name="q", file="f") == {}
    (state,) = await client.cmd("x-query-zero-state", node_name="q")
    assert state["open"] == {"value": True, "how": "flag"}
    assert state["create"] == {"value": True, "how": "driver"}
    assert await client.cmd("blockdev-del", node_name="q") == {}
    assert await client.cmd("blockdev-del", node_name="f") == {}
    if IMGS:
        check_clean(path)


async def test_inline_file_and_failures(client: Transcript, tmp_path: Path) -> None:
    path = tmp_path / "t.qcow2"
    touch(path)
    inline = {"driver": "file", "filename": str(path)}
    info = await _run(
        client, "c0", {"driver": "qcow2", "file": inline, "size": MiB, "version": "v2"}
    )
    assert "error" not in info, info
    info = await _run(client, "c1", {"driver": "qcow2", "file": "nope", "size": MiB})
    assert info["error"] == "Cannot find device='nope' nor node-name='nope'"
    bad = {"driver": "qcow2", "file": inline, "size": MiB, "cluster-size": 3000}
    info = await _run(client, "c2", bad)
    assert info["error"] == "Cluster size must be a power of two between 512 and 2048k"
    # The inline node went away with the job.
    assert await client.cmd("query-named-block-nodes") == []
    if IMGS:
        check_clean(path)


@needs_qemu
@pytest.mark.parametrize("prealloc", ["off", "metadata", "falloc"])
async def test_mirror_into_a_new_qcow2(client: Transcript, tmp_path: Path, prealloc: str) -> None:
    """The issue's flow: create a file and a qcow2 on it, mirror a raw source
    into it; the target is known zero, so the copy skips the zeroes."""
    src = tmp_path / "src.raw"
    with src.open("wb") as f:
        f.truncate(8 * MiB)
        f.seek(MiB)
        f.write(b"\x11" * MiB)
        f.seek(5 * MiB + 4096)
        f.write(b"\x22" * 70_000)
    dst = tmp_path / "dst.qcow2"
    assert "error" not in await _run(
        client, "c0", {"driver": "file", "filename": str(dst), "size": 0}
    )
    assert await client.cmd("blockdev-add", driver="file", node_name="df", filename=str(dst)) == {}
    options = {"driver": "qcow2", "file": "df", "size": 8 * MiB, "preallocation": prealloc}
    assert "error" not in await _run(client, "c1", options)
    assert await client.cmd("blockdev-add", driver="qcow2", node_name="dst", file="df") == {}
    source = {"driver": "file", "filename": str(src)}
    assert await client.cmd("blockdev-add", driver="raw", node_name="src", file=source) == {}
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m"
    ) == {}  # fmt: skip
    await client.until("BLOCK_JOB_READY")
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    entries = await client.cmd("x-blockdev-map", node_name="dst")
    data: list[list[int]] = []
    for e in entries:
        if e["data"] and not e["zero"]:
            if data and data[-1][1] == e["start"]:  # guest-contiguous
                data[-1][1] += e["length"]
            else:
                data.append([e["start"], e["start"] + e["length"]])
    if prealloc == "off":
        # Only the source's data was written: the rest stayed unallocated.
        assert data == [[MiB, 2 * MiB], [5 * MiB, 5 * MiB + 128 * 1024]]
    for name in ("dst", "df", "src"):
        assert await client.cmd("blockdev-del", node_name=name) == {}
    check_clean(dst)
    assert compare(dst, src)
