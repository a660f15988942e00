"""The qcow2 format node: guest I/O mapped through L1/L2 onto the file child.

Theory of operation.  Opening (synchronous, see :mod:`.storage`) reads the
header, the L1 table and the refcount table; L2 tables and refcount blocks
are read on demand and cached.  Reads map each guest cluster through its L2
entry: data from the file, zeroes, the backing child (unallocated clusters)
or an inflated compressed cluster.  Writes go in place to clusters this
image owns alone (COPIED); any other cluster is first copied to a newly
allocated one whose whole content is written (old content merged with the
new bytes) before its L2 entry changes, so a reader never sees a cluster
half made.  Consecutive guest clusters that all need new clusters are
allocated as one contiguous run: one refcount write, one data write, one
L2 write, whatever the number of clusters.  Zero writes on version 3
images become zero clusters (keeping the host cluster unless unmapping is
allowed); discards drop whole clusters.  Metadata is written through
(:mod:`.tables`, :mod:`.refcount`); mutating requests hold one lock, so
allocations never interleave.

Crash safety.  Before the first metadata change after a flush the node sets
the dirty bit (incompatible bit 0) and flushes; ``flush`` makes everything
durable and clears it again, and so does a clean close.  An image found
dirty is read normally; opened read-write it has its refcounts rebuilt
from the L1/L2 tables before the first change (QEMU repairs the same way).
New L2 tables are flushed before the L1 entry pointing to them.  Version 2
images have no dirty bit: refcounts are raised before a cluster is linked
and lowered after it is unlinked, so a killed process leaves leaks at worst.

Not supported (refused with a clear error): encryption, external data
files, extended L2 entries, zstd compression, writing to images with
internal snapshots or persistent bitmaps, shrinking.
"""

from __future__ import annotations

import errno
import zlib
from array import array
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio

from ..extents import Extent
from ..node import BlockIOError, BlockNode, CommonOptions, Perm
from ..zerostate import UNKNOWN, KnownZero
from . import refcount as rc
from .format import (
    AUTOCLEAR_QMPD_ALL_ZERO,
    COMPRESSED,
    COPIED,
    INCOMPAT_CORRUPT,
    INCOMPAT_DIRTY,
    OFFSET_MASK,
    ZERO_FLAG,
    ClusterKind,
    Header,
    L2Entry,
    compressed_clusters,
    decode_l2,
    encode_header,
    l1_entries_for,
)
from .storage import Storage, pwrite_and_sync_now
from .tables import Tables, encode_u64
from .zero import flag_valid, scan_layer

#: Autoclear bits qmpd maintains; others are cleared before the first write.
KNOWN_AUTOCLEAR = AUTOCLEAR_QMPD_ALL_ZERO
#: Most clusters one write allocates as one run (32 MiB with 64 KiB
#: clusters; an L2 table's reach bounds it too).
_MAX_RUN_CLUSTERS = 512


