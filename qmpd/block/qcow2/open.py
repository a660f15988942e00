"""Opening a qcow2 node for ``blockdev-add``: header checks and the backing child.

The checks follow QEMU's qcow2_do_open in order (magic, version, cluster
size, unknown incompatible features, the corrupt bit for writing), then
what qmpd does not implement is refused by name.  The ``backing`` option
is QEMU's BlockdevRefOrNull: absent means "the backing file named in the
header", opened read-only with the format the header records (probed from
the file's magic when it records none); ``null`` means none; otherwise a
node name or inline options.  A relative backing file name is relative to
the directory of the image, as in QEMU.
"""

from __future__ import annotations

import os
from array import array
from typing import TYPE_CHECKING, Any

from ...errors import GenericError
from ..node import BlockNode, CommonOptions
from .format import (
    INCOMPAT_COMPRESSION,
    INCOMPAT_CORRUPT,
    INCOMPAT_DATA_FILE,
    INCOMPAT_EXTL2,
    KNOWN_INCOMPAT,
    MAGIC,
    MAX_CLUSTER_BITS,
    MAX_L1_BYTES,
    MAX_REFTABLE_BYTES,
    MIN_CLUSTER_BITS,
    FormatError,
    Header,
    parse_header,
)
from .node import Qcow2Node
from .refcount import Refcounts
from .storage import check_sync_capable, pread_now
from .tables import decode_u64

if TYPE_CHECKING:
    from ..options import _Build

_FEATURE_NAMES = {
    0: "dirty bit",
    1: "corrupt bit",
    2: "external data file",
    3: "compression type",
    4: "extended L2 entries",
}


def read_header(file: BlockNode) -> Header:
    """Parse the header of the image in ``file``; raises GenericError."""
    check_sync_capable(file)
    # The cluster size (bytes 20-23) says how much of the file is header.
    cluster_bits = int.from_bytes(pread_now(file, 20, 4), "big")
    if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
        cluster_bits = MIN_CLUSTER_BITS  # parse_header says what is wrong
    try:
        return parse_header(pread_now(file, 0, 1 << cluster_bits))
    except FormatError as exc:
        raise GenericError(str(exc)) from None


def check_header(h: Header, *, writable: bool) -> None:
    """QEMU's open-time refusals, then qmpd's own; raises GenericError."""
    unknown = h.incompatible & ~KNOWN_INCOMPAT
    if unknown:
        # QEMU names a bit from the image's feature table when it has one,
        # else prints the unknown mask in hex.
        raise GenericError(
            f"Unsupported qcow2 feature(s): Unknown incompatible feature: {unknown:x}"
        )
    if h.incompatible & INCOMPAT_CORRUPT and writable:
        raise GenericError("qcow2: Image is corrupt; cannot be opened read/write")
    if h.crypt_method:
        raise GenericError("qmpd does not support encrypted qcow2 images")
    for bit in (INCOMPAT_DATA_FILE, INCOMPAT_EXTL2):
        if h.incompatible & bit:
            name = _FEATURE_NAMES[bit.bit_length() - 1]
            raise GenericError(f"qmpd does not support qcow2 images with {name}")
    if h.incompatible & INCOMPAT_COMPRESSION and h.compression_type != 0:
        raise GenericError("qmpd supports only zlib-compressed qcow2 images")
    if h.l1_size * 8 > MAX_L1_BYTES:
        raise GenericError("Active L1 table too large")
    if h.refcount_table_clusters << h.cluster_bits > MAX_REFTABLE_BYTES:
        raise GenericError("Reference count table too large")
    if h.size and h.l1_size * (h.cluster_size // 8) * h.cluster_size < h.size:
        raise GenericError("L1 table is too small")
    if writable and h.autoclear & 1:
        raise GenericError("qmpd cannot write qcow2 images with persistent bitmaps; open read-only")


def _probe_format(path: str) -> str:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return "raw"
    return "qcow2" if int.from_bytes(magic.ljust(4, b"\0"), "big") == MAGIC else "raw"


def _backing(
    build: _Build, file: BlockNode, header: Header, args: dict[str, Any]
) -> tuple[BlockNode | None, bool]:
    if "backing" in args:
        # Given by the client: the image's own backing is "overridden"
        # (its filename becomes json:) unless the node given is the one
        # the header names, compared as QEMU does, by the header's string.
        ref = args["backing"]
        if ref is None:
            return None, not header.backing_file
        if isinstance(ref, dict):
            if header.backing_file:
                _refuse_header_filename(ref)
            ref = {"read-only": True, **ref}
        node = build.child(ref, {**args, "read-only": True})
        return node, bool(header.backing_file) and node.filename() == header.backing_file
    if not header.backing_file:
        return None, True
    path = header.backing_file
    base = file.exact_filename()
    if not os.path.isabs(path) and base and not base.startswith("json:"):
        path = os.path.join(os.path.dirname(base), path)
    fmt = header.backing_format or _probe_format(path)
    options: dict[str, Any] = {
        "driver": fmt,
        "read-only": True,
        "file": {"driver": "file", "filename": path},
    }
    try:
        return build.child(options, {**args, "read-only": True}), True
    except GenericError as exc:
        raise GenericError(f"Could not open backing file: {exc}") from None


def _refuse_header_filename(ref: dict[str, Any]) -> None:
    """QEMU hands the header's backing filename to an inline backing node;
    a protocol driver then refuses it (observed on QEMU 11.1), while a
    format driver passes it on to its own file.  Raises GenericError."""
    driver = ref.get("driver")
    if driver in ("null-co", "null-aio"):
        raise GenericError(
            "Could not open backing file: "
            f"The only allowed filename for this driver is '{driver}://'"
        )
    if driver in ("file", "blkdebug"):
        raise GenericError(
            "Could not open backing file: "
            "Can't specify 'file' and 'filename' options at the same time"
        )


def open_qcow2(build: _Build, name: str, common: CommonOptions, args: dict[str, Any]) -> BlockNode:
    """The ``qcow2`` builder of :mod:`..options`; raises GenericError."""
    for key in ("encrypt", "data-file"):
        if key in args:
            raise GenericError(f"qmpd's qcow2 driver does not support '{key}'")
    file = build.child(args["file"], args)
    header = read_header(file)
    writable = not common.read_only and not file.read_only
    check_header(header, writable=writable)
    if args.get("lazy-refcounts") and header.version < 3:
        raise GenericError(
            "Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level"
        )
    l1 = decode_u64(pread_now(file, header.l1_table_offset, header.l1_size * 8))
    table = Refcounts.parse_table(
        pread_now(
            file,
            header.refcount_table_offset,
            header.refcount_table_clusters << header.cluster_bits,
        )
    )
    backing, default = _backing(build, file, header, args)
    node = Qcow2Node(
        name,
        common,
        file=file,
        header=header,
        l1=array("Q", l1),
        reftable=table,
        backing=backing,
        backing_default=default,
        lazy_refcounts=args.get("lazy-refcounts", header.lazy_refcounts),
    )
    if file.read_only:
        node.read_only = True
    return node


__all__ = ["check_header", "open_qcow2", "read_header"]
