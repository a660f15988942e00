"""The write path's orderings and concurrency: a new L2 table is linked
only after a sync made it durable (by flush, write_behind or close); data
writes run outside the node's lock while requests touching the same
clusters wait; the file grows in steps; the zero test is exact."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from qmpd.block import BlockGraph
from qmpd.block.qcow2.format import parse_header
from qmpd.block.qcow2.storage import Storage
from qmpd.block.qcow2.write import all_zero

from .conftest import IMGS, check_clean, create_image, needs_qemu, open_qcow2, raw_content

KiB = 1 << 10
MiB = 1 << 20
#: 4 KiB clusters: an L2 table maps 2 MiB, so new tables come quickly.
CS = 4 * KiB


class _Recording(Storage):
    """Storage that logs writes and flushes and can hold big writes back."""

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.log: list[tuple[str, int, int]] = []
        self.gate: trio.Event | None = None  # set: big writes go on

    async def write(
        self, offset: int, data: bytes | bytearray | memoryview, event: str | None = None
    ) -> None:
        if self.gate is not None and len(data) > 256 * KiB:
            await self.gate.wait()
        self.log.append(("write", offset, len(data)))
        await super().write(offset, data, event)

    async def flush(self) -> None:
        self.log.append(("flush", 0, 0))
        await super().flush()


def _record(node: Any) -> _Recording:
    store = _Recording(node.file)
    node.store = node.tables.store = node.refcounts.store = store
    return store


def _l1_on_disk(path: Path, index: int) -> int:
    raw = path.read_bytes()
    header = parse_header(raw[:65536])
    (value,) = struct.unpack_from(">Q", raw, header.l1_table_offset + 8 * index)
    return int(value)


def _dirty(path: Path) -> bool:
    return parse_header(path.read_bytes()[:65536]).dirty


async def test_a_new_l2_table_is_linked_by_the_flush_after_a_sync(
    graph: BlockGraph, tmp_path: Path
) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=16 * MiB, cluster_size=CS)
    node: Any = open_qcow2(graph, path)
    store = _record(node)
    await node.write(5 * MiB, b"\x5a" * 10_000)  # L1 index 2: a new table
    assert _l1_on_disk(path, 2) == 0  # not linked yet...
    assert await node.read(5 * MiB, 10_000) == b"\x5a" * 10_000  # ...but in use
    table = node.tables.l2_offset(2)
    await node.flush()
    assert _l1_on_disk(path, 2) & ~(1 << 63) == table
    # The table's write, then a sync, then the L1 entry's write.
    events = store.log
    table_write = events.index(("write", table, CS))
    l1_write = events.index(("write", node.header.l1_table_offset + 16, 8))
    assert ("flush", 0, 0) in events[table_write:l1_write]
    assert not _dirty(path)
    graph.close_all()
    if IMGS:
        check_clean(path)


async def test_write_behind_links_the_tables_written_before_its_sync(
    graph: BlockGraph, tmp_path: Path
) -> None:
    path = tmp_path / "a.qcow2"
    # Lazy refcounts: the only images the dirty bit is set on.
    await create_image(path, size=16 * MiB, cluster_size=CS, lazy_refcounts=True)
    node: Any = open_qcow2(graph, path)
    await node.write(3 * MiB, b"\x01" * 5000)
    await node.write(9 * MiB, b"\x02" * 5000)
    assert _l1_on_disk(path, 1) == _l1_on_disk(path, 4) == 0
    await node.write_behind(0, node.size)
    assert _l1_on_disk(path, 1)
    assert _l1_on_disk(path, 4)
    assert not node.tables.pending
    assert _dirty(path)  # a hint, not a flush: the image stays dirty


async def test_close_links_pending_tables(graph: BlockGraph, tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=16 * MiB, cluster_size=CS)
    node: Any = open_qcow2(graph, path)
    await node.write(7 * MiB + 100, b"\x07" * 300_000)
    assert node.tables.pending
    graph.close_all()  # no flush first
    assert _l1_on_disk(path, 3)
    assert not _dirty(path)
    if IMGS:
        check_clean(path)
        content = raw_content(path, tmp_path)
        assert content[7 * MiB + 100 : 7 * MiB + 300_100] == b"\x07" * 300_000


async def test_growing_the_l1_table_keeps_pending_entries_pending(
    graph: BlockGraph, tmp_path: Path
) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, cluster_size=CS)
    node: Any = open_qcow2(graph, path)
    await node.write(3 * MiB, b"\x03" * 5000)  # pending L1 entry 1
    await node.truncate(6 * MiB)  # new L1 entries, in the same cluster
    assert _l1_on_disk(path, 1) == 0  # not written without a sync first
    await node.write(5 * MiB, b"\x05" * 5000)
    await node.flush()
    assert _l1_on_disk(path, 1)
    assert _l1_on_disk(path, 2)
    assert await node.read(3 * MiB, 5000) == b"\x03" * 5000
    graph.close_all()
    if IMGS:
        check_clean(path)


async def test_data_is_written_outside_the_lock_and_same_clusters_wait(
    graph: BlockGraph, tmp_path: Path
) -> None:
    path = tmp_path / "a.qcow2"
    # 64 KiB clusters; lazy refcounts, so that the dirty bit is used.
    await create_image(path, size=16 * MiB, lazy_refcounts=True)
    node: Any = open_qcow2(graph, path)
    # First the dirty bit and the L2 table: what follows runs no thread
    # until the gate opens, so "all tasks blocked" means what it says.
    await node.write(12 * MiB, b"\x12" * 4 * KiB)
    store = _record(node)
    store.gate = trio.Event()
    done: list[str] = []

    async def put(name: str, offset: int, data: bytes) -> None:
        await node.write(offset, data)
        done.append(name)

    async with trio.open_nursery() as nursery:
        # A: 1 MiB from 4 KiB into the image, held back at its data write.
        nursery.start_soon(put, "a", 4 * KiB, b"\xaa" * MiB)
        await trio.testing.wait_all_tasks_blocked()
        # B shares A's last cluster: it waits.  C is elsewhere: it goes on.
        nursery.start_soon(put, "b", MiB + 4 * KiB, b"\xbb" * 4 * KiB)
        nursery.start_soon(put, "c", 8 * MiB, b"\xcc" * 4 * KiB)
        await trio.testing.wait_all_tasks_blocked()
        assert done == ["c"]
        await node.flush()  # a flush in between: the image stays dirty
        assert _dirty(path)
        store.gate.set()
    assert done == ["c", "a", "b"]
    assert await node.read(0, 2 * MiB) == (
        bytes(4 * KiB) + b"\xaa" * MiB + b"\xbb" * 4 * KiB + bytes(MiB - 8 * KiB)
    )
    assert await node.read(8 * MiB, 4 * KiB) == b"\xcc" * 4 * KiB
    await node.flush()
    assert not _dirty(path)
    if IMGS:
        graph.close_all()
        check_clean(path)


async def test_a_write_cancelled_after_allocating_still_maps(
    graph: BlockGraph, tmp_path: Path
) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=16 * MiB)
    node: Any = open_qcow2(graph, path)
    await node.write(12 * MiB, b"\x12" * 4 * KiB)  # dirty bit, L2 table
    store = _record(node)
    store.gate = trio.Event()
    scope = trio.CancelScope()

    async def put() -> None:
        with scope:
            await node.write(4 * KiB, b"\xaa" * MiB)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(put)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()  # allocated, data held back at the gate
        await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
    # Done anyway: no cluster counted and unused.
    assert await node.read(4 * KiB, MiB) == b"\xaa" * MiB
    await node.flush()
    graph.close_all()
    if IMGS:
        check_clean(path)


@needs_qemu
@pytest.mark.parametrize("seed", range(4))
async def test_concurrent_requests_on_shared_clusters(
    graph: BlockGraph, tmp_path: Path, seed: int
) -> None:
    # Disjoint byte ranges that share clusters, written, zeroed and
    # discarded all at once: the result is the model's, the image clean.
    size = 8 * MiB
    path = tmp_path / "c.qcow2"
    await create_image(path, size=size, cluster_size=CS if seed % 2 else 64 * KiB)
    node: Any = open_qcow2(graph, path, discard="unmap")
    rng = random.Random(seed)
    model = bytearray(size)
    for rounds in range(3):
        cuts = sorted(rng.sample(range(1, size), 60))
        ranges = list(zip([0, *cuts], [*cuts, size], strict=True))
        rng.shuffle(ranges)
        async with trio.open_nursery() as nursery:
            for i, (start, end) in enumerate(ranges[:40]):
                action = rng.random()
                if action < 0.7:
                    data = bytes([(rounds * 40 + i) % 255 + 1]) * (end - start)
                    nursery.start_soon(node.write, start, data)
                    model[start:end] = data
                elif action < 0.85:
                    nursery.start_soon(node.write_zeroes, start, end - start, True)
                    model[start:end] = bytes(end - start)
                else:
                    # Only whole clusters go, and those read as zero after.
                    cs = node.cluster_size
                    first, last = -(-start // cs) * cs, end // cs * cs
                    nursery.start_soon(node.discard, start, end - start)
                    if last > first:
                        model[first:last] = bytes(last - first)
            if rounds == 1:
                nursery.start_soon(node.flush)
    assert await node.read(0, size) == bytes(model)
    await node.flush()
    graph.close_all()
    check_clean(path)
    assert raw_content(path, tmp_path) == bytes(model)


async def test_the_file_grows_in_steps(graph: BlockGraph, tmp_path: Path) -> None:
    path = tmp_path / "g.qcow2"
    await create_image(path, size=256 * MiB)
    node: Any = open_qcow2(graph, path)
    resizes: list[int] = []
    file = node.file
    resize = file._truncate

    async def counting(size: int) -> None:
        resizes.append(size)
        await resize(size)

    file._truncate = counting
    for i in range(64):
        await node.write(i * 2 * MiB, b"\x01" * MiB)
    # One per allocation would be 64; steps of 1/8 of the size make ~20.
    assert len(resizes) < 32, resizes
    assert resizes == sorted(resizes)
    await node.flush()
    graph.close_all()
    if IMGS:
        check_clean(path)


@given(
    length=st.sampled_from([0, 1, 4095, 65536, MiB, MiB + 1, 3 * MiB]),
    at=st.one_of(st.none(), st.integers(0, 3 * MiB)),
    view=st.booleans(),
)
def test_all_zero_is_exact(length: int, at: int | None, view: bool) -> None:
    buf = bytearray(length + 2)
    if at is not None and at < length:
        buf[at + 1] = 1
    data = memoryview(buf)[1 : length + 1] if view else bytes(buf[1 : length + 1])
    assert all_zero(data) == (not any(data))
