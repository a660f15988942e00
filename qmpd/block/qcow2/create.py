"""``blockdev-create`` for qcow2: format a node as a new, empty image.

Options are BlockdevCreateOptionsQcow2 (QMP spelling).  They are checked in
QEMU's order with QEMU's texts; what qmpd does not implement (encryption,
external data files, extended L2 entries, zstd) is refused by name.

Layout, all in whole clusters: the header, the refcount table, the
refcount blocks, the L1 table; with preallocation each L2 table follows,
then the data clusters it maps.  The refcount structure is sized to cover
everything, itself included.  The file is cut to zero length first, so
every byte not written reads as zero: only the non-zero parts of the
structures are written.  Data clusters stay holes (``metadata``), are
allocated with fallocate (``falloc``) or written with zeroes (``full``).

Every image is born all zero, so version 3 images get qmpd's all-zero
autoclear bit and its extension (see :mod:`.zero`).
"""

from __future__ import annotations

import sys
from array import array
from typing import Any

from ...errors import GenericError
from ..node import BlockNode
from .format import (
    AUTOCLEAR_QMPD_ALL_ZERO,
    COMPAT_LAZY_REFCOUNTS,
    COPIED,
    MAX_L1_BYTES,
    QMPD_EXT_PAYLOAD,
    Header,
    encode_header,
    l1_entries_for,
)
from .refcount import set_entry
from .tables import run_entries

_V3_HINT = "(use version=v3 or greater)"
_FULL_CHUNK = 1 << 20


def check_options(opts: dict[str, Any]) -> None:
    """Refuse bad BlockdevCreateOptionsQcow2 with QEMU's texts (GenericError)."""
    size = opts["size"]
    version = opts.get("version", "v3")
    cluster_size = opts.get("cluster-size", 65536)
    prealloc = opts.get("preallocation", "off")
    if size % 512:
        raise GenericError("Image size must be a multiple of 512 bytes")
    if cluster_size < 512 or cluster_size > 2 * 1024 * 1024 or cluster_size & (cluster_size - 1):
        raise GenericError("Cluster size must be a power of two between 512 and 2048k")
    if opts.get("extended-l2"):
        if version == "v2":
            raise GenericError(
                "Extended L2 entries are only supported with compatibility level 1.1 "
                f"and above {_V3_HINT}"
            )
        raise GenericError("qmpd does not support qcow2 extended L2 entries (extended-l2)")
    if "backing-file" in opts and prealloc != "off":
        raise GenericError(
            "Backing file and preallocation can only be used at the same time if extended_l2 is on"
        )
    if "backing-fmt" in opts and "backing-file" not in opts:
        raise GenericError("Backing format cannot be used without backing file")
    if opts.get("lazy-refcounts") and version == "v2":
        raise GenericError(
            f"Lazy refcounts only supported with compatibility level 1.1 and above {_V3_HINT}"
        )
    bits = opts.get("refcount-bits", 16)
    if bits < 1 or bits > 64 or bits & (bits - 1):
        raise GenericError("Refcount width must be a power of two and may not exceed 64 bits")
    if version == "v2" and bits != 16:
        raise GenericError(
            "Different refcount widths than 16 bits require compatibility level 1.1 "
            f"or above {_V3_HINT}"
        )
    if "data-file" in opts or opts.get("data-file-raw"):
        raise GenericError("qmpd does not support qcow2 external data files (data-file)")
    if opts.get("compression-type", "zlib") != "zlib":
        if version == "v2":
            raise GenericError(
                "Non-zlib compression type is only supported with compatibility level 1.1 "
                f"and above {_V3_HINT}"
            )
        raise GenericError("qmpd supports only zlib compression for qcow2")
    if "encrypt" in opts:
        raise GenericError("qmpd does not support encrypted qcow2 images")
    if l1_entries_for(size, cluster_size.bit_length() - 1) * 8 > MAX_L1_BYTES:
        raise GenericError("Image size too large")


