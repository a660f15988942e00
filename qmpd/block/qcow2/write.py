"""The qcow2 write path: data writes, zero writes and discards.

Theory of operation.  Every function here runs under the node's lock
(see :class:`~.node.Qcow2Node`), so allocations never interleave.  A
guest data write may leave its file writes of guest bytes, and the L2
updates that follow them, in a :class:`Deferred` for the node to do after
the lock (the L2 updates under it again, :func:`finish`): everything
else, lookups and allocations included, is done here.

A data write goes in place to clusters the image owns alone (COPIED),
together with the clusters mapped right after them (one file write).  Any
other cluster is first given a new one, whose whole content is written
(old content around the new bytes) before its L2 entry changes, so a
reader never sees a cluster half made.  Consecutive guest clusters that
all need new clusters are allocated as one contiguous run: one refcount
write per block, one data write, one L2 write, whatever the number of
clusters.  The guest's bytes go to the file as they came, without a copy
into a cluster-sized buffer: the old content around them (the head of the
first cluster, the tail of the last) is written beside them.

Zero writes on version 3 images become zero clusters (keeping the host
cluster unless unmapping is allowed); discards drop whole clusters.  Both
rewrite L2 entries a table at a time (:func:`_rewrite_entries`) and then
release the old host clusters in contiguous runs, after they are
unlinked (a crash leaves leaks at worst: no dirty bit is needed).

Clusters are counted before anything points at them; a request that
fails after counting clusters and before any write that could point at
them gives them back (:func:`abandon`, as QEMU does), so an injected or
real I/O error before the link leaves no leak behind.  Once a write
that links them has been issued, they stay counted even when it failed:
a failed write may still have landed (see :func:`_link`).
"""

from __future__ import annotations

import contextlib
import errno
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..node import BlockIOError
from .format import (
    COMPRESSED,
    COPIED,
    OFFSET_MASK,
    ZERO_FLAG,
    ClusterKind,
    L2Entry,
    compressed_clusters,
    decode_l2,
)

if TYPE_CHECKING:
    from .node import Qcow2Node

#: Most clusters one write allocates as one run (32 MiB with 64 KiB
#: clusters; an L2 table's reach bounds it too).
MAX_RUN_CLUSTERS = 512

_ZEROS = bytes(1 << 20)


#: Bytes for a data cluster: (host offset, bytes, the blkdebug event QEMU
#: raises before writing them: ``write_aio`` for guest bytes, ``cow_write``
#: for old content around them).
Landing = tuple[int, bytes | bytearray | memoryview, str]


@dataclass(frozen=True, slots=True)
class Deferred:
    """What a data write leaves for after the node's lock: file writes of
    guest bytes (:data:`Landing`), then the L2 updates that map the new
    clusters among them (L2 table offset, index, entries, the entries
    they replace).  See :meth:`~.node.Qcow2Node._write`."""

    writes: list[Landing] = field(default_factory=list)
    links: list[tuple[int, int, array[int], list[L2Entry]]] = field(default_factory=list)


def all_zero(data: bytes | bytearray | memoryview) -> bool:
    """Whether every byte is zero, at memcmp speed (``any()`` walks a
    megabyte of zeroes a byte at a time: ~16 ms)."""
    view = memoryview(data)
    step = len(_ZEROS)
    return all(_ZEROS.startswith(view[i : i + step]) for i in range(0, len(view), step))


async def land(node: Qcow2Node, writes: list[Landing], later: Deferred | None = None) -> None:
    """The one way bytes reach the layer's data clusters: guest bytes, and
    old content copied around them (from the backing file too).  Before
    any of them lands, a non-zero byte among them withdraws qmpd's
    all-zero bit durably; then they are written, or left in ``later``."""
    # Looked at only while the bit is set: after that, bytes pass unread.
    if node.all_zero_bit and not all(all_zero(piece) for _, piece, _ in writes):
        await node.before_data()
    if later is not None:
        later.writes.extend(writes)
        return
    for host, piece, event in writes:
        await node.store.write(host, piece, event)


def _mapped(entry: L2Entry) -> bool:
    return entry.kind in (ClusterKind.NORMAL, ClusterKind.ZERO_ALLOC)


# ------------------------------------------------------------ L2 tables, release


