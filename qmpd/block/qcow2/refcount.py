"""Refcounts: how many references each host cluster has, and allocation.

Theory of operation.  The refcount table (cluster-aligned, in the header)
lists refcount blocks; each block holds ``cluster_size * 8 / refcount_bits``
packed big-endian entries (widths below a byte pack from the least
significant bit up, as QEMU reads them).  A cluster whose refcount is 0 is
free; everything the image uses (header, tables, data) counts 1, a host
cluster shared by compressed clusters counts once per user.

Changes are written through: every update writes the bytes of its entry at
once, so nothing is lost when the process dies.  The image's dirty bit
(set by the node before the first metadata change) covers the order in
which the kernel may put those writes on disk; on the next read-write open
:func:`rebuild` recomputes every refcount from the L1/L2 tables.

Allocation takes the first run of free clusters at or after a low-water
mark (freed clusters lower it), as QEMU does.  A cluster beyond the table's
reach is free.  A region that has no refcount block gets one placed on its
own first cluster (free by definition: nothing in the region is counted
yet), which it then counts.  When the table is too short it is copied to a
larger one, placed (with the new region's block after it) at the start of
the first region it did not cover; the header is switched after both are
written and flushed, then the old table's clusters are freed.
"""

from __future__ import annotations

import errno
import struct
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from ..node import BlockIOError
from .storage import Storage

#: Refcount blocks kept in memory.
BLOCK_CACHE = 64


