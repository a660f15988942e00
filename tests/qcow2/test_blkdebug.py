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
from qmpd.block.qcow2.format import AUTOCLEAR_QMPD_ALL_ZERO, parse_header

from .conftest import IMGS, check_clean, check_consistent, create_image, open_qcow2

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
        check_clean(path)  # the failed write's clusters were given back, as QEMU does


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


# -- issue 10, defect 8: memory never runs ahead of disk ---------------------------


def _autoclear(path: Path) -> int:
    return parse_header(path.read_bytes()[:65536]).autoclear


async def test_failed_all_zero_bit_withdrawal_is_not_believed(tmp_path: Path) -> None:
    # The first write into an all-zero image withdraws qmpd's bit (a header
    # write, sector 0); it fails.  Memory said "withdrawn" while the disk
    # kept the bit, so the next write landed data under a set bit, and
    # the reopened image claimed to be all zero.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    rules = [
        # The first header write after the write's first request fails.
        {"event": "pwritev", "state": 2, "sector": 0, "iotype": "write", "once": True},
    ]
    graph = BlockGraph()
    debug = {
        "driver": "blkdebug",
        "image": {"driver": "file", "filename": str(path)},
        "inject-error": rules,
        "set-state": [{"event": "pwritev", "state": 1, "new_state": 2}],
    }
    node = blockdev_add(graph, {"driver": "qcow2", "node-name": "q", "file": debug})
    with pytest.raises(BlockIOError):
        await node.write(0, b"\x77" * 4096)
    assert _autoclear(path) & AUTOCLEAR_QMPD_ALL_ZERO  # the disk kept it...
    assert node.header.autoclear & AUTOCLEAR_QMPD_ALL_ZERO  # ...and so does memory
    await node.write(0, b"\x77" * 4096)
    assert not _autoclear(path) & AUTOCLEAR_QMPD_ALL_ZERO
    graph.close_all()
    graph = BlockGraph()
    reopened = open_qcow2(graph, path, read_only=True)
    assert not (await reopened.known_zero()).open.value
    assert await reopened.read(0, 4096) == b"\x77" * 4096
    graph.close_all()
    if IMGS:
        check_consistent(path)


async def test_failed_l2_update_reads_as_the_disk_says(tmp_path: Path) -> None:
    # An L2 entry whose write failed must not be in the cache: reads would
    # show data the image does not map (and a reopen would not).
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    graph = BlockGraph()
    node = open_over_blkdebug(
        graph,
        path,
        [{"event": "l2_update", "state": 2, "iotype": "write", "once": True}],
    )
    await node.write(0, b"\x01" * 65536)  # maps cluster 0 (and makes the L2 table)
    await node.flush()
    debug = graph.find("dbg")
    assert isinstance(debug, BlkdebugNode)
    debug.rules.state = 2  # arm the rule for the next L2 update only
    with pytest.raises(BlockIOError):
        await node.write(65536, b"\x02" * 65536)
    seen = await node.read(0, 2 * 65536)
    graph.close_all()
    graph = BlockGraph()
    reopened = open_qcow2(graph, path, read_only=True)
    assert await reopened.read(0, 2 * 65536) == seen
    graph.close_all()
    if IMGS:
        check_consistent(path)


async def test_failed_refcount_block_hookup_leaves_no_corruption(tmp_path: Path) -> None:
    # 512-byte clusters: a refcount block covers 128 KiB, so writing past
    # that makes a new block.  Its reftable entry fails to be written; the
    # block must not be used as if it were hooked up (the clusters counted
    # in it would read as free on disk: a corrupt image).
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, cluster_size=512)
    graph = BlockGraph()
    node = open_over_blkdebug(
        graph, path, [{"event": "refblock_alloc_hookup", "iotype": "write", "once": True}]
    )
    failed = 0
    for i in range(8):
        try:
            await node.write(i * 65536, bytes([i + 1]) * 65536)
        except BlockIOError:
            failed += 1
    assert failed == 1
    await node.flush()
    graph.close_all()
    if IMGS:
        check_consistent(path)


async def test_failed_l1_table_growth_leaves_a_clean_image(tmp_path: Path) -> None:
    # 512-byte clusters: one L1 cluster reaches 2 MiB, so growing to 8 MiB
    # moves the L1 table.  Its write fails: the image keeps its old table
    # and size, and the clusters the new one took are given back.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=MiB, cluster_size=512)
    graph = BlockGraph()
    node = open_over_blkdebug(
        graph, path, [{"event": "l1_grow_write_table", "iotype": "write", "once": True}]
    )
    await node.write(0, b"\x31" * 4096)
    with pytest.raises(BlockIOError):
        await node.truncate(8 * MiB)
    assert node.size == MiB
    await node.truncate(8 * MiB)
    await node.write(7 * MiB, b"\x32" * 4096)
    await node.flush()
    graph.close_all()
    if IMGS:
        check_clean(path)
    graph = BlockGraph()
    reopened = open_qcow2(graph, path, read_only=True)
    assert await reopened.read(0, 4096) == b"\x31" * 4096
    assert await reopened.read(7 * MiB, 4096) == b"\x32" * 4096
    graph.close_all()