async def l2_for(node: Qcow2Node, guest_cluster: int) -> tuple[int, int]:
    """(L2 table offset, index), allocating the table if needed.  Raises
    BlockIOError: EIO outside the L1 table, ENOTSUP for a shared table."""
    tables = node.tables
    l1_index, l2_index = tables.split(guest_cluster)
    if l1_index >= len(tables.l1):
        raise BlockIOError(errno.EIO, "qcow2: guest cluster outside the L1 table")
    offset = tables.l2_offset(l1_index)
    if offset and tables.l1[l1_index] & COPIED:
        return offset, l2_index
    if offset:
        raise BlockIOError(errno.ENOTSUP, "qmpd cannot write shared qcow2 L2 tables")
    new = await node.refcounts.allocate(1)
    # Its L1 entry waits for the next sync (see .tables).
    try:
        await tables.install_l2(l1_index, new, array("Q", bytes(node.cluster_size)))
    except BlockIOError:
        await _unallocate(node, new, 1)
        raise
    return new, l2_index


async def _unallocate(node: Qcow2Node, host: int, count: int) -> None:
    """Give back ``count`` clusters from ``host``, counted for a request
    that failed before anything pointed at them (QEMU frees them too).
    Should that fail as well, they stay leaked, which is harmless."""
    with contextlib.suppress(BlockIOError):
        await node.refcounts.free(host, count)


async def abandon(node: Qcow2Node, later: Deferred) -> None:
    """Give back the clusters of ``later``'s links, whose data could not
    be written (so they were never mapped).  Call under the node's lock."""
    for _, _, entries, _ in later.links:
        await _unallocate(node, entries[0] & OFFSET_MASK, len(entries))


async def release_all(node: Qcow2Node, entries: list[L2Entry]) -> None:
    """Drop the references old L2 entries held (after they were
    replaced): contiguous host clusters are freed, and discarded below,
    as one run."""
    bits = node.header.cluster_bits
    runs: list[list[int]] = []  # [first cluster, count]
    for entry in entries:
        if _mapped(entry):
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
        for host in await node.refcounts.free(first << bits, count):
            if freed and freed[-1][0] + freed[-1][1] == host:
                freed[-1][1] += node.cluster_size
            else:
                freed.append([host, node.cluster_size])
    for host, length in freed:
        await node.file.discard(host, length)


# ------------------------------------------------------------ data writes


async def write_data(
    node: Qcow2Node, offset: int, data: bytes, later: Deferred | None = None
) -> None:
    """Write ``data`` at guest ``offset`` (see the module docstring).

    With ``later``, the writes of guest bytes to clusters in place and to
    new runs (and the L2 updates of the runs) are left in it instead of
    done: metadata changes and allocations are all made here, under the
    lock; the caller does the rest (:func:`finish`)."""
    cs = node.cluster_size
    view = memoryview(data)
    pos, end = offset, offset + len(data)
    while pos < end:
        guest = pos // cs
        in_cluster = pos % cs
        n = min(cs - in_cluster, end - pos)
        raw, entry = await node.l2_entry(guest)
        owned = bool(raw & COPIED)
        if node.reads_zero(entry) and all_zero(view[pos - offset : pos - offset + n]):
            pos += n  # zeroes over zeroes: nothing to allocate
            continue
        if entry.kind is ClusterKind.NORMAL and owned:
            pos = await _write_in_place(node, data, offset, pos, entry.host + in_cluster, later)
            continue
        await node.begin_meta()
        if entry.kind is ClusterKind.ZERO_ALLOC and owned:
            # The cluster is ours: fill it, then unset ZERO.
            chunk = view[pos - offset : pos - offset + n]
            if n < cs:
                cluster = bytearray(await node.cluster_content(guest, entry))
                cluster[in_cluster : in_cluster + n] = chunk
                await land(node, [(entry.host, cluster, "write_aio")])
            else:
                await land(node, [(entry.host, chunk, "write_aio")])
            l2_offset, index = await l2_for(node, guest)
            await node.tables.set_entry(l2_offset, index, entry.host | COPIED)
            pos += n
            continue
        pos = await _write_new(node, data, offset, pos, entry, later)


def _piece(data: bytes, offset: int, start: int, stop: int) -> bytes | memoryview:
    """Guest bytes ``[start, stop)`` of a write of ``data`` at ``offset``:
    the caller's own object when that is all of it (no copy)."""
    if start == offset and stop == offset + len(data):
        return data
    return memoryview(data)[start - offset : stop - offset]


