"""StatusSnapshot: a block-status answer reused while qmpd changed nothing,
its zero claims confirmed afterwards.

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
from qmpd.block.extents import Extent
from qmpd.block.file import FileNode
from qmpd.block.graph import BlockGraph
from tests.mirror.conftest import spy_block_status

MiB = 1 << 20
#: A disk that writes and shares writing (share-rw=on), as the parties of
#: a mirror's source do.
SHARING = NodeUser("disk0", BACKEND_KIND, int(DISK_PERM), int(DISK_SHARED | Perm.WRITE))


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


@pytest.fixture
def node(graph: BlockGraph, image: Path) -> FileNode:
    node = FileNode("src", CommonOptions(), filename=str(image))
    graph.insert(node)
    graph.attach(node, SHARING)
    assert node.others_may_write()
    return node


def runs(extents: list[Extent] | None) -> list[tuple[int, int, bool]]:
    assert extents is not None
    return [(e.start, e.length, e.zero) for e in extents]


def outside_write(image: Path, offset: int, length: int = 4096) -> None:
    fd = os.open(image, os.O_WRONLY)
    try:
        os.pwrite(fd, b"\x77" * length, offset)
    finally:
        os.close(fd)


async def test_parts_are_cut_from_one_walk(node: FileNode) -> None:
    snapshot = await node.status_snapshot(0, node.size)
    assert runs(snapshot.extents) == [(0, MiB, False), (MiB, 7 * MiB, True)]
    assert runs(snapshot.get(MiB // 2, 2 * MiB)) == [(MiB // 2, MiB // 2, False), (MiB, MiB, True)]
    assert runs(snapshot.get(4 * MiB, 5 * MiB)) == [(4 * MiB, MiB, True)]


async def test_confirm_finds_another_process_write_in_a_hole_it_served(
    node: FileNode, image: Path
) -> None:
    snapshot = await node.status_snapshot(0, node.size)
    outside_write(image, 4 * MiB)
    # Served stale (provisionally): the hole holds data by now.
    assert runs(snapshot.get(4 * MiB, 5 * MiB)) == [(4 * MiB, MiB, True)]
    changed = await snapshot.confirm()
    assert [(e.start, e.length, e.zero) for e in changed] == [(4 * MiB, 4096, False)]
    # Confirmed once: it answers nothing more.
    assert snapshot.get(0, MiB) is None
    assert await snapshot.confirm() == []


async def test_confirm_asks_nothing_when_no_zero_claim_was_served(
    node: FileNode, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = await node.status_snapshot(0, node.size)
    asked = spy_block_status(monkeypatch)
    outside_write(image, 0)  # over data: a claim of data stays true enough
    assert runs(snapshot.get(0, MiB)) == [(0, MiB, False)]
    assert await snapshot.confirm() == []
    assert asked == []


async def test_own_write_ends_the_answers_not_the_confirmation(node: FileNode, image: Path) -> None:
    snapshot = await node.status_snapshot(0, node.size)
    assert snapshot.get(2 * MiB, 3 * MiB) is not None
    outside_write(image, 2 * MiB + 8192)
    await node.write(6 * MiB, b"\x01" * 4096)
    assert not snapshot.reusable()
    assert snapshot.get(0, MiB) is None
    changed = await snapshot.confirm()
    assert [(e.start, e.length) for e in changed] == [(2 * MiB + 8192, 4096), (6 * MiB, 4096)]
