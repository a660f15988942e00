"""The bulk paths of the qcow2 driver: whole-table encodings, the free
cluster search over refcount blocks, multi-cluster allocations as one
step, and the L1/L2 scan done with byte operations.  Each fast path is
checked against the slow, obvious computation it replaces."""

from __future__ import annotations

import random
from array import array
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from qmpd.block import BlockGraph
from qmpd.block.qcow2.format import COMPRESSED, COPIED, OFFSET_MASK, ZERO_FLAG, decode_l2
from qmpd.block.qcow2.format import ClusterKind as Kind
from qmpd.block.qcow2.refcount import Refcounts, set_entry
from qmpd.block.qcow2.storage import Storage
from qmpd.block.qcow2.tables import encode_u64, run_entries
from qmpd.block.qcow2.zero import _layer_runs

from .conftest import IMGS, check_clean, create_image, needs_qemu, open_qcow2, raw_content

MiB = 1 << 20


@given(
    first=st.integers(0, (1 << 62) - 1),
    count=st.integers(1, 8192),
    step=st.sampled_from([512, 4096, 65536, 1 << 21]),
)
def test_run_entries_is_the_table(first: int, count: int, step: int) -> None:
    first = first // step * step | COPIED
    if (first & ~COPIED) + count * step >= 1 << 62:
        return
    expected = encode_u64(array("Q", range(first, first + count * step, step)))
    assert run_entries(first, count, step) == expected


