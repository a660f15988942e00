"""Closing a qcow2 image after a failure: a close must never succeed
where the node's own flush just failed.  QEMU 11.1 marks a lazy-refcounts
image clean at close only if its write-back there succeeded; otherwise
the dirty bit stays set and the next read-write open (or ``qemu-img check
-r``) repairs the image.  (tests/qcow2/test_faults_differential.py sends
the same QMP to both daemons.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpd.block import BlockGraph, BlockIOError, BlockNode
from qmpd.block.blkdebug import BlkdebugNode, InjectError, Rules
from qmpd.block.qcow2 import Qcow2Node
from qmpd.block.qcow2.format import AUTOCLEAR_QMPD_ALL_ZERO, parse_header

from .conftest import IMGS, check_consistent, create_image
from .test_blkdebug import open_over_blkdebug

MiB = 1 << 20


def _header(path: Path) -> tuple[bool, bool]:
    """(dirty bit, qmpd's all-zero bit) as the file holds them."""
    header = parse_header(path.read_bytes()[:65536])
    return header.dirty, bool(header.autoclear & AUTOCLEAR_QMPD_ALL_ZERO)


async def _written(path: Path, graph: BlockGraph, once: bool) -> BlockNode:
    """A lazy-refcounts image over a blkdebug rule that fails flushes after
    flush_to_disk (only the first with ``once``), with a new L2 table and
    so a pending L1 entry."""
    await create_image(path, size=4 * MiB, lazy_refcounts=True)
    rule = {"event": "flush_to_disk", "iotype": "flush", "once": once}
    node: BlockNode = open_over_blkdebug(graph, path, [rule])
    await node.write(0, b"\x33" * 100_000)
    assert _header(path)[0]
    return node


async def test_close_after_failed_flush_keeps_the_image_dirty(
    tmp_path: Path, graph: BlockGraph
) -> None:
    path = tmp_path / "a.qcow2"
    await _written(path, graph, once=False)
    await graph.aclose_all()  # the flush fails: QEMU's qcow2_close then skips mark_clean
    assert _header(path)[0]
    if IMGS:
        check_consistent(path)


async def test_unflushed_close_after_failed_flush_keeps_the_image_dirty(
    tmp_path: Path, graph: BlockGraph
) -> None:
    # The synchronous close passes blkdebug by: it must remember that the
    # node's last flush failed, and neither write the pending L1 entries
    # nor clear the dirty bit.
    path = tmp_path / "a.qcow2"
    node = await _written(path, graph, once=True)
    with pytest.raises(BlockIOError):
        await node.flush()
    graph.close_all()
    assert _header(path)[0]
    if IMGS:
        check_consistent(path)


async def test_failed_all_zero_withdrawal_is_not_undone_by_the_close(
    tmp_path: Path, graph: BlockGraph
) -> None:
    # The withdrawal of qmpd's all-zero bit is a header write and a sync;
    # when the sync fails, the cleared bit may be on disk already.  The
    # clean header written at close must not set the bit again.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, lazy_refcounts=True)
    node = open_over_blkdebug(graph, path)
    assert isinstance(node, Qcow2Node)
    await node.truncate(8 * MiB)  # metadata changes: dirty, still all-zero
    assert _header(path) == (True, True)
    debug = graph.get("dbg")
    assert isinstance(debug, BlkdebugNode)
    # The next write (the withdrawal's header) arms a rule that fails the
    # sync after it, once.
    debug.rules = Rules([InjectError("pwritev", iotypes=frozenset({"flush"}), once=True)])
    with pytest.raises(BlockIOError):
        await node.write(MiB, b"\x44" * 4096)
    await graph.aclose_all()  # this flush succeeds: the image is marked clean
    assert _header(path) == (False, False)
    if IMGS:
        check_consistent(path)
