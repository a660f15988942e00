"""Whether a qcow2 image reads as zero: qmpd's all-zero bit, or a scan.

The question the 2020 "qcow2 all-zero detection" thread left open is
decided here: qmpd's bit describes **this layer only**.  It means "no
cluster of this image holds a non-zero byte: every L2 entry is unallocated,
a zero cluster, or a cluster qmpd allocated and left zero (preallocation)".
It says nothing about the backing file; the image reads as zero when the
bit holds *and* the backing (if any) reads as zero.  Why the layer meaning:
it composes along a backing chain (each layer answers for itself, the
chain is zero when every layer is), it stays true when the backing file is
changed or dropped (``qemu-img rebase -u``), and it can be set at create
time even with a backing file, where "reads as zero with no backing" would
have to be false.

Trust.  The bit is an *autoclear* feature bit QEMU does not define
(:data:`~.format.AUTOCLEAR_QMPD_ALL_ZERO_BIT`); QEMU clears autoclear bits it
does not know whenever it opens an image read-write, so an image QEMU may
have written never keeps it.  qmpd trusts the bit only together with its
own header extension (:data:`~.format.EXT_QMPD`, a magic QEMU never used,
whose payload names the bit): a future QEMU that gives the same bit a
meaning of its own sets it without the extension, and is ignored.  qmpd
sets bit and extension at create time and clears the bit, durably, before
the first non-zero byte reaches the layer.

Without a trusted bit, the scan walks the L1 table and every L2 table: a
layer is zero when each entry is unallocated or zero, or maps a host
range the file child reports as reading zero (a metadata-preallocated
image's clusters are holes).  Compressed clusters count as data.  The
``how`` of the answer is ``flag`` or ``scan``.

A scan result is kept (:class:`ScanCache`) only when no write overlapped
the scan: a write is counted when it *begins*, and a scan that saw the
count move, or started while a write was still going, is not kept and
answers "not known".  A write in flight has allocated clusters it has not
mapped yet; a scan reading the tables meanwhile sees the layer as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .format import AUTOCLEAR_QMPD_ALL_ZERO, OFFSET_MASK, QMPD_EXT_PAYLOAD, ZERO_FLAG, Header
from .tables import decode_u64, run_entries

if TYPE_CHECKING:
    from .node import Qcow2Node


def flag_valid(header: Header) -> bool:
    """Whether qmpd's all-zero bit is set *and* vouched for by its extension."""
    return bool(header.autoclear & AUTOCLEAR_QMPD_ALL_ZERO) and (
        header.qmpd_extension == QMPD_EXT_PAYLOAD
    )


# Byte maps for bytes.translate: the top byte of a big-endian L2 entry
# holds the compressed flag (bit 62), the bottom byte the zero flag (bit 0).
_COMPRESSED_BITS = bytes(b & 0x40 for b in range(256))
_ZERO_BITS = bytes(b & 0x01 for b in range(256))


def _layer_runs(raw: bytes, cluster_size: int, version: int) -> list[tuple[int, int]] | None:
    """The host ranges (offset, length) of one L2 table's data clusters, or
    None when it maps a compressed cluster (counted as data).

    The work is done with byte operations where the table allows it: a
    preallocated table (all entries normal, host clusters in order) is
    recognised by comparing it whole with the table it would be.
    """
    used = len(raw.rstrip(b"\0"))
    if not used:
        return []
    n = -(-used // 8)
    raw = raw[: n * 8]
    if raw[0::8].translate(_COMPRESSED_BITS).strip(b"\0"):
        return None
    zero_flags = version >= 3 and bool(raw[7::8].translate(_ZERO_BITS).strip(b"\0"))
    first = int.from_bytes(raw[:8], "big")
    host = first & OFFSET_MASK
    if not zero_flags and host and raw == run_entries(first, n, cluster_size):
        return [(host, n * cluster_size)]
    runs: list[tuple[int, int]] = []
    for value in decode_u64(raw):
        host = value & OFFSET_MASK
        if not host or (version >= 3 and value & ZERO_FLAG):
            continue  # unallocated, or a zero cluster
        if runs and runs[-1][0] + runs[-1][1] == host:
            runs[-1] = (runs[-1][0], runs[-1][1] + cluster_size)
        else:
            runs.append((host, cluster_size))
    return runs


async def scan_layer(node: Qcow2Node) -> bool:
    """True when no cluster of ``node``'s own layer may read as non-zero.

    Reads every L2 table once (straight from the file: the cache is written
    through, and a scan must not evict the tables guest I/O uses), then asks
    the file about the host ranges of data clusters.
    """
    header = node.header
    tables = node.tables
    runs: list[tuple[int, int]] = []  # host ranges of data clusters to ask the file about
    for l1_index in range(header.l1_size):
        l2_offset = tables.l2_offset(l1_index)
        if not l2_offset:
            continue
        raw = await node.store.read(l2_offset, header.cluster_size)
        table_runs = _layer_runs(raw, header.cluster_size, header.version)
        if table_runs is None:
            return False
        for host, length in table_runs:
            if runs and runs[-1][0] + runs[-1][1] == host:
                runs[-1] = (runs[-1][0], runs[-1][1] + length)
            else:
                runs.append((host, length))
    file = node.file
    for host, length in runs:
        end = min(host + length, file.size)
        if end <= host:
            continue  # past the end of the file: reads as zero
        for ext in await file.block_status(host, end - host):
            if not ext.zero:
                return False
    return True


class ScanCache:
    """The layer's scan answer, kept only while no write can have
    falsified it (see the module docstring)."""

    def __init__(self) -> None:
        #: Writes begun so far (a generation) and writes not finished yet.
        self._begun = 0
        self._active = 0
        self._result: bool | None = None

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around every request that may change the layer, from before its
        first change until it is done (failed or not)."""
        self._begun += 1
        self._active += 1
        self._result = None
        try:
            yield
        finally:
            self._active -= 1

    async def layer_zero(self, node: Qcow2Node) -> bool:
        """Whether the layer is known zero: the kept answer, or a scan."""
        if self._result is not None:
            return self._result
        if self._active:
            return False  # clusters may be allocated and not mapped yet
        begun = self._begun
        result = await scan_layer(node)
        if self._begun != begun:
            return False  # a write began meanwhile: the scan may predate it
        self._result = result
        return result


__all__ = ["ScanCache", "flag_valid", "scan_layer"]
