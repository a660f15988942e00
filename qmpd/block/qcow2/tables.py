"""The L1 table and a cache of L2 tables.

The L1 table lives in memory whole (QEMU does the same; 32 MiB at most).
L2 tables are read on demand into a small LRU cache of integer arrays.
L2 entries are written through (a run of consecutive entries in one
write), and enter the cache only after the write succeeded, so the file
always holds what the cache holds, failed writes included; the caller
orders "a cluster's data before the L2 entry that maps it".

A new L2 table is written at once, but the L1 entry pointing at it is
held in memory (*pending*) until :meth:`Tables.commit_l1`, which the node
calls after a sync that followed the table's write (its flush, its
``write_behind``, its close): so the table's content is durable before
anything points at it, without a sync per new table, which would stall
every request behind it.  QEMU orders the two with flushes of its own per
table (l2_allocate).  Holding the entry back costs only what a crash may
lose anyway, writes since the last flush (QEMU's write-back L2 cache
holds its entry updates back until a flush too); the image stays valid.
"""

from __future__ import annotations

import functools
import sys
from array import array
from collections import OrderedDict

from .format import OFFSET_MASK
from .storage import Storage

#: Bytes of L2 tables kept in memory.
L2_CACHE_BYTES = 32 * 1024 * 1024


def decode_u64(data: bytes) -> array[int]:
    table = array("Q", data)
    if sys.byteorder == "little":
        table.byteswap()
    return table


def encode_u64(table: array[int] | list[int]) -> bytes:
    out = array("Q", table)
    if sys.byteorder == "little":
        out.byteswap()
    return out.tobytes()


@functools.lru_cache(maxsize=8)
def _run_terms(count: int, step: int) -> tuple[int, int]:
    # As integers over ``count`` big-endian 64-bit words: every word 1, and
    # word i equal to i * step.
    ones = int.from_bytes((bytes(7) + b"\x01") * count, "big")
    steps = int.from_bytes(encode_u64(array("Q", range(0, count * step, step))), "big")
    return ones, steps


def run_entries(first: int, count: int, step: int) -> bytes:
    """The big-endian bytes of ``first, first + step, ...`` (``count``
    entries), as a table mapping consecutive clusters holds them.

    Built as one integer, ``first * ones + steps``: no word carries into the
    next (each value fits 64 bits), so its bytes are the table's.  That is
    C speed for a whole table, where a Python loop over 8192 entries per
    table makes a 1 TiB image's tables cost seconds.
    """
    ones, steps = _run_terms(count, step)
    return (first * ones + steps).to_bytes(count * 8, "big")


class Tables:
    """L1 in memory and cached L2 tables of one image."""

    def __init__(self, store: Storage, cluster_bits: int, l1_offset: int, l1: array[int]) -> None:
        self.store = store
        self.cluster_bits = cluster_bits
        self.cluster_size = 1 << cluster_bits
        self.l2_entries = self.cluster_size // 8
        self.l1_offset = l1_offset
        self.l1 = l1
        self._cache: OrderedDict[int, array[int]] = OrderedDict()
        self._capacity = max(4, L2_CACHE_BYTES // self.cluster_size)
        #: L1 indexes whose entry the file does not hold yet (see above).
        self.pending: set[int] = set()

    def split(self, guest_cluster: int) -> tuple[int, int]:
        """(L1 index, L2 index) of a guest cluster."""
        return divmod(guest_cluster, self.l2_entries)

    def l2_offset(self, l1_index: int) -> int:
        if l1_index >= len(self.l1):
            return 0
        return self.l1[l1_index] & OFFSET_MASK

    async def l2_table(self, offset: int) -> array[int]:
        table = self._cache.get(offset)
        if table is None:
            table = decode_u64(await self.store.read(offset, self.cluster_size, "l2_load"))
            self._cache[offset] = table
            if len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(offset)
        return table

    async def entry(self, guest_cluster: int) -> int:
        """The raw L2 entry of a guest cluster (0 when it has no L2 table)."""
        l1_index, l2_index = self.split(guest_cluster)
        offset = self.l2_offset(l1_index)
        if not offset:
            return 0
        return (await self.l2_table(offset))[l2_index]

    async def set_entry(self, l2_offset: int, l2_index: int, value: int) -> None:
        await self.set_entries(l2_offset, l2_index, array("Q", [value]))

    async def set_entries(self, l2_offset: int, l2_index: int, values: array[int]) -> None:
        """Store consecutive entries of one table with a single write; the
        cache takes them only once the file did.  Raises BlockIOError."""
        table = await self.l2_table(l2_offset)
        await self.store.write(l2_offset + l2_index * 8, encode_u64(values), "l2_update")
        table[l2_index : l2_index + len(values)] = values
        # A reader may have evicted and reloaded the table meanwhile.
        cached = self._cache.get(l2_offset)
        if cached is not None and cached is not table:
            cached[l2_index : l2_index + len(values)] = values

    async def install_l2(self, l1_index: int, offset: int, table: array[int]) -> None:
        """Write a new L2 table; the L1 entry pointing at it is pending
        until :meth:`commit_l1`."""
        await self.store.write(offset, encode_u64(table), "l2_alloc_write")
        self._cache[offset] = table
        self.l1[l1_index] = offset | (1 << 63)  # COPIED: a fresh table has one user
        self.pending.add(l1_index)

    def pending_writes(self, only: set[int] | None = None) -> list[tuple[int, bytes]]:
        """(file offset, bytes) writes that store the pending L1 entries
        (those also in ``only``, when given): one per run of consecutive
        indexes."""
        out: list[tuple[int, bytes]] = []
        run: list[int] = []
        for index in sorted(self.pending if only is None else self.pending & only):
            if run and index != run[-1] + 1:
                out.append(self._l1_run(run))
                run = []
            run.append(index)
        if run:
            out.append(self._l1_run(run))
        return out

    def _l1_run(self, run: list[int]) -> tuple[int, bytes]:
        return self.l1_offset + run[0] * 8, encode_u64(self.l1[run[0] : run[-1] + 1])

    async def commit_l1(self, only: set[int] | None = None) -> None:
        """Write the pending L1 entries (those also in ``only``, when
        given).  The caller made the tables they point at durable first
        (a sync after their writes), and syncs after to make these
        durable.  Raises BlockIOError from the writes (what was not
        written stays pending)."""
        todo = set(self.pending) if only is None else self.pending & only
        for offset, data in self.pending_writes(todo):
            await self.store.write(offset, data, "l1_update")
        self.pending -= todo

    def forget(self, offset: int) -> None:
        self._cache.pop(offset, None)


__all__ = ["L2_CACHE_BYTES", "Tables", "decode_u64", "encode_u64", "run_entries"]