class _Bytes:
    """A Storage stand-in: a bytearray that grows."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.writes = 0

    @property
    def size(self) -> int:
        return len(self.data)

    def event(self, name: str) -> None:
        pass

    async def read(self, offset: int, length: int, event: str | None = None) -> bytes:
        out = bytes(self.data[offset : offset + length])
        return out + bytes(length - len(out))

    async def write(
        self, offset: int, data: bytes | bytearray | memoryview, event: str | None = None
    ) -> None:
        self.writes += 1
        end = offset + len(data)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data

    async def ensure_size(self, size: int) -> None:
        if size > len(self.data):
            self.data.extend(bytes(size - len(self.data)))

    async def flush(self) -> None:
        pass


async def _moved(offset: int, clusters: int) -> None:
    pass


@settings(max_examples=200, deadline=None)
@given(
    order=st.sampled_from([0, 2, 3, 4, 6]),
    used=st.lists(st.integers(0, 700), max_size=300),
    missing=st.sets(st.integers(1, 5)),
    start=st.integers(0, 700),
    count=st.integers(1, 40),
)
def test_find_free_matches_a_cluster_by_cluster_search(
    order: int, used: list[int], missing: set[int], start: int, count: int
) -> None:
    # 512-byte clusters: a block covers 4096 >> order clusters; 16-bit
    # refcounts give 256 per block, so several blocks are crossed.
    bits = 9
    per_block = (512 * 8) >> order
    blocks = 6
    store = _Bytes(512 * 8)
    table = [0] * blocks
    for i in range(blocks):
        if i not in missing:
            table[i] = (1 << 20) + i * 512  # anywhere outside the searched range
    for cluster in used:
        index, entry = divmod(cluster, per_block)
        if index < blocks and table[index]:
            buf = bytearray(store.data[table[index] : table[index] + 512].ljust(512, b"\0"))
            set_entry(buf, entry, order, 1)
            trio.run(store.write, table[index], buf)
    refs = Refcounts(store, bits, order, 512, 1, table, _moved)  # type: ignore[arg-type]
    refs.free_index = start

    async def slow() -> int:
        cluster = start
        while True:
            if all([await refs.get(c) == 0 for c in range(cluster, cluster + count)]):
                return cluster
            cluster += 1

    expected = trio.run(slow)
    assert trio.run(refs._find_free, count) == expected
    assert refs.free_index <= expected + count


def _l2_value(kind: str, host: int) -> int:
    if kind == "unallocated":
        return 0
    if kind == "zero":
        return ZERO_FLAG | (host if host % 3 else 0)
    if kind == "compressed":
        return COMPRESSED | host
    return host | COPIED


@settings(max_examples=200)
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from(["unallocated", "zero", "normal", "normal", "compressed"]),
            st.integers(1, 1 << 20),
        ),
        max_size=64,
    ),
    contiguous=st.booleans(),
    version=st.sampled_from([2, 3]),
)
def test_layer_runs_match_entry_by_entry(
    entries: list[tuple[str, int]], contiguous: bool, version: int
) -> None:
    cs = 512
    if contiguous:
        values = [(1000 + i) * cs | COPIED for i in range(len(entries))]
    else:
        values = [_l2_value(kind, n * cs) for kind, n in entries]
    raw = encode_u64(array("Q", values + [0] * (64 - len(values))))
    got = _layer_runs(raw, cs, version)
    expected: list[tuple[int, int]] | None = []
    for value in values:
        entry = decode_l2(value, 9, version)
        if entry.kind is Kind.COMPRESSED:
            expected = None
            break
        if entry.kind is Kind.NORMAL:
            assert expected is not None
            if expected and sum(expected[-1]) == entry.host:
                expected[-1] = (expected[-1][0], expected[-1][1] + cs)
            else:
                expected.append((entry.host & OFFSET_MASK, cs))
    assert got == expected


class _Counting(Storage):
    writes: list[tuple[int, int]]

    async def write(
        self, offset: int, data: bytes | bytearray | memoryview, event: str | None = None
    ) -> None:
        self.writes.append((offset, len(data)))
        await super().write(offset, data, event)


async def test_a_1mib_write_is_one_refcount_one_data_one_l2_write(
    graph: BlockGraph, tmp_path: Path
) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=64 * MiB)
    node: Any = open_qcow2(graph, path)
    store = _Counting(node.file)
    store.writes = []
    node.store = node.tables.store = node.refcounts.store = store
    await node.write(0, b"\x01" * MiB)  # the first: dirty bit, L2 table, ...
    store.writes.clear()
    await node.write(3 * MiB, b"\x02" * MiB)  # 16 clusters in an existing table
    assert len(store.writes) == 3, store.writes
    sizes = sorted(length for _, length in store.writes)
    assert sizes == [16 * 2, 16 * 8, MiB]  # refcounts, L2 entries, data
    await node.flush()


@needs_qemu
@pytest.mark.parametrize("refcount_bits", [1, 16, 64])
@pytest.mark.parametrize("prealloc", ["off", "metadata"])
async def test_random_runs_keep_the_image_clean(
    graph: BlockGraph, tmp_path: Path, refcount_bits: int, prealloc: str
) -> None:
    # 512-byte clusters: runs cross refcount block regions, the refcount
    # table grows, freed clusters leave holes a later run must skip.
    size = 6 * MiB
    path = tmp_path / "r.qcow2"
    await create_image(
        path, size=size, cluster_size=512, refcount_bits=refcount_bits, preallocation=prealloc
    )
    node = open_qcow2(graph, path)
    rng = random.Random(refcount_bits * 7 + len(prealloc))
    model = bytearray(size)
    for step in range(60):
        start = rng.randrange(0, size - 1)
        length = min(size - start, rng.choice([300, 4096, 70000, 300000]))
        action = rng.random()
        if action < 0.6:
            data = bytes([step % 255 + 1]) * length
            await node.write(start, data)
            model[start : start + length] = data
        elif action < 0.8:
            await node.write_zeroes(start, length, rng.random() < 0.5)
            model[start : start + length] = bytes(length)
        else:
            await node.discard(start, length)  # discard=ignore by default: no effect
    assert await node.read(0, size) == bytes(model)
    await node.flush()
    graph.close_all()
    if IMGS:
        check_clean(path)
        assert raw_content(path, tmp_path) == bytes(model)
