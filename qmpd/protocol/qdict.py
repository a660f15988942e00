"""The order in which QEMU walks the members of a JSON object.

QEMU keeps a parsed object in a QDict: a hash table of 512 buckets, each a
list with the newest entry first, walked bucket by bucket.  Where QEMU stops
at the first bad member (the request checks, "Parameter 'x' is unexpected"),
which member it names depends on that order, so qmpd reproduces it when it
has to pick one of several faults.  Only the error paths pay for this.

The bucket of a key is QEMU's hash of its bytes (the hash gdbm and tdb used)
modulo 512; observed outputs of QEMU 7.2 agree (``{"return", "id"}``,
``{"id", "error"}``, VersionInfo as micro, minor, major).
"""

from __future__ import annotations

from collections.abc import Iterable

_BUCKETS = 512
_MASK = 0xFFFFFFFF


def qdict_bucket(key: str) -> int:
    """The QDict bucket QEMU puts ``key`` in."""
    data = key.encode("utf-8", "surrogatepass")
    value = (0x238F13AF * len(data)) & _MASK
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & _MASK
    return ((1103515243 * value + 12345) & _MASK) % _BUCKETS


def qdict_order(keys: Iterable[str]) -> list[str]:
    """``keys`` (in insertion order) in the order QEMU iterates them."""
    indexed = list(enumerate(keys))
    # Lower bucket first; inside a bucket the most recently inserted first.
    indexed.sort(key=lambda item: (qdict_bucket(item[1]), -item[0]))
    return [key for _, key in indexed]


__all__ = ["qdict_bucket", "qdict_order"]
