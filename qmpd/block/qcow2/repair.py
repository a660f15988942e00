"""What a qcow2 image references: the input of a refcount rebuild.

After a crash (the dirty bit was left set) the refcounts on disk may be
wrong in either direction.  The L1 and L2 tables are right: every change
writes a table's content before the entry that points at it.  So the true
refcount of every cluster is recomputed from the header down, as ``qemu-img
check -r all`` does, and :func:`~.refcount.rebuild` writes a new refcount
structure from it.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..node import BlockIOError
from .format import ClusterKind, compressed_clusters, decode_l2

if TYPE_CHECKING:
    from .node import Qcow2Node


async def used_clusters(node: Qcow2Node) -> dict[int, int]:
    """cluster index -> number of references, for everything ``node``'s
    image uses except the refcount structure itself.

    Raises BlockIOError(ENOTSUP) for images with internal snapshots or
    persistent bitmaps, whose extra tables qmpd does not walk.
    """
    header = node.header
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
    for l1_index in range(header.l1_size):
        l2_offset = node.tables.l2_offset(l1_index)
        if not l2_offset:
            continue
        add(l2_offset >> bits)
        for raw in await node.tables.l2_table(l2_offset):
            if not raw:
                continue
            entry = decode_l2(raw, bits, header.version)
            if entry.kind in (ClusterKind.NORMAL, ClusterKind.ZERO_ALLOC):
                add(entry.host >> bits)
            elif entry.kind is ClusterKind.COMPRESSED:
                span = compressed_clusters(entry.host, entry.csize, bits)
                add(span.start, len(span))
    return counts


__all__ = ["used_clusters"]
