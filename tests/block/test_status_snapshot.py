"""StatusSnapshot: a block-status answer reused only where it still holds.

Another process's write is made with a file descriptor of the test's own
(the kernel cannot tell it from another process's), as QEMU's locks let it
happen whenever every party of the node shares writing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmpd.block import BACKEND_KIND, CommonOptions, NodeUser, Perm
from qmpd.block.backend import DISK_PERM, DISK_SHARED
from qmpd.block.file import FileNode
from qmpd.block.graph import BlockGraph

MiB = 1 << 20
#: A guest disk: writes, and lets nobody else write (share-rw=off).
DISK = NodeUser("disk0", BACKEND_KIND, int(DISK_PERM), int(DISK_SHARED))
#: A party that shares writing, as a mirror job's source edge does.
SHARING = NodeUser("m", "mirror job", 0, int(Perm.CONSISTENT_READ | Perm.WRITE), "source")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "src.img"
    with path.open("wb") as f:
        f.truncate(8 * MiB)
        f.write(b"\x5a" * MiB)
    return path


@pytest.fixture
def graph() -> Iterator[BlockGraph]:
    graph = BlockGraph()
    yield graph
    graph.close_all()


def add(graph: BlockGraph, image: Path, **opts: str) -> FileNode:
    node = FileNode("src", CommonOptions(), filename=str(image), **opts)
    graph.insert(node)
    return node


def outside_write(image: Path, offset: int) -> None:
    fd = os.open(image, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\x77" * 4096, offset)
    finally:
        os.close(fd)


async def test_reused_while_no_other_process_may_write(graph: BlockGraph, image: Path) -> None:
    node = add(graph, image)
    graph.attach(node, DISK)
    assert not node.others_may_write()
    snapshot = await node.status_snapshot(0, node.size)
    assert [(e.start, e.length, e.zero) for e in snapshot.extents] == [
        (0, MiB, False),
        (MiB, 7 * MiB, True),
    ]
    hole = snapshot.get(4 * MiB, 5 * MiB)
    assert hole is not None
    assert [(e.start, e.length, e.zero) for e in hole] == [(4 * MiB, MiB, True)]


async def test_zero_claims_asked_again_while_another_process_may_write(
    graph: BlockGraph, image: Path
) -> None:
    node = add(graph, image)
    graph.attach(node, SHARING)
    assert node.others_may_write()
    snapshot = await node.status_snapshot(0, node.size)
    outside_write(image, 4 * MiB)
    # The hole the walk saw holds data now: the snapshot must not say zero.
    assert snapshot.get(4 * MiB, 5 * MiB) is None
    assert snapshot.get(2 * MiB, 5 * MiB) is None
    # A claim of data is never a promise: still served.
    data = snapshot.get(0, MiB)
    assert data is not None
    assert [(e.start, e.length, e.zero) for e in data] == [(0, MiB, False)]
    assert snapshot.reusable()


async def test_locking_off_lets_anybody_write(graph: BlockGraph, image: Path) -> None:
    node = add(graph, image, locking="off")
    graph.attach(node, DISK)
    assert node.others_may_write()
    snapshot = await node.status_snapshot(0, node.size)
    assert snapshot.get(4 * MiB, 5 * MiB) is None


async def test_own_write_makes_it_stale_everywhere(graph: BlockGraph, image: Path) -> None:
    node = add(graph, image)
    graph.attach(node, DISK)
    snapshot = await node.status_snapshot(0, node.size)
    await node.write(6 * MiB, b"\x01" * 4096)
    assert not snapshot.reusable()
    assert snapshot.get(0, MiB) is None
    assert snapshot.get(4 * MiB, 5 * MiB) is None
