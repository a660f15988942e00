"""End to end over a real socket: the block workflow a management client runs.

A qmpd process started with ``--blockdev`` (as scripts start
qemu-storage-daemon), driven by qemu.qmp's QMPClient: add nodes, attach a
guest disk, write through it with qemu-io over HMP, look at query-block and
the zero-state extensions, check the in-use errors, tear down, and read the
file back with the real qemu-img.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from tests.support.daemons import qmpd_kind, running
from tests.support.qemu_tools import system_tool, why_system_missing

QEMU_IMG = system_tool("qemu-img")
QEMU_IO = system_tool("qemu-io")


async def _workflow(socket: str, image: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    qmp = QMPClient("e2e-block")
    await qmp.connect(socket)
    try:
        # 'base' came from --blockdev on the command line.
        nodes = await qmp.execute("query-named-block-nodes", {"flat": True})
        seen["startup"] = [n["node-name"] for n in nodes]
        await qmp.execute("blockdev-add", {"driver": "raw", "node-name": "disk", "file": "base"})
        await qmp.execute("device_add", {"driver": "virtio-blk-pci", "id": "vd0", "drive": "disk"})
        blocks = await qmp.execute("query-block")
        seen["qdev"] = blocks[0]["qdev"]
        seen["inserted"] = blocks[0]["inserted"]["node-name"]
        seen["zero_before"] = await qmp.execute("x-query-zero-state", {"node-name": "disk"})
        out = await qmp.execute(
            "human-monitor-command",
            {"command-line": f'qemu-io -d {seen["qdev"]} "write -P 0xab 1M 64k"'},
        )
        seen["qemu_io"] = out
        seen["zero_after"] = await qmp.execute("x-query-zero-state", {"node-name": "disk"})
        seen["map"] = await qmp.execute("x-blockdev-map", {"node-name": "base"})
        try:
            await qmp.execute("blockdev-del", {"node-name": "disk"})
        except ExecuteError as err:
            seen["del_in_use"] = (err.error.error.class_, err.error.error.desc)
        await qmp.execute("device_del", {"id": "vd0"})
        await qmp.execute("blockdev-del", {"node-name": "disk"})
        await qmp.execute("blockdev-del", {"node-name": "base"})
        seen["end"] = await qmp.execute("query-named-block-nodes")
    finally:
        await qmp.disconnect()
    return seen


def test_block_workflow_over_a_socket(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(4 << 20)
    blockdev = f"driver=file,node-name=base,filename={image}"
    with running(qmpd_kind(), extra=["--blockdev", blockdev]) as daemon:
        seen = asyncio.run(_workflow(daemon.sockets[0], image))

    assert seen["startup"] == ["base"]
    assert seen["inserted"] == "disk"
    # A sparse file nobody wrote: reads as zero now, known from a hole probe.
    assert seen["zero_before"][0]["open"]["value"] is True
    assert seen["qemu_io"].startswith("wrote 65536/65536 bytes at offset 1048576")
    assert seen["zero_after"][0]["open"]["value"] is False
    data = [e for e in seen["map"] if e["data"]]
    assert [(e["start"], e["length"]) for e in data] == [(1 << 20, 64 << 10)]
    assert seen["del_in_use"] == ("GenericError", "Node disk is in use")
    assert seen["end"] == []

    if QEMU_IMG is None or QEMU_IO is None:
        pytest.skip(why_system_missing("qemu-img" if QEMU_IMG is None else "qemu-io"))
    check = subprocess.run(
        [QEMU_IMG, "map", "--output=json", "-f", "raw", str(image)],
        capture_output=True,
        check=True,
        text=True,
    )
    # qmpd's map of the file node and qemu-img's agree extent for extent.
    theirs = [(e["start"], e["length"], e["data"], e["zero"]) for e in json.loads(check.stdout)]
    mine = [(e["start"], e["length"], e["data"], e["zero"]) for e in seen["map"]]
    assert mine == theirs
    pattern = subprocess.run(
        [QEMU_IO, "-f", "raw", "-c", "read -P 0xab 1M 64k", "-c", "read -P 0 0 1M", str(image)],
        capture_output=True,
        check=True,
        text=True,
    )
    assert "Pattern verification failed" not in pattern.stdout
