"""The qcow2 on-disk format: header, header extensions, L1/L2 entries.

Pure functions over bytes; no I/O.  The facts come from QEMU's
``docs/interop/qcow2.txt``:

* The header is big-endian; version 2 has the first 72 bytes, version 3
  adds feature bitmaps, the refcount order and its own length (104, or
  112 with the compression type byte and padding).
* Header extensions follow the header (type, length, data padded to 8
  bytes; type 0 ends them); the backing file name follows them, all inside
  cluster 0.
* An L1 entry holds the offset of an L2 table in bits 9-55 and the COPIED
  flag (refcount is exactly one) in bit 63.  A standard L2 entry holds the
  host cluster offset in bits 9-55, "reads as zero" in bit 0 (version 3),
  COPIED in bit 63; bit 62 marks a compressed cluster, whose descriptor
  packs a host byte offset and a count of additional 512-byte sectors,
  split at bit ``62 - (cluster_bits - 8)``.

qmpd's all-zero marker (see :mod:`.zero`) is an autoclear bit QEMU does not
define plus a header extension with a magic QEMU never used; both are
defined here so that parsing and writing agree.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field, replace

MAGIC = 0x514649FB  # "QFI\xfb"
V2_HEADER_LEN = 72
V3_HEADER_LEN = 112  # 104 + compression type byte + padding to 8

MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
#: QEMU's limits on the tables it will load (bytes).
MAX_L1_BYTES = 32 * 1024 * 1024
MAX_REFTABLE_BYTES = 8 * 1024 * 1024

# Incompatible feature bits.
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
KNOWN_INCOMPAT = (
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2
)
# Compatible feature bits.
COMPAT_LAZY_REFCOUNTS = 1 << 0
# Autoclear feature bits QEMU defines (0 bitmaps, 1 raw external data) and
# qmpd's own.  QEMU clears every autoclear bit it does not know when it
# opens an image read-write, so a QEMU that writes the image drops ours.
# A high bit keeps clear of the ones QEMU hands out in order.
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1
AUTOCLEAR_QMPD_ALL_ZERO_BIT = 62
AUTOCLEAR_QMPD_ALL_ZERO = 1 << AUTOCLEAR_QMPD_ALL_ZERO_BIT

# Header extension types.
EXT_END = 0
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441
#: qmpd's extension ("qmpd" in ASCII); QEMU keeps unknown extensions when it
#: rewrites the header.
EXT_QMPD = 0x716D7064
#: Its payload: a tag, a format version and the autoclear bit it vouches for.
QMPD_EXT_PAYLOAD = b"qmpd-all-zero\x00\x01" + bytes([AUTOCLEAR_QMPD_ALL_ZERO_BIT])

# Table entry bits.
OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00
COPIED = 1 << 63
COMPRESSED = 1 << 62
ZERO_FLAG = 1

_V2 = struct.Struct(">IIQIIQIIQQIIQ")
_V3 = struct.Struct(">QQQII")


class FormatError(Exception):
    """The bytes are not a qcow2 image qmpd can handle; the message says why."""


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed qcow2 header with its extensions."""

    version: int
    cluster_bits: int
    size: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    crypt_method: int = 0
    nb_snapshots: int = 0
    snapshots_offset: int = 0
    incompatible: int = 0
    compatible: int = 0
    autoclear: int = 0
    refcount_order: int = 4
    compression_type: int = 0
    backing_file: str | None = None
    backing_format: str | None = None
    #: Extensions qmpd does not interpret, kept verbatim (type, data).
    other_extensions: tuple[tuple[int, bytes], ...] = ()
    qmpd_extension: bytes | None = None
    #: Whether a feature name table was present (rewritten if so).
    feature_table: bool = field(default=False, compare=False)

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def l2_entries(self) -> int:
        return self.cluster_size // 8

    @property
    def refcount_bits(self) -> int:
        return 1 << self.refcount_order

    @property
    def dirty(self) -> bool:
        return bool(self.incompatible & INCOMPAT_DIRTY)

    @property
    def lazy_refcounts(self) -> bool:
        return bool(self.compatible & COMPAT_LAZY_REFCOUNTS)

    def with_(self, **changes: object) -> Header:
        return replace(self, **changes)  # type: ignore[arg-type]