async def _write_in_place(
    node: Qcow2Node, data: bytes, offset: int, pos: int, host: int, later: Deferred | None
) -> int:
    """Write from ``pos`` into the owned cluster mapped at ``host`` and the
    owned clusters mapped right after it, in one file write (or leave it
    in ``later``); returns where that run ended."""
    cs = node.cluster_size
    end = offset + len(data)
    stop = min(end, (pos // cs + 1) * cs)
    while stop < end:
        nraw, nentry = await node.l2_entry(stop // cs)
        follows = nentry.kind is ClusterKind.NORMAL and nentry.host == host + (stop - pos)
        if not (follows and nraw & COPIED):
            break
        stop = min(end, stop + cs)
    piece = _piece(data, offset, pos, stop)
    # A write past the file's end grows the file: that one stays under
    # the lock, where resizes never race.
    defer = later is not None and host + len(piece) <= node.store.size
    await land(node, [(host, piece, "write_aio")], later if defer else None)
    return stop


async def _run_entries(node: Qcow2Node, guest: int, count: int) -> array[int]:
    """The raw L2 entries of ``count`` guest clusters from ``guest``, all
    in one L2 table (zeroes when it has none yet)."""
    tables = node.tables
    l1_index, l2_index = tables.split(guest)
    l2_offset = tables.l2_offset(l1_index)
    if not l2_offset:
        return array("Q", bytes(8 * count))
    return (await tables.l2_table(l2_offset))[l2_index : l2_index + count]


async def _write_new(
    node: Qcow2Node, data: bytes, offset: int, pos: int, entry: L2Entry, later: Deferred | None
) -> int:
    """Write from ``pos`` into newly allocated clusters: ``pos``'s cluster
    (mapped by ``entry``) and the following clusters of the same L2 table
    that need new ones too, as one run.  One allocation (one refcount
    write per block), one data write (plus the old content around it),
    one L2 write for the run.  With ``later``, only the allocation is
    done here, the writes and the L2 update are left in it.  Returns
    where the run ended."""
    cs = node.cluster_size
    bits, version = node.header.cluster_bits, node.header.version
    end = offset + len(data)
    guest = pos // cs
    l2_index = node.tables.split(guest)[1]
    olds = [entry]
    stop = min(end, (guest + 1) * cs)
    # At most half a refcount block's reach: a longer run could never be
    # found where each new block takes the first cluster of its region.
    reach = node.refcounts.per_block // 2
    limit = max(1, min(node.tables.l2_entries - l2_index, MAX_RUN_CLUSTERS, reach))
    if stop < end and limit > 1:
        wanted = min(limit, -(-(end - guest * cs) // cs))
        view = memoryview(data)
        for raw in (await _run_entries(node, guest, wanted))[1:]:
            nentry = decode_l2(raw, bits, version)
            if raw & COPIED and _mapped(nentry):
                break  # in place: not part of the run
            chunk_end = min(end, stop + cs)
            if node.reads_zero(nentry) and all_zero(view[stop - offset : chunk_end - offset]):
                break  # zeroes over zeroes: skipped
            olds.append(nentry)
            stop = chunk_end
    count = len(olds)
    start = guest * cs
    head, tail = pos - start, (start + count * cs) - stop
    # The L2 table first (its own allocation), so data clusters follow it.
    l2_offset, _ = await l2_for(node, guest)
    host = await node.refcounts.allocate(count)
    # The old content around the new bytes is written even where it is
    # zero: the clusters stay fully allocated in the file (QEMU zeroes
    # them), which is what tells a data cluster from a preallocated one.
    writes: list[Landing] = []
    old = b""
    if head:
        old = await node.cluster_content(guest, olds[0])
        writes.append((host, old[:head], "cow_write"))
    writes.append((host + head, _piece(data, offset, pos, stop), "write_aio"))
    if tail:
        if count > 1 or not head:
            old = await node.cluster_content(guest + count - 1, olds[-1])
        writes.append((host + count * cs - tail, old[cs - tail :], "cow_write"))
    first = host | COPIED
    link = (l2_offset, l2_index, array("Q", range(first, first + count * cs, cs)), olds)
    try:
        await land(node, writes, later)
    except BlockIOError:
        await _unallocate(node, host, count)
        raise
    if later is not None:
        later.links.append(link)
        return stop
    await _link(node, *link)
    return stop


async def _link(
    node: Qcow2Node, l2_offset: int, l2_index: int, entries: array[int], olds: list[L2Entry]
) -> None:
    """Map a run of new clusters (their content is written), then drop
    what the entries they replace held.

    A failed L2 write leaves the new clusters counted (leaked) unless it
    was never issued: it may have reached the file although it reported
    an error, and a cluster given back while an entry on disk maps it
    would be handed out again, two guest clusters on one host cluster."""
    try:
        await node.tables.set_entries(l2_offset, l2_index, entries)
    except BlockIOError as exc:
        if not exc.issued:
            await _unallocate(node, entries[0] & OFFSET_MASK, len(entries))
        raise
    await release_all(node, olds)


async def finish(node: Qcow2Node, later: Deferred) -> None:
    """The L2 updates :func:`write_data` left in ``later``, once its
    writes are done.  Call under the node's lock."""
    if later.links:
        await node.begin_meta()
    for link in later.links:
        await _link(node, *link)


# ------------------------------------------------------------ zero writes, discards


def whole_clusters(node: Qcow2Node, offset: int, length: int) -> tuple[int, int]:
    """The cluster-aligned part of a request; a partial last cluster
    counts as whole when the request runs to the end of the image (as
    QEMU's qcow2 zero writes and discards treat it)."""
    cs = node.cluster_size
    first = -(-offset // cs) * cs
    end = offset + length
    last = -(-end // cs) * cs if end == node.size else end // cs * cs
    return first, last


async def write_zeroes(node: Qcow2Node, offset: int, length: int, unmap: bool) -> str:
    """Make the range read as zero; returns how (see BlockNode.write_zeroes)."""
    cs = node.cluster_size
    first, last = whole_clusters(node, offset, length)
    if last <= first:
        await write_data(node, offset, bytes(length))
        return "written"
    if first > offset:
        await write_data(node, offset, bytes(first - offset))
    if offset + length > last:
        await write_data(node, last, bytes(offset + length - last))
    if node.header.version < 3 and (node.backing is not None or not unmap):
        for pos in range(first, last, cs):
            await write_data(node, pos, bytes(min(cs, node.size - pos)))
        return "written"
    await _rewrite_entries(node, first // cs, last // cs, _zeroed, unmap)
    return "zero-cluster" if node.header.version >= 3 else "unmap"


async def discard(node: Qcow2Node, offset: int, length: int) -> None:
    """Drop the whole clusters of the range (as QEMU); the rest is kept."""
    cs = node.cluster_size
    first, last = whole_clusters(node, offset, length)
    await _rewrite_entries(node, first // cs, last // cs, _discarded, False)


def _zeroed(node: Qcow2Node, raw: int, unmap: bool) -> int | None:
    """The entry a zero write leaves, or None when it stays."""
    entry = decode_l2(raw, node.header.cluster_bits, node.header.version)
    kind = entry.kind
    if kind is ClusterKind.ZERO_PLAIN:
        return None
    if kind is ClusterKind.ZERO_ALLOC and not unmap:
        return None
    if kind is ClusterKind.UNALLOCATED and node.backing is None:
        return None  # already reads as zero
    if node.header.version < 3:
        return 0  # no backing: unallocated reads zero
    if not unmap and kind is ClusterKind.NORMAL and raw & COPIED:
        return entry.host | COPIED | ZERO_FLAG  # keep the host cluster
    return ZERO_FLAG


def _discarded(node: Qcow2Node, raw: int, unmap: bool) -> int | None:
    """The entry a discard leaves, or None when it stays."""
    if node.header.version >= 3 and node.backing is not None:
        # Unallocated would show the backing file: a zero cluster instead.
        plain = decode_l2(raw, node.header.cluster_bits, 3).kind is ClusterKind.ZERO_PLAIN
        return None if plain else ZERO_FLAG
    return 0 if raw else None


async def _rewrite_entries(
    node: Qcow2Node,
    first: int,
    last: int,
    change: Callable[[Qcow2Node, int, bool], int | None],
    unmap: bool,
) -> None:
    """Give guest clusters ``first`` to ``last`` (exclusive) the entries
    ``change`` decides, an L2 table at a time: one write for the changed
    span of each table, then the old host clusters are released (after
    they are unlinked, so a crash leaks them at worst) in contiguous runs."""
    tables = node.tables
    guest = first
    while guest < last:
        l2_index = tables.split(guest)[1]
        n = min(tables.l2_entries - l2_index, last - guest)
        olds = await _run_entries(node, guest, n)
        news = array("Q", olds)
        lo, hi = n, -1
        for i, raw in enumerate(olds):
            new = change(node, raw, unmap)
            if new is not None and new != raw:
                news[i] = new
                lo, hi = min(lo, i), i
        if hi >= 0:
            await node.begin_meta()
            l2_offset, _ = await l2_for(node, guest)
            await tables.set_entries(l2_offset, l2_index + lo, news[lo : hi + 1])
            bits, version = node.header.cluster_bits, node.header.version
            await release_all(
                node,
                [
                    decode_l2(old, bits, version)
                    for old, new in zip(olds[lo : hi + 1], news[lo : hi + 1], strict=True)
                    if (old & OFFSET_MASK) != (new & OFFSET_MASK) or old & COMPRESSED
                ],
            )
        guest += n


__all__ = [
    "MAX_RUN_CLUSTERS",
    "Deferred",
    "Landing",
    "abandon",
    "all_zero",
    "discard",
    "finish",
    "l2_for",
    "land",
    "write_data",
    "write_zeroes",
]