def get_entry(buf: bytes | bytearray, index: int, order: int) -> int:
    if order >= 3:
        width = 1 << (order - 3)
        return int.from_bytes(buf[index * width : (index + 1) * width], "big")
    bits = 1 << order
    per_byte = 8 >> order
    return (buf[index // per_byte] >> (bits * (index % per_byte))) & ((1 << bits) - 1)


def set_entry(buf: bytearray, index: int, order: int, value: int) -> tuple[int, int]:
    """Store ``value``; returns the (start, end) bytes of ``buf`` that changed."""
    if order >= 3:
        width = 1 << (order - 3)
        buf[index * width : (index + 1) * width] = value.to_bytes(width, "big")
        return index * width, (index + 1) * width
    bits = 1 << order
    per_byte = 8 >> order
    shift = bits * (index % per_byte)
    mask = ((1 << bits) - 1) << shift
    pos = index // per_byte
    buf[pos] = (buf[pos] & ~mask) | (value << shift)
    return pos, pos + 1


class Refcounts:
    """The refcount structure of one open image (see the module docstring)."""

    def __init__(
        self,
        store: Storage,
        cluster_bits: int,
        order: int,
        table_offset: int,
        table_clusters: int,
        table: list[int],
        on_table_moved: Callable[[int, int], Awaitable[None]],
    ) -> None:
        self.store = store
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.order = order
        self.max_value = (1 << (1 << order)) - 1
        self.per_block = (self.cluster_size * 8) >> order
        self.table_offset = table_offset
        self.table_clusters = table_clusters
        self.table = table
        self._on_table_moved = on_table_moved
        self._blocks: OrderedDict[int, bytearray] = OrderedDict()
        self.free_index = 0

    @staticmethod
    def parse_table(data: bytes) -> list[int]:
        return list(struct.unpack(f">{len(data) // 8}Q", data))

    async def _block(self, offset: int) -> bytearray:
        buf = self._blocks.get(offset)
        if buf is None:
            buf = bytearray(await self.store.read(offset, self.cluster_size))
            self._blocks[offset] = buf
            if len(self._blocks) > BLOCK_CACHE:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(offset)
        return buf

    async def get(self, cluster: int) -> int:
        """The refcount of host cluster ``cluster`` (an index, not bytes)."""
        block_index, index = divmod(cluster, self.per_block)
        if block_index >= len(self.table):
            return 0
        offset = self.table[block_index] & ~0x1FF
        if not offset:
            return 0
        return get_entry(await self._block(offset), index, self.order)

    async def _set(self, cluster: int, value: int) -> None:
        # The caller made sure the block exists.
        block_index, index = divmod(cluster, self.per_block)
        offset = self.table[block_index] & ~0x1FF
        buf = await self._block(offset)
        start, end = set_entry(buf, index, self.order, value)
        await self.store.write(offset + start, buf[start:end])

    async def change(self, cluster: int, delta: int) -> int:
        """Add ``delta`` to a counted cluster's refcount; returns the new value.

        Raises BlockIOError(EIO) when the count would leave its range (the
        image is inconsistent, or refcount-bits is too narrow).
        """
        value = await self.get(cluster) + delta
        if value < 0 or value > self.max_value:
            raise BlockIOError(errno.EIO, "qcow2: refcount out of range")
        await self._ensure_block(cluster)
        await self._set(cluster, value)
        if value == 0:
            self.free_index = min(self.free_index, cluster)
        return value

    async def _ensure_block(self, cluster: int) -> bool:
        """Make sure ``cluster``'s region has a block; True if one was made."""
        block_index = cluster // self.per_block
        if block_index >= len(self.table):
            await self._grow_table(block_index)
            return True
        if not self.table[block_index]:
            await self._new_block(block_index)
            return True
        return False

    async def _new_block(self, block_index: int) -> None:
        home = block_index * self.per_block  # the region's first cluster
        buf = bytearray(self.cluster_size)
        set_entry(buf, 0, self.order, 1)
        offset = home << self.cluster_bits
        await self.store.write(offset, buf)
        self._blocks[offset] = buf
        self.table[block_index] = offset
        await self.store.write(self.table_offset + block_index * 8, struct.pack(">Q", offset))

    async def _grow_table(self, block_index: int) -> None:
        entries = max(block_index + 1, 2 * len(self.table))
        clusters = -(-entries * 8 // self.cluster_size)
        entries = clusters * self.cluster_size // 8
        if clusters + 1 > self.per_block:
            raise BlockIOError(errno.EFBIG, "qcow2: refcount table too large")
        home = block_index * self.per_block
        table_offset = home << self.cluster_bits
        block_offset = (home + clusters) << self.cluster_bits
        buf = bytearray(self.cluster_size)
        for i in range(clusters + 1):
            set_entry(buf, i, self.order, 1)
        new_table = self.table + [0] * (entries - len(self.table))
        new_table[block_index] = block_offset
        await self.store.write(block_offset, buf)
        await self.store.write(table_offset, struct.pack(f">{entries}Q", *new_table))
        await self.store.flush()
        old_offset, old_clusters = self.table_offset, self.table_clusters
        self._blocks[block_offset] = buf
        self.table, self.table_offset, self.table_clusters = new_table, table_offset, clusters
        await self._on_table_moved(table_offset, clusters)
        first = old_offset >> self.cluster_bits
        for cluster in range(first, first + old_clusters):
            await self.change(cluster, -1)

    async def allocate(self, count: int) -> int:
        """Find ``count`` contiguous free clusters, count them once and make
        the file reach them; returns the byte offset of the first."""
        while True:
            start = await self._find_free(count)
            made = False
            for cluster in range(start, start + count):
                if await self._ensure_block(cluster):
                    made = True  # the block took a cluster: search again
                    break
            if made:
                continue
            for cluster in range(start, start + count):
                await self._set(cluster, 1)
            await self.store.ensure_size((start + count) << self.cluster_bits)
            return start << self.cluster_bits

    async def _find_free(self, count: int) -> int:
        cluster = self.free_index
        first_free: int | None = None
        run = 0
        while True:
            if await self.get(cluster) == 0:
                if first_free is None:
                    first_free = cluster
                run += 1
                if run == count:
                    start = cluster - count + 1
                    self.free_index = start + count if start == first_free else first_free
                    return start
            else:
                run = 0
            cluster += 1

    async def free(self, offset: int, count: int = 1) -> list[int]:
        """Drop one reference from each cluster; returns the byte offsets of
        clusters that became free (the caller may discard them below)."""
        freed = []
        first = offset >> self.cluster_bits
        for cluster in range(first, first + count):
            if await self.change(cluster, -1) == 0:
                freed.append(cluster << self.cluster_bits)
        return freed


async def rebuild(
    store: Storage,
    cluster_bits: int,
    order: int,
    counts: dict[int, int],
) -> tuple[int, int]:
    """Write a fresh refcount structure for ``counts`` (cluster -> refcount,
    everything the image references) after the last used cluster.

    Returns (table offset, table clusters); the caller points the header
    at them.  The old structure's clusters become free.  Raises
    BlockIOError(EIO) when a count does not fit ``order``.
    """
    cluster_size = 1 << cluster_bits
    per_block = (cluster_size * 8) >> order
    max_value = (1 << (1 << order)) - 1
    if any(v > max_value for v in counts.values()):
        raise BlockIOError(errno.EIO, "qcow2: a refcount does not fit refcount-bits")
    end = max(counts, default=0) + 1
    end = max(end, -(-store.size // cluster_size))
    blocks = table_clusters = 1
    while True:
        total = end + table_clusters + blocks
        need_blocks = -(-total // per_block)
        need_table = -(-need_blocks * 8 // cluster_size)
        if (need_blocks, need_table) == (blocks, table_clusters):
            break
        blocks, table_clusters = need_blocks, need_table
    table_offset = end << cluster_bits
    counts = dict(counts)
    for cluster in range(end, end + table_clusters + blocks):
        counts[cluster] = 1
    table = [0] * (table_clusters * cluster_size // 8)
    by_block: dict[int, list[tuple[int, int]]] = {}
    for cluster, value in counts.items():
        by_block.setdefault(cluster // per_block, []).append((cluster % per_block, value))
    for i in range(blocks):
        block_offset = (end + table_clusters + i) << cluster_bits
        table[i] = block_offset
        buf = bytearray(cluster_size)
        for index, value in by_block.get(i, []):
            set_entry(buf, index, order, value)
        await store.write(block_offset, buf)
    await store.write(table_offset, struct.pack(f">{len(table)}Q", *table))
    await store.flush()
    return table_offset, table_clusters


__all__ = ["BLOCK_CACHE", "Refcounts", "get_entry", "rebuild", "set_entry"]
