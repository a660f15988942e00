"""The qcow2 format node: guest I/O mapped through L1/L2 onto the file child.

Theory of operation.  Opening (synchronous, see :mod:`.storage`) reads the
header, the L1 table and the refcount table; L2 tables and refcount blocks
are read on demand and cached.  Reads map each guest cluster through its L2
entry: data from the file, zeroes, the backing child (unallocated clusters)
or an inflated compressed cluster.  Writes, zero writes and discards are
:mod:`.write`'s; mutating requests hold one lock, so allocations never
interleave, but a data write writes the guest's bytes after it, with its
clusters *in flight* meanwhile: a request touching any of them waits
until the write has mapped them (QEMU's qcow2 lets data writes overlap
the same way; only their metadata is serialized).  Metadata is written
through (:mod:`.tables`, :mod:`.refcount`), except the L1 entry of a new
L2 table, which waits for a sync (below).

Crash safety, as QEMU's.  Metadata is ordered: a cluster's refcount is
raised before any L2 or L1 entry points at it, and lowered only after the
entry that used it is rewritten, so a killed process leaves leaked
clusters at worst, and the image needs no dirty bit.  Only with lazy
refcounts (QEMU's ``lazy_refcounts``) does the node set the dirty bit
(incompatible bit 0) durably before the first metadata change after a
flush; ``flush`` clears it again (unless a write is in flight), and so
does a clean close.  Only a flush that succeeded may clear it: a close
after a failed flush tries once more through the file child (QEMU's
qcow2_inactivate), and when that fails too, leaves the image as a crash
would, dirty (see ``_before_close`` and ``_close_image``).  An image found
dirty is read normally, and repaired when opened read-write
(:mod:`.repair`, as QEMU does at open).  A new L2 table's L1 entry is
written after a sync has made the table durable: by the next flush,
``write_behind`` or close (see :mod:`.tables`).  A power loss may
reorder the writes between two syncs: within a flush interval qmpd's
write-through tables rely on the kernel writing them back in order, where
QEMU's write-back caches sync refcounts before the L2 tables that depend
on them.

Not supported (refused with a clear error): encryption, external data
files, extended L2 entries, zstd compression, writing to images with
internal snapshots or persistent bitmaps, shrinking.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import zlib
from array import array
from dataclasses import dataclass, field, replace
from typing import ClassVar

import trio

from ..extents import Extent
from ..node import BlockIOError, BlockNode, CommonOptions, cow_child_perms, storage_child_perms
from ..zerostate import UNKNOWN, KnownZero
from . import refcount as rc
from . import write
from .format import (
    AUTOCLEAR_QMPD_ALL_ZERO,
    INCOMPAT_DIRTY,
    ClusterKind,
    Header,
    L2Entry,
    decode_l2,
    encode_header,
    l1_entries_for,
)
from .info import Qcow2Info
from .repair import repair_now
from .storage import Storage, pread_now, pwrite_and_sync_now
from .tables import Tables, encode_u64
from .zero import ScanCache, flag_valid

#: Autoclear bits qmpd maintains; others are cleared before the first write.
KNOWN_AUTOCLEAR = AUTOCLEAR_QMPD_ALL_ZERO

log = logging.getLogger("qmpd.block")


@dataclass(frozen=True, slots=True, eq=False)
class _Span:
    """Guest clusters ``[first, end)`` of a request; ``done`` is set when
    it is no longer in flight."""

    first: int
    end: int
    done: trio.Event = field(default_factory=trio.Event)

    def overlaps(self, other: _Span) -> bool:
        return self.first < other.end and other.first < self.end


class Qcow2Node(Qcow2Info):
    named_after = ("file",)

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
        lazy_refcounts: bool = False,
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
        #: Data writes past their planning (see _write).
        self._in_flight: list[_Span] = []
        #: QEMU's use_lazy_refcounts: the only case that sets the dirty bit.
        self.lazy_refcounts = lazy_refcounts and header.version >= 3
        #: The dirty bit on disk was set by this node, which may clear it
        #: once its changes are durable.  A bit found at open is cleared
        #: only by the repair (:meth:`after_open`): clearing it without one
        #: would certify refcounts nobody checked.
        self._dirty_on_disk = False
        self._autoclear_done = False
        #: The node set out to withdraw qmpd's all-zero bit: from then on no
        #: header it writes carries the bit, even while that withdrawal has
        #: not succeeded (see :meth:`_write_header`).
        self._zero_claim_withdrawn = False
        self._scan = ScanCache()
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

    def _size(self) -> int:
        return self.header.size

    async def l2_entry(self, guest_cluster: int) -> tuple[int, L2Entry]:
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
            _, entry = await self.l2_entry(pos // cs)
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
        raw = await self.store.read(entry.host, entry.csize, "read_compressed")
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
            return await self.store.read(entry.host, length, "read_aio")
        if kind is ClusterKind.UNALLOCATED:
            if self.backing is not None:
                self.store.event("read_backing_aio")
            return await self._backing_read(start, length)
        if kind is ClusterKind.COMPRESSED:
            in_cluster = start % self.cluster_size
            return (await self._inflate(entry))[in_cluster : in_cluster + length]
        return bytes(length)

    async def _read(self, offset: int, length: int) -> bytes:
        parts = [await self._read_run(*run) for run in await self._runs(offset, length)]
        return b"".join(parts)

    async def cluster_content(self, guest_cluster: int, entry: L2Entry) -> bytes:
        """What a whole guest cluster reads as now (the base of a COW)."""
        self.store.event("cow_read")
        start = guest_cluster * self.cluster_size
        length = min(self.cluster_size, max(0, self.size - start))
        data = await self._read_run(start, length, entry) if length else b""
        return data + bytes(self.cluster_size - len(data))

    # ------------------------------------------------------------ header, dirty bit

    async def _write_header(self, header: Header, *, durable: bool = False) -> None:
        """The one way the header changes: on disk first (synced too when
        ``durable``), in memory only once that succeeded, so decisions made
        on the memory copy never rest on a change the disk refused.
        Raises BlockIOError, the memory copy unchanged.

        Once the all-zero bit is being withdrawn, the bytes written never
        carry it, whatever ``header`` says: a failed withdrawal may have
        reached the disk, and no later header (a dirty bit, a close) may
        assert the bit again.  The memory copy keeps it until a durable
        withdrawal succeeds (:meth:`before_data` goes on trying)."""
        on_disk = header
        if self._zero_claim_withdrawn:
            on_disk = header.with_(autoclear=header.autoclear & ~AUTOCLEAR_QMPD_ALL_ZERO)
        await self.store.write(0, encode_header(on_disk))
        if durable:
            await self.store.flush()
        self.header = header

    async def _reftable_moved(self, offset: int, clusters: int) -> None:
        await self._write_header(
            self.header.with_(refcount_table_offset=offset, refcount_table_clusters=clusters)
        )

    def after_open(self) -> None:
        """QEMU repairs a crash-dirtied image when it opens it read-write:
        so does qmpd, once the image is locked (see :mod:`.repair`).
        Raises GenericError when it cannot."""
        if not self.header.dirty or self.read_only:
            return
        header = repair_now(self.file, self.header, self.tables.l1)
        table = rc.Refcounts.parse_table(
            pread_now(
                self.file,
                header.refcount_table_offset,
                header.refcount_table_clusters << header.cluster_bits,
            )
        )
        self.header = header
        self.refcounts = self._make_refcounts(
            header.refcount_table_offset, header.refcount_table_clusters, table
        )
        self._dirty_on_disk = False

    def _check_writable_image(self) -> None:
        if self.header.nb_snapshots:
            raise BlockIOError(
                errno.ENOTSUP, "qmpd cannot write qcow2 images with internal snapshots"
            )

    async def _prepare_write(self) -> None:
        """Once per open: drop autoclear bits qmpd does not maintain (the
        autoclear contract), before anything changes."""
        if self._autoclear_done:
            return
        self._check_writable_image()
        if self.header.version >= 3 and self.header.autoclear & ~KNOWN_AUTOCLEAR:
            await self._write_header(
                self.header.with_(autoclear=self.header.autoclear & KNOWN_AUTOCLEAR), durable=True
            )
        self._autoclear_done = True

    async def begin_meta(self) -> None:
        """Call before changing metadata: with lazy refcounts, set the dirty
        bit durably (QEMU's qcow2_mark_dirty); without, nothing is needed
        (see the module docstring)."""
        if not self.lazy_refcounts or self._dirty_on_disk:
            return
        await self._write_header(
            self.header.with_(incompatible=self.header.incompatible | INCOMPAT_DIRTY), durable=True
        )
        self._dirty_on_disk = True

    @property
    def all_zero_bit(self) -> bool:
        """qmpd's all-zero bit is set (in memory as on disk)."""
        return bool(self.header.autoclear & AUTOCLEAR_QMPD_ALL_ZERO)

    async def before_data(self) -> None:
        """A non-zero byte is about to land in the layer (see
        :func:`.write.land`): withdraw the all-zero bit first, durably."""
        if self.all_zero_bit:
            self._zero_claim_withdrawn = True
            await self._write_header(
                self.header.with_(autoclear=self.header.autoclear & ~AUTOCLEAR_QMPD_ALL_ZERO),
                durable=True,
            )

    # ------------------------------------------------------------ writes (see .write)

    def reads_zero(self, entry: L2Entry) -> bool:
        """Whether a cluster mapped by ``entry`` reads as zero."""
        kind = entry.kind
        if kind is ClusterKind.UNALLOCATED:
            return self.backing is None
        return kind in (ClusterKind.ZERO_PLAIN, ClusterKind.ZERO_ALLOC)

    def _span(self, offset: int, length: int) -> _Span:
        cs = self.cluster_size
        return _Span(offset // cs, -(-(offset + length) // cs))

    async def _lock_span(self, span: _Span) -> None:
        """Take the lock once no request in flight touches ``span``'s
        clusters (QEMU's qcow2 waits for overlapping allocations alike)."""
        while True:
            await self._lock.acquire()
            busy = next((f for f in self._in_flight if f.overlaps(span)), None)
            if busy is None:
                return
            self._lock.release()
            await busy.done.wait()

    async def _write(self, offset: int, data: bytes) -> None:
        with self._scan.writing():
            await self._write_data(offset, data)

    async def _write_data(self, offset: int, data: bytes) -> None:
        # Planned under the lock (lookups, allocations, the L2 tables they
        # need); the guest's bytes are written after it, the L2 entries of
        # new clusters under it again.  Meanwhile the request's clusters
        # are in flight: any other request touching them waits, so their
        # mapping and the host clusters behind it stay as planned.
        span = self._span(offset, len(data))
        later = write.Deferred()
        await self._lock_span(span)
        try:
            await self._prepare_write()
            await write.write_data(self, offset, data, later)
            if later.writes:
                self._in_flight.append(span)
        finally:
            self._lock.release()
        if not later.writes:
            return
        # Shielded: cancelled between allocation and mapping, the new
        # clusters would be counted and used by nothing (a leak).
        with trio.CancelScope(shield=True):
            try:
                try:
                    for host, piece, event in later.writes:
                        await self.store.write(host, piece, event)
                except BlockIOError:
                    async with self._lock:
                        await write.abandon(self, later)
                    raise
                if later.links:
                    async with self._lock:
                        await write.finish(self, later)
            finally:
                self._in_flight.remove(span)
                span.done.set()

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        with self._scan.writing():
            await self._lock_span(self._span(offset, length))
            try:
                await self._prepare_write()
                return await write.write_zeroes(self, offset, length, unmap)
            finally:
                self._lock.release()

    async def _discard(self, offset: int, length: int) -> None:
        with self._scan.writing():
            await self._lock_span(self._span(offset, length))
            try:
                await self._prepare_write()
                await write.discard(self, offset, length)
            finally:
                self._lock.release()

    async def _flush(self) -> None:
        # QEMU's two steps, each announced to the file child as QEMU's
        # generic flush does: hand everything qcow2 holds back to the file
        # (flush_to_os), then make the file durable (flush_to_disk, which
        # cache.no-flush skips).
        self.store.event("flush_to_os")
        async with self._lock:
            await self._write_back(announce=not self.options.cache_no_flush)

    async def _write_back(self, *, announce: bool) -> None:
        """Write what the node holds back (pending L1 entries), make the
        file durable and, when that succeeded, mark the image clean; with
        ``announce``, raise flush_to_disk before the sync.  Called with the
        lock held.  Raises BlockIOError; the image then stays dirty."""
        if self.tables.pending:
            # The new L2 tables must be durable before the L1 table
            # points at them.
            await self.store.flush()
            await self.tables.commit_l1()
        if announce:
            self.store.event("flush_to_disk")
        await self.store.flush()
        # Not while a write is in flight: clusters it allocated are not
        # linked yet (a crash now would leave them leaked).
        if self._dirty_on_disk and not self.read_only and not self._in_flight:
            await self._write_header(
                self.header.with_(incompatible=self.header.incompatible & ~INCOMPAT_DIRTY)
            )
            # From here the next change sets the bit again, even if
            # this sync fails.
            self._dirty_on_disk = False
            await self.store.flush()

    async def write_behind(self, offset: int, length: int) -> bool:
        """The hint of a writer that will flush soon (the mirror gives it
        every few MiB): sync the file now, outside the node's lock, while
        writes go on; then the L2 tables written before the sync are
        durable and their pending L1 entries can be written.

        A sync rather than only starting writeback, because on storage
        with a volatile cache (a virtual disk over a host file) the cost of
        a flush grows with what was written since the last one, and only
        a flush pays it: paid here, it overlaps the copy instead of
        following it.  QEMU's qcow2 gets the same overlap from the flushes
        each new L2 table costs it, which other requests do not wait for.
        Changes no data, raises nothing: a failed sync stays pending in
        the file node for the next flush to report."""
        if length <= 0 or self.read_only:
            return False
        written = set(self.tables.pending)  # tables whose write completed
        if not await self.file.write_behind(0, self.file.size):
            return False
        if written:
            try:
                async with self._lock:
                    await self.tables.commit_l1(written)
            except BlockIOError:
                return False  # still pending: the next flush writes them
        return True

    async def _truncate(self, size: int) -> None:
        with self._scan.writing():
            await self._resize(size)

    async def _resize(self, size: int) -> None:
        if size % 512:
            raise BlockIOError(errno.EINVAL, "The new size must be a multiple of 512")
        if size < self.size:
            raise BlockIOError(errno.ENOTSUP, "qmpd cannot shrink qcow2 images")
        if size == self.size:
            return
        async with self._lock:
            await self._prepare_write()
            await self.begin_meta()
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
            # Only the new, empty entries: pending ones wait for a flush.
            tail = new[len(l1) :]
            await self.store.write(
                header.l1_table_offset + len(l1) * 8, encode_u64(tail), "l1_update"
            )
            await self._write_header(header.with_(l1_size=entries))
            self.tables.l1 = new
            return
        clusters = -(-entries * 8 // self.cluster_size)
        self.store.event("l1_grow_alloc_table")
        offset = await self.refcounts.allocate(clusters)
        try:
            await self.store.write(offset, encode_u64(new), "l1_grow_write_table")
            await self.store.flush()
        except BlockIOError:
            # Nothing points at the new table: give its clusters back.
            with contextlib.suppress(BlockIOError):
                await self.refcounts.free(offset, clusters)
            raise
        self.store.event("l1_grow_activate_table")
        try:
            await self._write_header(header.with_(l1_size=entries, l1_table_offset=offset))
        except BlockIOError as exc:
            # An issued header write that failed may still have landed and
            # switched the image to the new table: then its clusters stay
            # counted (a leak at worst), never free for another allocation.
            if not exc.issued:
                with contextlib.suppress(BlockIOError):
                    await self.refcounts.free(offset, clusters)
            raise
        # The new table was written whole, pending entries included, and
        # synced with the tables they point at before the header switched.
        self.tables.l1, self.tables.l1_offset = new, offset
        self.tables.pending.clear()
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
            layer = KnownZero(True, "scan") if await self._scan.layer_zero(self) else UNKNOWN
        if not layer.value:
            return UNKNOWN
        backing = self.backing
        if backing is not None and not (await backing.known_zero()).open.value:
            return UNKNOWN
        return layer

    # ------------------------------------------------------------ graph, info

    #: L1/L2 tables, the header's flags and scans are kept in memory.
    caches_content: ClassVar[bool] = True

    def child_perms(self, role: str) -> tuple[int, int]:
        # QEMU's defaults: a COW child for the backing file, a storage
        # child (metadata and data) for the file, which nobody else may
        # write or resize even when this node is read-only.
        perm, shared = self.cumulative_perms()
        if role == "backing":
            return cow_child_perms(perm, shared)
        return storage_child_perms(perm, shared, writable=not self.read_only)

    async def _before_close(self) -> None:
        # QEMU's qcow2_inactivate, after the generic flush of aclose:
        # write back and sync once more through the file child (so its
        # blkdebug rules apply again, as to QEMU's cache flush there), and
        # mark the image clean only if that succeeded.  After a failure,
        # close() finds the failed flush and leaves the image alone.
        try:
            async with self._lock:
                await self._write_back(announce=False)
        except BlockIOError as exc:
            log.warning("node %s: image left dirty at close: %s", self.name, exc.desc)

    def close(self) -> None:
        if not self.closed:
            self._close_image()
        super().close()

    def _close_image(self) -> None:
        """Everything but pending L1 entries is written through already:
        make it durable, write those entries, then mark the image clean.
        Where that cannot be done here the image stays dirty and is
        repaired on the next read-write open.

        Never after a failed flush (one the file's rules failed, which
        this path cannot see, or a failed sync): nothing written since the
        last good one is known durable, and the image stays as a crash
        would leave it (QEMU's close marks clean only after a successful
        write-back)."""
        if self.store.flush_failed:
            return
        for offset, data in self.tables.pending_writes():
            if not pwrite_and_sync_now(self.file, offset, data, sync_first=True):
                return
        self.tables.pending.clear()
        if self._dirty_on_disk and not self.read_only:
            clean = self.header.with_(incompatible=self.header.incompatible & ~INCOMPAT_DIRTY)
            if pwrite_and_sync_now(self.file, 0, encode_header(clean), sync_first=True):
                self.header = clean
                self._dirty_on_disk = False


__all__ = ["KNOWN_AUTOCLEAR", "Qcow2Node"]
