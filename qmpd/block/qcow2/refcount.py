"""Refcounts: how many references each host cluster has, and allocation.

Theory of operation.  The refcount table (cluster-aligned, in the header)
lists refcount blocks; each block holds ``cluster_size * 8 / refcount_bits``
packed big-endian entries (widths below a byte pack from the least
significant bit up, as QEMU reads them).  A cluster whose refcount is 0 is
free; everything the image uses (header, tables, data) counts 1, a host
cluster shared by compressed clusters counts once per user.

Changes are written through: every update writes the bytes of its entry at
once, so nothing is lost when the process dies, and the cached blocks and
table take a change only after the file did (a failed write leaves memory
as the file is).  The node writes a cluster's refcount before anything
points at it and drops it after nothing does, so a killed process leaves
leaks at worst.  An image left dirty (lazy refcounts) has its refcounts
recomputed at the next read-write open: :func:`plan_rebuild`.

Allocation takes the first run of free clusters at or after a low-water
mark (freed clusters lower it), as QEMU does; the search runs over whole
refcount blocks with byte searches, and a run of clusters is counted with
one write per block it touches.  A cluster beyond the table's
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
            buf = bytearray(await self.store.read(offset, self.cluster_size, "refblock_load"))
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
        await self._set_range(cluster, 1, value)

    async def _set_range(self, first: int, count: int, value: int) -> None:
        """Give ``count`` clusters from ``first`` the refcount ``value``:
        one write per refcount block touched.  The caller made sure the
        blocks exist."""
        cluster, end = first, first + count
        while cluster < end:
            block_index, index = divmod(cluster, self.per_block)
            n = min(self.per_block - index, end - cluster)
            offset = self.table[block_index] & ~0x1FF
            new = bytearray(await self._block(offset))
            start, stop = _fill(new, index, n, self.order, value)
            await self._store_part(offset, new, start, stop)
            cluster += n

    async def _store_part(self, offset: int, new: bytearray, start: int, stop: int) -> None:
        """Write bytes ``[start, stop)`` of block ``offset``'s new content
        ``new``, then (only then) take them into the cache.  Raises
        BlockIOError, the cache unchanged."""
        await self.store.write(offset + start, new[start:stop], "refblock_update_part")
        cached = self._blocks.get(offset)
        if cached is not None:
            cached[start:stop] = new[start:stop]

    async def _ensure_block(self, cluster: int) -> bool:
        """Make sure ``cluster``'s region has a block; True if one was made."""
        block_index = cluster // self.per_block
        # QEMU raises it for every block a refcount update touches, made
        # or found (alloc_refcount_block).
        self.store.event("refblock_alloc")
        if block_index >= len(self.table):
            await self._grow_table(block_index)
            return True
        if not self.table[block_index]:
            await self._new_block(block_index)
            return True
        return False

    async def _ensure_blocks(self, first: int, count: int) -> bool:
        """:meth:`_ensure_block` for every region ``count`` clusters from
        ``first`` touch; True as soon as one block was made (it may have
        taken a cluster of the range: the caller searches again)."""
        last = (first + count - 1) // self.per_block
        for block_index in range(first // self.per_block, last + 1):
            if await self._ensure_block(block_index * self.per_block):
                return True
        return False

    async def _new_block(self, block_index: int) -> None:
        home = block_index * self.per_block  # the region's first cluster
        buf = bytearray(self.cluster_size)
        set_entry(buf, 0, self.order, 1)
        offset = home << self.cluster_bits
        await self.store.write(offset, buf, "refblock_alloc_write")
        await self.store.write(
            self.table_offset + block_index * 8, struct.pack(">Q", offset), "refblock_alloc_hookup"
        )
        # Used only once the table on disk points at it.
        self._blocks[offset] = buf
        self.table[block_index] = offset

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
        await self.store.write(block_offset, buf, "refblock_alloc_write_blocks")
        await self.store.write(
            table_offset, struct.pack(f">{entries}Q", *new_table), "refblock_alloc_write_table"
        )
        await self.store.flush()
        old_offset, old_clusters = self.table_offset, self.table_clusters
        self.store.event("refblock_alloc_switch_table")
        await self._on_table_moved(table_offset, clusters)
        # Used only once the header on disk points at it.
        self._blocks[block_offset] = buf
        self.table, self.table_offset, self.table_clusters = new_table, table_offset, clusters
        await self.free(old_offset, old_clusters)

    async def allocate(self, count: int) -> int:
        """Find ``count`` contiguous free clusters, count them once and make
        the file reach them; returns the byte offset of the first.

        One refcount write per block touched, one resize of the file: a
        multi-cluster guest write costs what a one-cluster write does.
        """
        self.store.event("cluster_alloc")
        while True:
            start = await self._find_free(count)
            if await self._ensure_blocks(start, count):
                continue  # the new block took a cluster: search again
            await self._set_range(start, count, 1)
            await self.store.ensure_size((start + count) << self.cluster_bits)
            return start << self.cluster_bits

    async def _free_map(self, block_index: int) -> tuple[bytes | bytearray, int] | None:
        """A block's entries as (bytes, width): an entry is free when its
        ``width`` bytes are all zero.  None when the region has no block
        (everything in it is free)."""
        if block_index >= len(self.table):
            return None
        offset = self.table[block_index] & ~0x1FF
        if not offset:
            return None
        buf = await self._block(offset)
        if self.order >= 3:
            return buf, 1 << (self.order - 3)
        # Sub-byte widths: one byte per entry (rare, small images).
        return bytes(1 if get_entry(buf, i, self.order) else 0 for i in range(self.per_block)), 1

    async def _find_free(self, count: int) -> int:
        """The first run of ``count`` free clusters at or after the low-water
        mark, searched a refcount block at a time with byte searches (a
        full image's millions of used clusters are skipped at C speed)."""
        first_free: int | None = None
        run_start, run_len = 0, 0
        block_index, index = divmod(self.free_index, self.per_block)
        while True:
            base = block_index * self.per_block
            fmap = await self._free_map(block_index)
            if fmap is None:
                if first_free is None:
                    first_free = base + index
                if not run_len:
                    run_start = base + index
                run_len += self.per_block - index
                if run_len >= count or block_index >= len(self.table):
                    start = run_start  # past the table everything is free
                    break
                block_index, index = block_index + 1, 0
                continue
            buf, width = fmap
            if run_len:
                lead = _leading_free(buf, index, width)
                if run_len + lead >= count:
                    start = run_start
                    break
                if index + lead < self.per_block:
                    run_len = 0
                    index += lead
            if not run_len:
                if first_free is None:
                    one = _find_run(buf, index, 1, width)
                    if one is not None:
                        first_free = base + one
                        index = one
                found = (
                    _find_run(buf, index, count, width) if count <= self.per_block - index else None
                )
                if found is not None:
                    start = base + found
                    break
                tail = min(_trailing_free(buf, width), self.per_block - index)
                run_start, run_len = base + self.per_block - tail, tail
            else:
                run_len += self.per_block - index  # the whole block was free
            block_index, index = block_index + 1, 0
        assert first_free is not None  # a run was found, so a free cluster was
        self.free_index = start + count if start == first_free else first_free
        return start

    async def free(self, offset: int, count: int = 1) -> list[int]:
        """Drop one reference from each cluster; returns the byte offsets of
        clusters that became free (the caller may discard them below).

        One refcount write per block touched.  Raises BlockIOError(EIO)
        when a count is already 0 (the image is inconsistent).
        """
        self.store.event("cluster_free")
        freed = []
        cluster = offset >> self.cluster_bits
        end = cluster + count
        while cluster < end:
            block_index, index = divmod(cluster, self.per_block)
            n = min(self.per_block - index, end - cluster)
            self.store.event("refblock_alloc")
            if block_index >= len(self.table) or not self.table[block_index]:
                raise BlockIOError(errno.EIO, "qcow2: refcount out of range")
            block = self.table[block_index] & ~0x1FF
            buf = bytearray(await self._block(block))
            lo, hi = len(buf), 0
            now_free = []
            for i in range(index, index + n):
                value = get_entry(buf, i, self.order) - 1
                if value < 0:
                    raise BlockIOError(errno.EIO, "qcow2: refcount out of range")
                start, stop = set_entry(buf, i, self.order, value)
                lo, hi = min(lo, start), max(hi, stop)
                if value == 0:
                    now_free.append((cluster - index + i) << self.cluster_bits)
            await self._store_part(block, buf, lo, hi)
            freed += now_free
            cluster += n
        if freed:
            self.free_index = min(self.free_index, freed[0] >> self.cluster_bits)
        return freed


def _fill(buf: bytearray, index: int, count: int, order: int, value: int) -> tuple[int, int]:
    """Set ``count`` entries from ``index`` to ``value``; the changed byte span."""
    if order >= 3:
        width = 1 << (order - 3)
        buf[index * width : (index + count) * width] = value.to_bytes(width, "big") * count
        return index * width, (index + count) * width
    lo, hi = len(buf), 0
    for i in range(index, index + count):
        start, stop = set_entry(buf, i, order, value)
        lo, hi = min(lo, start), max(hi, stop)
    return lo, hi


def _find_run(buf: bytes | bytearray, index: int, count: int, width: int) -> int | None:
    """The first entry at or after ``index`` starting ``count`` free ones."""
    zeros = bytes(count * width)
    pos = index * width
    while True:
        at = buf.find(zeros, pos)
        if at < 0:
            return None
        if at % width == 0:
            return at // width
        pos = at + width - at % width  # a match across entries: realign


def _leading_free(buf: bytes | bytearray, index: int, width: int) -> int:
    """Free entries from ``index`` on, up to the first used one."""
    rest = memoryview(buf)[index * width :]
    return (len(rest) - len(bytes(rest).lstrip(b"\0"))) // width


def _trailing_free(buf: bytes | bytearray, width: int) -> int:
    """Free entries at the end of the block."""
    return (len(buf) - len(bytes(buf).rstrip(b"\0"))) // width


def plan_rebuild(
    file_size: int,
    cluster_bits: int,
    order: int,
    counts: dict[int, int],
) -> tuple[int, int, list[tuple[int, bytes]]]:
    """A fresh refcount structure for ``counts`` (cluster -> refcount,
    everything the image references), placed after the last used cluster
    and the end of the file: (table offset, table clusters, the writes
    that store it).  Nothing is written; the caller writes, syncs, then
    points the header at the table, and the old structure's clusters
    become free.  Raises BlockIOError(EIO) when a count does not fit
    ``order``."""
    cluster_size = 1 << cluster_bits
    per_block = (cluster_size * 8) >> order
    max_value = (1 << (1 << order)) - 1
    if any(v > max_value for v in counts.values()):
        raise BlockIOError(errno.EIO, "qcow2: a refcount does not fit refcount-bits")
    end = max(counts, default=0) + 1
    end = max(end, -(-file_size // cluster_size))
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
    writes: list[tuple[int, bytes]] = []
    for i in range(blocks):
        block_offset = (end + table_clusters + i) << cluster_bits
        table[i] = block_offset
        buf = bytearray(cluster_size)
        for index, value in by_block.get(i, []):
            set_entry(buf, index, order, value)
        writes.append((block_offset, bytes(buf)))
    writes.append((table_offset, struct.pack(f">{len(table)}Q", *table)))
    return table_offset, table_clusters, writes


__all__ = ["BLOCK_CACHE", "Refcounts", "get_entry", "plan_rebuild", "set_entry"]
