"""qcow2 over blkdebug: faults injected into qcow2's own metadata and data
requests, armed by the events QEMU's qcow2 driver raises (BlkdebugEvent),
as QEMU's iotests do it."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from qmpd.block import BlockGraph, BlockIOError, blockdev_add
from qmpd.block.blkdebug import BlkdebugNode

from .conftest import IMGS, check_consistent, create_image

MiB = 1 << 20


def open_over_blkdebug(
    graph: BlockGraph, path: Path, rules: list[dict[str, Any]] | None = None, **opts: Any
) -> Any:
    """qcow2 -> blkdebug -> file, with ``inject-error`` rules."""
    debug = {
        "driver": "blkdebug",
        "node-name": "dbg",
        "image": {"driver": "file", "filename": str(path)},
        "inject-error": rules or [],
    }
    return blockdev_add(graph, {"driver": "qcow2", "node-name": "q", "file": debug, **opts})


async def test_qcow2_opens_and_works_over_blkdebug(tmp_path: Path, graph: BlockGraph) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    node = open_over_blkdebug(graph, path)
    await node.write(4096, b"\x5a" * 70_000)
    await node.flush()
    assert await node.read(4096, 70_000) == b"\x5a" * 70_000
    graph.close_all()
    if IMGS:
        check_consistent(path)


# The events a first write into an empty image raises on the file child,
# in QEMU's names; each armed rule fails that request.
@pytest.mark.parametrize(
    "event",
    ["cluster_alloc", "l2_alloc_write", "refblock_update_part", "write_aio", "l2_update"],
)
async def test_a_failed_request_fails_the_write_and_leaves_a_valid_image(
    tmp_path: Path, graph: BlockGraph, event: str
) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    node = open_over_blkdebug(
        graph, path, [{"event": event, "iotype": "write", "errno": errno.ENOSPC, "once": True}]
    )
    with pytest.raises(BlockIOError) as info:
        await node.write(MiB, b"\x11" * 8192)
    assert info.value.errno == errno.ENOSPC
    # The rule was used up: the node goes on working.
    await node.write(MiB, b"\x22" * 8192)
    await node.flush()
    assert await node.read(MiB, 8192) == b"\x22" * 8192
    graph.close_all()
    if IMGS:
        check_consistent(path)


async def test_flush_events_reach_the_rules(tmp_path: Path, graph: BlockGraph) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    node = open_over_blkdebug(
        graph, path, [{"event": "flush_to_disk", "iotype": "flush", "once": True}]
    )
    await node.write(0, b"\x33" * 4096)
    with pytest.raises(BlockIOError) as info:
        await node.flush()
    assert info.value.errno == errno.EIO
    await node.flush()  # the once rule is used up
    debug = graph.find("dbg")
    assert isinstance(debug, BlkdebugNode)
    assert debug.rules.rules == ()