def _refblock_ones(entries: int, order: int, cluster_size: int) -> bytes:
    """A refcount block whose first ``entries`` entries are 1."""
    buf = bytearray(cluster_size)
    if order >= 3:
        width = 1 << (order - 3)
        buf[: entries * width] = (bytes(width - 1) + b"\x01") * entries
        return bytes(buf)
    per_byte = 8 >> order
    full, rest = divmod(entries, per_byte)
    one_byte = sum(1 << ((1 << order) * j) for j in range(per_byte))
    buf[:full] = bytes([one_byte]) * full
    for j in range(rest):
        set_entry(buf, full * per_byte + j, order, 1)
    return bytes(buf)


def _u64_be(values: array[int]) -> bytes:
    if sys.byteorder == "little":
        values = array("Q", values)
        values.byteswap()
    return values.tobytes()


async def create_qcow2(file: BlockNode, opts: dict[str, Any]) -> None:
    """Format ``file`` as a qcow2 image described by ``opts``.

    Raises GenericError for bad options (QEMU's texts) and BlockIOError when
    the file cannot be written.
    """
    check_options(opts)
    size = opts["size"]
    version = 2 if opts.get("version", "v3") == "v2" else 3
    cs = opts.get("cluster-size", 65536)
    bits = cs.bit_length() - 1
    order = opts.get("refcount-bits", 16).bit_length() - 1
    prealloc = opts.get("preallocation", "off")
    per_block = (cs * 8) >> order
    l2_entries = cs // 8
    l1_entries = l1_entries_for(size, bits)
    l1_clusters = -(-l1_entries * 8 // cs)
    data_clusters = -(-size // cs) if prealloc != "off" else 0
    l2_tables = -(-data_clusters // l2_entries)
    fixed = 1 + l1_clusters + l2_tables + data_clusters
    blocks = table = 1
    while True:
        total = fixed + table + blocks
        need_blocks = -(-total // per_block)
        need_table = -(-need_blocks * 8 // cs)
        if (need_blocks, need_table) == (blocks, table):
            break
        blocks, table = need_blocks, need_table

    table_at = 1
    blocks_at = table_at + table
    l1_at = blocks_at + blocks
    meta_end = l1_at + l1_clusters
    header = Header(
        version=version,
        cluster_bits=bits,
        size=size,
        l1_size=l1_entries,
        l1_table_offset=l1_at << bits,
        refcount_table_offset=table_at << bits,
        refcount_table_clusters=table,
        compatible=COMPAT_LAZY_REFCOUNTS if opts.get("lazy-refcounts") else 0,
        autoclear=AUTOCLEAR_QMPD_ALL_ZERO if version == 3 else 0,
        refcount_order=order,
        backing_file=opts.get("backing-file"),
        backing_format=opts.get("backing-fmt"),
        qmpd_extension=QMPD_EXT_PAYLOAD if version == 3 else None,
    )
    first = encode_header(header)  # raises when the backing name does not fit

    await file.truncate(0)
    await file.truncate(total << bits)
    # Refcount blocks, then the table pointing to them, then the header.
    for i in range(blocks):
        count = min(per_block, total - i * per_block)
        await file.write((blocks_at + i) << bits, _refblock_ones(count, order, cs))
    reftable = array("Q", range(blocks_at << bits, (blocks_at + blocks) << bits, cs))
    await file.write(table_at << bits, _u64_be(reftable))
    if prealloc != "off":
        l1 = array("Q")
        cluster = meta_end
        left = data_clusters
        for _ in range(l2_tables):
            count = min(l2_entries, left)
            l2_at, data_at = cluster, cluster + 1
            l1.append((l2_at << bits) | COPIED)
            first_host = (data_at << bits) | COPIED
            await file.write(l2_at << bits, run_entries(first_host, count, cs))
            if prealloc == "falloc":
                await file.write_zeroes(data_at << bits, count * cs, may_unmap=False)
            elif prealloc == "full":
                chunk = bytes(min(_FULL_CHUNK, count * cs))
                for pos in range(data_at << bits, (data_at + count) << bits, len(chunk)):
                    end = min(pos + len(chunk), (data_at + count) << bits)
                    await file.write(pos, chunk[: end - pos])
            cluster = data_at + count
            left -= count
        await file.write(l1_at << bits, _u64_be(l1))
    await file.write(0, first)
    await file.flush()


__all__ = ["check_options", "create_qcow2"]
