"""Repairing an image left dirty, at a read-write open (as QEMU does).

The dirty bit is set only while an image with lazy refcounts changes
(see :mod:`.node`): its refcounts on disk may then be wrong in either
direction.  The L1 and L2 tables are right: every change writes a table's
content before the entry that points at it.  So the true refcount of
every cluster is recomputed from the header down, as ``qemu-img check -r
all`` does, a new refcount structure is written after the end of the
file (:func:`~.refcount.plan_rebuild`) and synced, and only then does the
header switch to it, with the dirty bit cleared.  Killed half way, the
image is still dirty and still points at the old structure: the next
open repairs it again.  The old structure's clusters are free afterwards,
and so are clusters leaked by the crash.

This runs synchronously, while ``blockdev-add`` builds the node, through
the file child's synchronous path (:mod:`.storage`).
"""

from __future__ import annotations

import errno
from array import array
from collections.abc import Callable

from ...errors import GenericError
from ..node import BlockIOError, BlockNode
from .format import (
    INCOMPAT_DIRTY,
    OFFSET_MASK,
    ClusterKind,
    Header,
    compressed_clusters,
    decode_l2,
    encode_header,
)
from .refcount import plan_rebuild
from .storage import pread_now, pwrite_now, sync_now
from .tables import decode_u64


def used_clusters(
    header: Header, l1: array[int], read_cluster: Callable[[int], bytes]
) -> dict[int, int]:
    """cluster index -> number of references, for everything the image
    uses except the refcount structure itself; ``read_cluster`` reads one
    cluster of the file at a byte offset.

    Raises BlockIOError(ENOTSUP) for images with internal snapshots or
    persistent bitmaps, whose extra tables qmpd does not walk.
    """
    if header.nb_snapshots or header.autoclear & 1:
        raise BlockIOError(
            errno.ENOTSUP, "qmpd cannot repair qcow2 images with snapshots or bitmaps"
        )
    bits = header.cluster_bits
    counts: dict[int, int] = {0: 1}

    def add(first: int, count: int = 1) -> None:
        for cluster in range(first, first + count):
            counts[cluster] = counts.get(cluster, 0) + 1

    l1_bytes = header.l1_size * 8
    if l1_bytes:
        add(header.l1_table_offset >> bits, -(-l1_bytes >> bits))
    for raw_l1 in l1[: header.l1_size]:
        l2_offset = raw_l1 & OFFSET_MASK
        if not l2_offset:
            continue
        add(l2_offset >> bits)
        for raw in decode_u64(read_cluster(l2_offset)):
            if not raw:
                continue
            entry = decode_l2(raw, bits, header.version)
            if entry.kind in (ClusterKind.NORMAL, ClusterKind.ZERO_ALLOC):
                add(entry.host >> bits)
            elif entry.kind is ClusterKind.COMPRESSED:
                span = compressed_clusters(entry.host, entry.csize, bits)
                add(span.start, len(span))
    return counts


def repair_now(file: BlockNode, header: Header, l1: array[int]) -> Header:
    """Rebuild the refcounts of the dirty image in ``file`` and mark it
    clean; returns the header now on disk.

    Raises GenericError ("Could not repair dirty image: ...", QEMU's text)
    when that cannot be done.
    """
    try:
        counts = used_clusters(header, l1, lambda at: pread_now(file, at, header.cluster_size))
        offset, clusters, writes = plan_rebuild(
            file.size, header.cluster_bits, header.refcount_order, counts
        )
        for at, data in writes:
            pwrite_now(file, at, data)
        sync_now(file)
        clean = header.with_(
            refcount_table_offset=offset,
            refcount_table_clusters=clusters,
            incompatible=header.incompatible & ~INCOMPAT_DIRTY,
        )
        pwrite_now(file, 0, encode_header(clean))
        sync_now(file)
    except GenericError as exc:
        raise GenericError(f"Could not repair dirty image: {exc.desc}") from None
    return clean


__all__ = ["repair_now", "used_clusters"]
