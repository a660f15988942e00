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
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    # The served claim is confirmed; the own write was in a hole never
    # served as zero: whoever wrote it through qmpd knows of it.
    changed = await snapshot.confirm()
    assert [(e.start, e.length) for e in changed] == [(2 * MiB + 8192, 4096)]


async def test_confirm_leaves_out_claims_answered_afresh(node: FileNode, image: Path) -> None:
    """A range asked again of the node (the snapshot stale after an own
    write) is relied on as that fresh answer says, not as the claim served
    before: the confirmation has nothing to say there, and only there."""
    snapshot = await node.status_snapshot(0, node.size)
    assert runs(await snapshot.status(2 * MiB, 3 * MiB)) == [(2 * MiB, MiB, True)]
    assert runs(await snapshot.status(3 * MiB, 4 * MiB)) == [(3 * MiB, MiB, True)]
    await node.write(2 * MiB + 4096, b"\x01" * 4096)  # ours: the answers end
    outside_write(image, 3 * MiB + 8192)  # in a claim settled below
    outside_write(image, 3 * MiB + 128 * 1024)  # in one still served only
    fresh = await snapshot.status(2 * MiB, 3 * MiB + 64 * 1024)
    assert runs(fresh)[:4] == [
        (2 * MiB, 4096, True), (2 * MiB + 4096, 4096, False),
        (2 * MiB + 8192, MiB, True), (3 * MiB + 8192, 4096, False),
    ]  # fmt: skip
    changed = await snapshot.confirm()
    assert [(e.start, e.length) for e in changed] == [(3 * MiB + 128 * 1024, 4096)]


BLOCK = 4096
BLOCKS = 16


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data_at=st.sets(st.integers(0, BLOCKS - 1), max_size=6),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["ask", "own", "outside"]),
            st.integers(0, BLOCKS - 1),
            st.integers(1, 8),
        ),
        max_size=24,
    ),
)
def test_confirm_reports_exactly_the_claims_still_relied_on(
    tmp_path: Path, data_at: set[int], steps: list[tuple[str, int, int]]
) -> None:
    """Random questions, own writes and other processes' writes against a
    model: the confirmation reports exactly the blocks that were served as
    zero, not asked afresh since, and hold data now.  Fewer would let a
    mirror lose another process's write; more has it copy (and zero around)
    what it already copied from a fresh answer."""
    path = tmp_path / "prop.img"
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(BLOCKS * BLOCK)
        for b in data_at:
            f.seek(b * BLOCK)
            f.write(b"\x5a" * BLOCK)
    graph = BlockGraph()
    try:
        node = FileNode("prop", CommonOptions(), filename=str(path))
        graph.insert(node)
        graph.attach(node, SHARING)

        async def body() -> set[int]:
            snapshot = await node.status_snapshot(0, node.size)
            zero_then = set(range(BLOCKS)) - data_at
            reusable, claims, data_now = True, set[int](), set(data_at)
            for kind, first, count in steps:
                blocks = set(range(first, min(BLOCKS, first + count)))
                if kind == "ask":
                    await snapshot.status(first * BLOCK, (first + len(blocks)) * BLOCK)
                    if reusable:
                        claims |= blocks & zero_then
                    else:
                        claims -= blocks
                elif kind == "own":
                    await node.write(first * BLOCK, b"\x01" * BLOCK)
                    reusable = False
                    data_now.add(first)
                else:
                    outside_write(path, first * BLOCK)
                    data_now.add(first)
            changed = await snapshot.confirm()
            got = {b for e in changed for b in range(e.start // BLOCK, e.end // BLOCK)}
            assert got == claims & data_now
            return got

        trio.run(body)
    finally:
        graph.close_all()