def l1_entries_for(size: int, cluster_bits: int) -> int:
    """L1 entries needed to map ``size`` bytes."""
    per_l2 = 1 << (cluster_bits + cluster_bits - 3)
    return -(-size // per_l2)


def parse_header(data: bytes) -> Header:
    """Parse the header in ``data`` (all of cluster 0, or as much as exists).

    Raises FormatError with QEMU's wording where QEMU has one.
    """
    if len(data) < V2_HEADER_LEN:
        raise FormatError("Image is not in qcow2 format")
    (
        magic,
        version,
        backing_offset,
        backing_size,
        cluster_bits,
        size,
        crypt_method,
        l1_size,
        l1_offset,
        rt_offset,
        rt_clusters,
        nb_snapshots,
        snapshots_offset,
    ) = _V2.unpack_from(data)
    if magic != MAGIC:
        raise FormatError("Image is not in qcow2 format")
    if version not in (2, 3):
        raise FormatError(f"Unsupported qcow2 version {version}")
    if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
        raise FormatError(f"Unsupported cluster size: 2^{cluster_bits}")
    incompat = compat = autoclear = 0
    refcount_order, header_len, compression = 4, V2_HEADER_LEN, 0
    if version == 3:
        if len(data) < 104:
            raise FormatError("qcow2 header too short")
        incompat, compat, autoclear, refcount_order, header_len = _V3.unpack_from(data, 72)
        if header_len < 104:
            raise FormatError("qcow2 header too short")
        if header_len > 104:
            compression = data[104]
    if refcount_order > 6:
        raise FormatError("Refcount width must be a power of two and may not exceed 64 bits")
    backing_fmt: str | None = None
    others: list[tuple[int, bytes]] = []
    qmpd_ext: bytes | None = None
    table = False
    pos = header_len
    end = backing_offset if backing_offset else len(data)
    while pos + 8 <= min(end, len(data)):
        ext_type, ext_len = struct.unpack_from(">II", data, pos)
        pos += 8
        if ext_type == EXT_END:
            break
        payload = data[pos : pos + ext_len]
        if len(payload) != ext_len:
            raise FormatError("ERROR: ext_backing_format: Could not read format name")
        pos += (ext_len + 7) & ~7
        if ext_type == EXT_BACKING_FORMAT:
            backing_fmt = payload.decode("utf-8", "replace")
        elif ext_type == EXT_FEATURE_TABLE:
            table = True
        elif ext_type == EXT_QMPD:
            qmpd_ext = bytes(payload)
        else:
            others.append((ext_type, bytes(payload)))
    backing: str | None = None
    if backing_offset:
        raw = data[backing_offset : backing_offset + backing_size]
        if len(raw) != backing_size or backing_size > 1023:
            raise FormatError("Backing file name too long")
        backing = raw.decode("utf-8", "replace")
    return Header(
        version=version,
        cluster_bits=cluster_bits,
        size=size,
        l1_size=l1_size,
        l1_table_offset=l1_offset,
        refcount_table_offset=rt_offset,
        refcount_table_clusters=rt_clusters,
        crypt_method=crypt_method,
        nb_snapshots=nb_snapshots,
        snapshots_offset=snapshots_offset,
        incompatible=incompat,
        compatible=compat,
        autoclear=autoclear,
        refcount_order=refcount_order,
        compression_type=compression,
        backing_file=backing,
        backing_format=backing_fmt,
        other_extensions=tuple(others),
        qmpd_extension=qmpd_ext,
        feature_table=table,
    )


# (type, bit, name) for the feature name table QEMU writes into v3 images.
_FEATURE_NAMES = (
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
)


def _extension(ext_type: int, payload: bytes) -> bytes:
    pad = (-len(payload)) % 8
    return struct.pack(">II", ext_type, len(payload)) + payload + bytes(pad)


def encode_header(h: Header) -> bytes:
    """The bytes of cluster 0's used part: header, extensions, backing name.

    Raises FormatError when they do not fit in one cluster.
    """
    backing = (h.backing_file or "").encode()
    out = bytearray(
        _V2.pack(
            MAGIC,
            h.version,
            0,  # backing file offset: patched below
            len(backing),
            h.cluster_bits,
            h.size,
            h.crypt_method,
            h.l1_size,
            h.l1_table_offset,
            h.refcount_table_offset,
            h.refcount_table_clusters,
            h.nb_snapshots,
            h.snapshots_offset,
        )
    )
    if h.version == 3:
        out += _V3.pack(h.incompatible, h.compatible, h.autoclear, h.refcount_order, V3_HEADER_LEN)
        out += bytes([h.compression_type]) + bytes(7)
    if h.backing_format and h.backing_file:
        out += _extension(EXT_BACKING_FORMAT, h.backing_format.encode())
    if h.version == 3 and (h.feature_table or h.cluster_size > 4096):
        table = b"".join(
            struct.pack(">BB46s", kind, bit, name.encode()) for kind, bit, name in _FEATURE_NAMES
        )
        out += _extension(EXT_FEATURE_TABLE, table)
    for ext_type, payload in h.other_extensions:
        out += _extension(ext_type, payload)
    if h.qmpd_extension is not None:
        out += _extension(EXT_QMPD, h.qmpd_extension)
    out += bytes(8)  # end of extensions
    if backing:
        struct.pack_into(">Q", out, 8, len(out))
        out += backing
    if len(out) > h.cluster_size:
        raise FormatError("Cannot fit the qcow2 header into the first cluster")
    return bytes(out)


class ClusterKind(enum.Enum):
    """What an L2 entry says about its guest cluster."""

    UNALLOCATED = "unallocated"  # falls through to the backing file
    ZERO_PLAIN = "zero-plain"  # reads as zero, no host cluster
    ZERO_ALLOC = "zero-alloc"  # reads as zero, host cluster kept
    NORMAL = "normal"
    COMPRESSED = "compressed"


@dataclass(frozen=True, slots=True)
class L2Entry:
    kind: ClusterKind
    host: int = 0
    #: Compressed clusters: bytes of compressed data at ``host``.
    csize: int = 0


def decode_l2(entry: int, cluster_bits: int, version: int) -> L2Entry:
    """Decode one L2 entry (an integer as read, big-endian decoded)."""
    if entry & COMPRESSED:
        shift = 62 - (cluster_bits - 8)
        host = entry & ((1 << shift) - 1)
        sectors = ((entry >> shift) & ((1 << (cluster_bits - 8)) - 1)) + 1
        return L2Entry(ClusterKind.COMPRESSED, host, sectors * 512 - (host & 511))
    host = entry & OFFSET_MASK
    if version >= 3 and entry & ZERO_FLAG:
        return L2Entry(ClusterKind.ZERO_ALLOC if host else ClusterKind.ZERO_PLAIN, host)
    if host:
        return L2Entry(ClusterKind.NORMAL, host)
    return L2Entry(ClusterKind.UNALLOCATED)


def compressed_clusters(host: int, csize: int, cluster_bits: int) -> range:
    """Host cluster indices a compressed cluster's bytes touch."""
    return range(host >> cluster_bits, ((host + csize - 1) >> cluster_bits) + 1)


__all__ = [
    "AUTOCLEAR_BITMAPS",
    "AUTOCLEAR_DATA_FILE_RAW",
    "AUTOCLEAR_QMPD_ALL_ZERO",
    "AUTOCLEAR_QMPD_ALL_ZERO_BIT",
    "COMPAT_LAZY_REFCOUNTS",
    "COMPRESSED",
    "COPIED",
    "EXT_QMPD",
    "INCOMPAT_COMPRESSION",
    "INCOMPAT_CORRUPT",
    "INCOMPAT_DATA_FILE",
    "INCOMPAT_DIRTY",
    "INCOMPAT_EXTL2",
    "KNOWN_INCOMPAT",
    "MAGIC",
    "MAX_CLUSTER_BITS",
    "MAX_L1_BYTES",
    "MAX_REFTABLE_BYTES",
    "MIN_CLUSTER_BITS",
    "OFFSET_MASK",
    "QMPD_EXT_PAYLOAD",
    "ZERO_FLAG",
    "ClusterKind",
    "FormatError",
    "Header",
    "L2Entry",
    "compressed_clusters",
    "decode_l2",
    "encode_header",
    "l1_entries_for",
    "parse_header",
]