class Qcow2Node(BlockNode):
    driver = "qcow2"

    def __init__(
        self,
        name: str,
        options: CommonOptions,
        *,
        file: BlockNode,
        header: Header,
        l1: array[int],
        reftable: list[int],
        backing: BlockNode | None,
        backing_default: bool,
    ) -> None:
        super().__init__(name, options)
        self.children["file"] = file
        if backing is not None:
            self.children["backing"] = backing
        self.header = header
        self.backing_default = backing_default
        self.store = Storage(file)
        self.tables = Tables(self.store, header.cluster_bits, header.l1_table_offset, l1)
        self.refcounts = self._make_refcounts(
            header.refcount_table_offset, header.refcount_table_clusters, reftable
        )
        self._lock = trio.Lock()
        self._dirty_on_disk = header.dirty
        self._needs_repair = header.dirty and header.version >= 3
        self._autoclear_done = False
        self._layer_zero: bool | None = None  # cached scan result
        self._inflated: tuple[int, bytes] | None = None
        self._recurse: bool | None = None

    def _make_refcounts(self, offset: int, clusters: int, table: list[int]) -> rc.Refcounts:
        return rc.Refcounts(
            self.store,
            self.header.cluster_bits,
            self.header.refcount_order,
            offset,
            clusters,
            table,
            self._reftable_moved,
        )

    # ------------------------------------------------------------ basics

    @property
    def file(self) -> BlockNode:
        return self.children["file"]

    @property
    def backing(self) -> BlockNode | None:
        return self.children.get("backing")

    @property
    def cluster_size(self) -> int:
        return self.header.cluster_size

    def _size(self) -> int:
        return self.header.size

    async def _entry(self, guest_cluster: int) -> tuple[int, L2Entry]:
        raw = await self.tables.entry(guest_cluster)
        return raw, decode_l2(raw, self.header.cluster_bits, self.header.version)

    async def _runs(self, offset: int, length: int) -> list[tuple[int, int, L2Entry]]:
        """(start, length, entry) runs; entries of one run have the same
        kind and, when mapped, consecutive host offsets (the entry given
        is the first one's, its host shifted to ``start``)."""
        cs = self.cluster_size
        out: list[tuple[int, int, L2Entry]] = []
        pos, end = offset, offset + length
        while pos < end:
            in_cluster = pos % cs
            n = min(cs - in_cluster, end - pos)
            _, entry = await self._entry(pos // cs)
            if entry.kind in (ClusterKind.NORMAL, ClusterKind.ZERO_ALLOC):
                entry = L2Entry(entry.kind, entry.host + in_cluster)
            if out:
                start, count, last = out[-1]
                mapped = last.kind in (ClusterKind.NORMAL, ClusterKind.ZERO_ALLOC)
                follows = not mapped or last.host + count == entry.host
                if last.kind is entry.kind and entry.kind is not ClusterKind.COMPRESSED and follows:
                    out[-1] = (start, count + n, last)
                    pos += n
                    continue
            out.append((pos, n, entry))
            pos += n
        return out

    # ------------------------------------------------------------ reads

    async def _backing_read(self, offset: int, length: int) -> bytes:
        backing = self.backing
        if backing is None:
            return bytes(length)
        end = min(offset + length, backing.size)
        data = await backing.read(offset, end - offset) if end > offset else b""
        return data + bytes(length - len(data))

    async def _inflate(self, entry: L2Entry) -> bytes:
        if self._inflated is not None and self._inflated[0] == entry.host:
            return self._inflated[1]
        raw = await self.store.read(entry.host, entry.csize)
        try:
            data = zlib.decompressobj(-15).decompress(raw, self.cluster_size)
        except zlib.error:
            raise BlockIOError(errno.EIO) from None
        if len(data) != self.cluster_size:
            raise BlockIOError(errno.EIO)
        self._inflated = (entry.host, data)
        return data

    async def _read_run(self, start: int, length: int, entry: L2Entry) -> bytes:
        kind = entry.kind
        if kind is ClusterKind.NORMAL:
            return await self.store.read(entry.host, length)
        if kind is ClusterKind.UNALLOCATED:
            return await self._backing_read(start, length)
        if kind is ClusterKind.COMPRESSED:
            in_cluster = start % self.cluster_size
            return (await self._inflate(entry))[in_cluster : in_cluster + length]
        return bytes(length)

    async def _read(self, offset: int, length: int) -> bytes:
        parts = [await self._read_run(*run) for run in await self._runs(offset, length)]
        return b"".join(parts)

    async def _cluster_content(self, guest_cluster: int, entry: L2Entry) -> bytes:
        """What a whole guest cluster reads as now (the base of a COW)."""
        start = guest_cluster * self.cluster_size
        length = min(self.cluster_size, max(0, self.size - start))
        data = await self._read_run(start, length, entry) if length else b""
        return data + bytes(self.cluster_size - len(data))

    # ------------------------------------------------------------ header, dirty bit

    async def _write_header(self, header: Header) -> None:
        self.header = header
        await self.store.write(0, encode_header(header))

    async def _reftable_moved(self, offset: int, clusters: int) -> None:
        await self._write_header(
            self.header.with_(refcount_table_offset=offset, refcount_table_clusters=clusters)
        )

    def _check_writable_image(self) -> None:
        if self.header.nb_snapshots:
            raise BlockIOError(
                errno.ENOTSUP, "qmpd cannot write qcow2 images with internal snapshots"
            )

    async def _prepare_write(self) -> None:
        """Once per open: drop autoclear bits qmpd does not maintain (the
        autoclear contract), before anything changes."""
        self._layer_zero = None
        if self._autoclear_done:
            return
        self._check_writable_image()
        if self.header.version >= 3 and self.header.autoclear & ~KNOWN_AUTOCLEAR:
            await self._write_header(
                self.header.with_(autoclear=self.header.autoclear & KNOWN_AUTOCLEAR)
            )
            await self.store.flush()
        self._autoclear_done = True

    async def _begin_meta(self) -> None:
        """Call before changing metadata: repair a crashed image, set the
        dirty bit durably."""
        if self._needs_repair:
            await self._repair()
        if self.header.version < 3 or self._dirty_on_disk:
            return
        await self._write_header(
            self.header.with_(incompatible=self.header.incompatible | INCOMPAT_DIRTY)
        )
        await self.store.flush()
        self._dirty_on_disk = True

    async def _before_data(self, data: bytes) -> None:
        """A non-zero byte is coming: withdraw the all-zero bit first, durably."""
        if self.header.autoclear & AUTOCLEAR_QMPD_ALL_ZERO and any(data):
            await self._write_header(
                self.header.with_(autoclear=self.header.autoclear & ~AUTOCLEAR_QMPD_ALL_ZERO)
            )
            await self.store.flush()

    async def _repair(self) -> None:
        """Rebuild the refcounts of an image left dirty (see the module docstring)."""
        from .repair import used_clusters

        self._needs_repair = False
        counts = await used_clusters(self)
        offset, clusters = await rc.rebuild(
            self.store, self.header.cluster_bits, self.header.refcount_order, counts
        )
        table = rc.Refcounts.parse_table(
            await self.store.read(offset, clusters * self.cluster_size)
        )
        self.refcounts = self._make_refcounts(offset, clusters, table)
        await self._reftable_moved(offset, clusters)
        await self.store.flush()

    # ------------------------------------------------------------ writes

    async def _l2_for(self, guest_cluster: int) -> tuple[int, int]:
        """(L2 table offset, index), allocating the table if needed."""
        l1_index, l2_index = self.tables.split(guest_cluster)
        if l1_index >= len(self.tables.l1):
            raise BlockIOError(errno.EIO, "qcow2: guest cluster outside the L1 table")
        offset = self.tables.l2_offset(l1_index)
        raw_l1 = self.tables.l1[l1_index]
        if offset and raw_l1 & COPIED:
            return offset, l2_index
        if offset:
            raise BlockIOError(errno.ENOTSUP, "qmpd cannot write shared qcow2 L2 tables")
        new = await self.refcounts.allocate(1)
        table = array("Q", bytes(self.cluster_size))
        await self.store.write(new, encode_u64(table))
        await self.store.flush()  # the table's content before the pointer to it
        await self.tables.install_l2(l1_index, new, table)
        return new, l2_index

    async def _set_entry(self, guest_cluster: int, value: int) -> None:
        offset, index = await self._l2_for(guest_cluster)
        await self.tables.set_entry(offset, index, value)

    async def _release_all(self, entries: list[L2Entry]) -> None:
        """Drop the references old L2 entries held (after they were
        replaced): contiguous host clusters are freed, and discarded below,
        as one run."""
        bits = self.header.cluster_bits
        runs: list[list[int]] = []  # [first cluster, count]
        for entry in entries:
            if entry.kind in (ClusterKind.NORMAL, ClusterKind.ZERO_ALLOC):
                span = range(entry.host >> bits, (entry.host >> bits) + 1)
            elif entry.kind is ClusterKind.COMPRESSED:
                span = compressed_clusters(entry.host, entry.csize, bits)
            else:
                continue
            if runs and runs[-1][0] + runs[-1][1] == span.start:
                runs[-1][1] += len(span)
            else:
                runs.append([span.start, len(span)])
        freed: list[list[int]] = []  # [byte offset, length]
        for first, count in runs:
            for host in await self.refcounts.free(first << bits, count):
                if freed and freed[-1][0] + freed[-1][1] == host:
                    freed[-1][1] += self.cluster_size
                else:
                    freed.append([host, self.cluster_size])
        for host, length in freed:
            await self.file.discard(host, length)

    async def _write(self, offset: int, data: bytes) -> None:
        async with self._lock:
            await self._prepare_write()
            await self._before_data(data)
            await self._write_locked(offset, data)

    async def _write_locked(self, offset: int, data: bytes) -> None:
        cs = self.cluster_size
        view = memoryview(data)
        pos, end = offset, offset + len(data)
        while pos < end:
            guest = pos // cs
            in_cluster = pos % cs
            n = min(cs - in_cluster, end - pos)
            chunk = view[pos - offset : pos - offset + n]
            raw, entry = await self._entry(guest)
            owned = bool(raw & COPIED)
            if not any(chunk) and self._reads_zero(entry):
                pos += n  # zeroes over zeroes: nothing to allocate
                continue
            if entry.kind is ClusterKind.NORMAL and owned:
                # In place, together with the clusters mapped right after it.
                host = entry.host + in_cluster
                run = n
                while pos + run < end:
                    nraw, nentry = await self._entry((pos + run) // cs)
                    if not (
                        nentry.kind is ClusterKind.NORMAL
                        and nraw & COPIED
                        and nentry.host == host + run
                    ):
                        break
                    run += min(cs, end - pos - run)
                await self.store.write(host, view[pos - offset : pos - offset + run])
                pos += run
                continue
            await self._begin_meta()
            if entry.kind is ClusterKind.ZERO_ALLOC and owned:
                # The cluster is ours: fill it, then unset ZERO.
                cluster = bytearray(await self._cluster_content(guest, entry)) if n < cs else None
                if cluster is not None:
                    cluster[in_cluster : in_cluster + n] = chunk
                await self.store.write(entry.host, chunk if cluster is None else cluster)
                await self._set_entry(guest, entry.host | COPIED)
                pos += n
                continue
            pos = await self._write_new(offset, view, pos, guest, entry)

    async def _needs_new_cluster(self, guest: int, chunk: memoryview) -> L2Entry | None:
        """The entry of ``guest`` when writing ``chunk`` into it takes a new
        cluster (neither in place nor skipped); None otherwise."""
        raw, entry = await self._entry(guest)
        if raw & COPIED and entry.kind in (ClusterKind.NORMAL, ClusterKind.ZERO_ALLOC):
            return None
        if self._reads_zero(entry) and not any(chunk):
            return None
        return entry

    async def _write_new(
        self, offset: int, view: memoryview, pos: int, guest: int, entry: L2Entry
    ) -> int:
        """Write from ``pos`` into newly allocated clusters: ``guest`` and
        the following clusters of the same L2 table that need new ones too,
        as one run.  One allocation (one refcount write per block), one data
        write, one L2 write for the run.  Returns where the run ended."""
        cs = self.cluster_size
        end = offset + len(view)
        l2_index = self.tables.split(guest)[1]
        olds = [entry]
        stop = min(end, (guest + 1) * cs)
        # At most half a refcount block's reach: a longer run could never be
        # found where each new block takes the first cluster of its region.
        reach = self.refcounts.per_block // 2
        limit = max(1, min(self.tables.l2_entries - l2_index, _MAX_RUN_CLUSTERS, reach))
        while stop < end and len(olds) < limit:
            nxt = stop // cs
            chunk = view[stop - offset : min(end, stop + cs) - offset]
            nentry = await self._needs_new_cluster(nxt, chunk)
            if nentry is None:
                break
            olds.append(nentry)
            stop += len(chunk)
        count = len(olds)
        start = guest * cs
        head, tail = pos - start, (start + count * cs) - stop
        if head or tail:
            buf = bytearray(count * cs)
            buf[head : count * cs - tail] = view[pos - offset : stop - offset]
            if head:
                old = await self._cluster_content(guest, olds[0])
                buf[:head] = old[:head]
            if tail:
                if count > 1 or not head:
                    old = await self._cluster_content(guest + count - 1, olds[-1])
                buf[-tail:] = old[cs - tail :]
            payload: bytes | bytearray | memoryview = buf
        else:
            payload = view[pos - offset : stop - offset]
        # The L2 table first (its own allocation), so data clusters follow it.
        l2_offset, _ = await self._l2_for(guest)
        host = await self.refcounts.allocate(count)
        await self.store.write(host, payload)
        first = host | COPIED
        entries = array("Q", range(first, first + count * cs, cs))
        await self.tables.set_entries(l2_offset, l2_index, entries)
        await self._release_all(olds)
        return stop

    def _reads_zero(self, entry: L2Entry) -> bool:
        kind = entry.kind
        if kind is ClusterKind.UNALLOCATED:
            return self.backing is None
        return kind in (ClusterKind.ZERO_PLAIN, ClusterKind.ZERO_ALLOC)

    def _whole_clusters(self, offset: int, length: int) -> tuple[int, int]:
        """The cluster-aligned part of a request; a partial last cluster
        counts as whole when the request runs to the end of the image (as
        QEMU's qcow2 zero writes and discards treat it)."""
        cs = self.cluster_size
        first = -(-offset // cs) * cs
        end = offset + length
        last = -(-end // cs) * cs if end == self.size else end // cs * cs
        return first, last

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        async with self._lock:
            await self._prepare_write()
            cs = self.cluster_size
            first, last = self._whole_clusters(offset, length)
            if last <= first:
                await self._write_locked(offset, bytes(length))
                return "written"
            if first > offset:
                await self._write_locked(offset, bytes(first - offset))
            if offset + length > last:
                await self._write_locked(last, bytes(offset + length - last))
            if self.header.version < 3 and (self.backing is not None or not unmap):
                for pos in range(first, last, cs):
                    await self._write_locked(pos, bytes(min(cs, self.size - pos)))
                return "written"
            await self._rewrite_entries(first // cs, last // cs, self._zeroed, unmap)
            return "zero-cluster" if self.header.version >= 3 else "unmap"

    def _zeroed(self, raw: int, unmap: bool) -> int | None:
        """The entry a zero write leaves, or None when it stays."""
        entry = decode_l2(raw, self.header.cluster_bits, self.header.version)
        kind = entry.kind
        if kind is ClusterKind.ZERO_PLAIN:
            return None
        if kind is ClusterKind.ZERO_ALLOC and not unmap:
            return None
        if kind is ClusterKind.UNALLOCATED and self.backing is None:
            return None  # already reads as zero
        if self.header.version < 3:
            return 0  # no backing: unallocated reads zero
        if not unmap and kind is ClusterKind.NORMAL and raw & COPIED:
            return entry.host | COPIED | ZERO_FLAG  # keep the host cluster
        return ZERO_FLAG

    def _discarded(self, raw: int, unmap: bool) -> int | None:
        """The entry a discard leaves, or None when it stays."""
        if self.header.version >= 3 and self.backing is not None:
            # Unallocated would show the backing file: a zero cluster instead.
            plain = decode_l2(raw, self.header.cluster_bits, 3).kind is ClusterKind.ZERO_PLAIN
            return None if plain else ZERO_FLAG
        return 0 if raw else None

    async def _rewrite_entries(
        self, first: int, last: int, change: Callable[[int, bool], int | None], unmap: bool
    ) -> None:
        """Give guest clusters ``first`` to ``last`` (exclusive) the entries
        ``change`` decides, an L2 table at a time: one write for the changed
        span of each table, then the old host clusters are released (after
        they are unlinked, as v2 images need) in contiguous runs."""
        guest = first
        while guest < last:
            l1_index, l2_index = self.tables.split(guest)
            n = min(self.tables.l2_entries - l2_index, last - guest)
            l2_offset = self.tables.l2_offset(l1_index)
            if l2_offset:
                olds = (await self.tables.l2_table(l2_offset))[l2_index : l2_index + n]
            else:
                olds = array("Q", bytes(8 * n))
            news = array("Q", olds)
            lo, hi = n, -1
            for i, raw in enumerate(olds):
                new = change(raw, unmap)
                if new is not None and new != raw:
                    news[i] = new
                    lo, hi = min(lo, i), i
            if hi >= 0:
                await self._begin_meta()
                l2_offset, _ = await self._l2_for(guest)
                await self.tables.set_entries(l2_offset, l2_index + lo, news[lo : hi + 1])
                bits, version = self.header.cluster_bits, self.header.version
                await self._release_all(
                    [
                        decode_l2(old, bits, version)
                        for old, new in zip(olds[lo : hi + 1], news[lo : hi + 1], strict=True)
                        if (old & OFFSET_MASK) != (new & OFFSET_MASK) or old & COMPRESSED
                    ]
                )
            guest += n

    async def _discard(self, offset: int, length: int) -> None:
        async with self._lock:
            await self._prepare_write()
            cs = self.cluster_size
            # Only whole clusters are discarded (as QEMU); the rest is kept.
            first, last = self._whole_clusters(offset, length)
            await self._rewrite_entries(first // cs, last // cs, self._discarded, False)

    async def _flush(self) -> None:
        async with self._lock:
            await self.store.flush()
            if self._dirty_on_disk and not self._needs_repair:
                await self._write_header(
                    self.header.with_(incompatible=self.header.incompatible & ~INCOMPAT_DIRTY)
                )
                await self.store.flush()
                self._dirty_on_disk = False

    async def _truncate(self, size: int) -> None:
        if size % 512:
            raise BlockIOError(errno.EINVAL, "The new size must be a multiple of 512")
        if size < self.size:
            raise BlockIOError(errno.ENOTSUP, "qmpd cannot shrink qcow2 images")
        if size == self.size:
            return
        async with self._lock:
            await self._prepare_write()
            await self._begin_meta()
            old_size = self.size
            await self._grow_l1(l1_entries_for(size, self.header.cluster_bits))
            await self._write_header(self.header.with_(size=size))
            await self.store.flush()
        backing = self.backing
        if backing is not None and backing.size > old_size:
            # The backing file must not show through the new area (QEMU
            # zeroes it too).
            end = min(size, backing.size)
            await self._write_zeroes(old_size, end - old_size, False)

    async def _grow_l1(self, entries: int) -> None:
        header = self.header
        l1 = self.tables.l1
        if entries <= header.l1_size:
            return
        capacity = -(-header.l1_size * 8 // self.cluster_size) * self.cluster_size // 8
        new = array("Q", l1) + array("Q", bytes(8 * (entries - len(l1))))
        if entries <= capacity:
            await self.store.write(header.l1_table_offset, encode_u64(new))
            self.tables.l1 = new
            await self._write_header(header.with_(l1_size=entries))
            return
        clusters = -(-entries * 8 // self.cluster_size)
        offset = await self.refcounts.allocate(clusters)
        await self.store.write(offset, encode_u64(new))
        await self.store.flush()
        self.tables.l1, self.tables.l1_offset = new, offset
        await self._write_header(header.with_(l1_size=entries, l1_table_offset=offset))
        await self.store.flush()
        old_clusters = -(-header.l1_size * 8 // self.cluster_size)
        if header.l1_size:
            await self.refcounts.free(header.l1_table_offset, old_clusters)

    # ------------------------------------------------------------ status, zero state

    async def _block_status(self, offset: int, length: int) -> list[Extent]:
        out: list[Extent] = []
        for start, n, entry in await self._runs(offset, length):
            kind = entry.kind
            if kind is ClusterKind.UNALLOCATED:
                out += await self._backing_status(start, n)
            elif kind is ClusterKind.ZERO_PLAIN:
                out.append(Extent(start, n, data=False, zero=True))
            elif kind is ClusterKind.ZERO_ALLOC:
                out.append(Extent(start, n, data=False, zero=True, offset=entry.host))
            elif kind is ClusterKind.COMPRESSED:
                out.append(Extent(start, n, data=True, zero=False, compressed=True))
            elif await self._metadata_preallocated():
                # Ask the file whether the mapped bytes read as zero (a
                # metadata-preallocated cluster is a hole), as QEMU does.
                out += await self._data_status(start, n, entry.host)
            else:
                out.append(Extent(start, n, data=True, zero=False, offset=entry.host))
        return out

    async def _metadata_preallocated(self) -> bool:
        """QEMU's qcow2_detect_metadata_preallocation, done once per open:
        the file holds clearly fewer bytes than the clusters counted in it.
        Only then does block status ask the file about data clusters
        (QEMU's BDRV_BLOCK_RECURSE), which keeps ``qemu-img map`` equal."""
        if self._recurse is None:
            used = self.file.actual_size()
            self._recurse = False
            if used is not None:
                real = used // self.cluster_size
                threshold = max(real * 10 // 9, real + 2)
                end = -(-self.file.size // self.cluster_size)
                count = 0
                for cluster in range(end):
                    if count >= threshold:
                        break
                    count += await self.refcounts.get(cluster) != 0
                self._recurse = count >= threshold
        return self._recurse

    async def _data_status(self, start: int, length: int, host: int) -> list[Extent]:
        file = self.file
        end = min(host + length, file.size)
        below = await file.block_status(host, end - host) if end > host else []
        out = [
            Extent(e.start - host + start, e.length, data=True, zero=e.zero, offset=e.start)
            for e in below
        ]
        if end < host + length:  # past the file's end reads as zero
            tail = max(end, host)
            out.append(Extent(tail - host + start, host + length - tail, True, True, offset=tail))
        return out

    async def _backing_status(self, start: int, length: int) -> list[Extent]:
        backing = self.backing
        if backing is None:
            return [Extent(start, length, data=False, zero=True, present=False)]
        end = min(start + length, backing.size)
        out = []
        if end > start:
            for ext in await backing.block_status(start, end - start):
                out.append(replace(ext, depth=ext.depth + 1))
        if end < start + length:
            tail = max(end, start)
            out.append(Extent(tail, start + length - tail, data=False, zero=True, present=False))
        return out

    def _create_zero(self) -> KnownZero:
        # A qcow2 image qmpd creates reads as zero whatever its
        # preallocation, unless it has a backing file.
        return UNKNOWN if self.backing is not None else KnownZero(True, "driver")

    async def _open_zero(self) -> KnownZero:
        if flag_valid(self.header):
            layer = KnownZero(True, "flag")
        else:
            if self._layer_zero is None:
                self._layer_zero = await scan_layer(self)
            layer = KnownZero(True, "scan") if self._layer_zero else UNKNOWN
        if not layer.value:
            return UNKNOWN
        backing = self.backing
        if backing is not None and not (await backing.known_zero()).open.value:
            return UNKNOWN
        return layer

    # ------------------------------------------------------------ graph, info

    def child_perms(self, role: str) -> tuple[int, int]:
        perm, shared = self.cumulative_perms()
        if role == "backing":
            # QEMU's default for COW children: read, and let others write
            # only if our own users do.
            keep = Perm.WRITE | Perm.RESIZE if shared & Perm.WRITE else 0
            return Perm.CONSISTENT_READ, keep | Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED
        perm |= Perm.CONSISTENT_READ
        if not self.read_only:
            # Metadata may change even when no user writes.
            perm |= Perm.WRITE | Perm.RESIZE
            shared &= ~(Perm.WRITE | Perm.RESIZE)
        return perm, shared | Perm.WRITE_UNCHANGED

    def exact_filename(self) -> str | None:
        if self.strong_options or not self.backing_default or not self.file.is_protocol:
            return None
        return self.file.exact_filename()

    def full_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"driver": self.driver, **self.strong_options}
        opts["file"] = self.file.full_options()
        if self.backing is not None and not self.backing_default:
            opts["backing"] = self.backing.full_options()
        elif self.backing is None and self.header.backing_file:
            opts["backing"] = None
        return opts

    def actual_size(self) -> int | None:
        return self.file.actual_size()

    def has_dirty_flag(self) -> bool:
        return True

    def format_specific(self) -> dict[str, Any] | None:
        # QEMU 11.1's ImageInfoSpecificQCow2, members in the order it prints.
        h = self.header
        data: dict[str, Any] = {"compat": "1.1" if h.version >= 3 else "0.10"}
        data["compression-type"] = "zlib" if h.compression_type == 0 else "zstd"
        if h.version >= 3:
            data["lazy-refcounts"] = h.lazy_refcounts
        data["refcount-bits"] = h.refcount_bits
        if h.version >= 3:
            data["corrupt"] = bool(h.incompatible & INCOMPAT_CORRUPT)
            data["extended-l2"] = False
        return {"type": "qcow2", "data": data}

    def close(self) -> None:
        if not self.closed and self._dirty_on_disk and not self._needs_repair:
            clean = self.header.with_(incompatible=self.header.incompatible & ~INCOMPAT_DIRTY)
            # Everything is written through already; make it durable, then
            # mark the image clean.  Where that cannot be done here the image
            # stays dirty and is repaired on the next read-write open.
            if pwrite_and_sync_now(self.file, 0, encode_header(clean), sync_first=True):
                self.header = clean
                self._dirty_on_disk = False
        super().close()


__all__ = ["KNOWN_AUTOCLEAR", "Qcow2Node"]
