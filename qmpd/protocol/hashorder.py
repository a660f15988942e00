"""The orders in which QEMU walks the members of a JSON object.

Where QEMU stops at the first bad member, which member it names depends on
the order of a hash table, so qmpd reproduces that order when it has to
pick one of several faults.  Only error paths pay for this.  Two tables are
involved:

* A parsed object is a **QDict**: 512 buckets, each a list with the newest
  entry first, walked bucket by bucket.  The request checks ("QMP input
  member 'x' is unexpected") walk it.  A key's bucket is the hash gdbm and
  tdb used, modulo 512; QEMU 7.2's outputs agree (``{"return", "id"}``,
  ``{"id", "error"}``, VersionInfo as micro, minor, major).
* QEMU's input visitor copies an object's keys, in QDict order, into a
  **GHashTable** (GLib's open-addressing table, ``g_str_hash``), removes
  each member as the schema walk consumes it, and reports the first key
  left, in slot order, as "Parameter 'x' is unexpected".  The slots depend
  on GLib's probing and resizing, which :class:`_GHashSet` simulates
  (QEMU 7.2 names 'b' for ``{"a": 1, "b": 2}``; the QDict order says 'a').
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_BUCKETS = 512
_MASK32 = 0xFFFFFFFF


def qdict_bucket(key: str) -> int:
    """The QDict bucket QEMU puts ``key`` in."""
    data = key.encode("utf-8", "surrogatepass")
    value = (0x238F13AF * len(data)) & _MASK32
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & _MASK32
    return ((1103515243 * value + 12345) & _MASK32) % _BUCKETS


def qdict_order(keys: Iterable[str]) -> list[str]:
    """``keys`` (in insertion order) in the order QEMU's QDict iterates them."""
    indexed = list(enumerate(keys))
    # Lower bucket first; inside a bucket the most recently inserted first.
    indexed.sort(key=lambda item: (qdict_bucket(item[1]), -item[0]))
    return [key for _, key in indexed]


def _g_str_hash(key: str) -> int:
    value = 5381
    for byte in key.encode("utf-8", "surrogatepass"):
        signed = byte - 256 if byte > 127 else byte  # GLib hashes signed chars
        value = (value * 33 + signed) & _MASK32
    return value if value >= 2 else 2  # 0 and 1 mark unused and deleted slots


# GLib's modulus for each table size 1 << shift.
_PRIME_MOD = (1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749)
_MIN_SHIFT = 3
_UNUSED, _TOMBSTONE = 0, 1


class _GHashSet:
    """Just enough of GLib's GHashTable to know where each key sits."""

    def __init__(self) -> None:
        self._set_shift(_MIN_SHIFT)
        self.hashes = [_UNUSED] * self.size
        self.keys: list[str | None] = [None] * self.size
        self.nnodes = 0
        self.noccupied = 0

    def _set_shift(self, shift: int) -> None:
        self.size = 1 << shift
        self.mod = _PRIME_MOD[shift]
        self.mask = self.size - 1

    def _lookup(self, key: str, hash_value: int) -> int:
        index = (hash_value * 11) % self.mod
        step = 0
        tombstone: int | None = None
        while self.hashes[index] != _UNUSED:
            if self.hashes[index] == hash_value and self.keys[index] == key:
                return index
            if self.hashes[index] == _TOMBSTONE and tombstone is None:
                tombstone = index
            step += 1
            index = (index + step) & self.mask
        return index if tombstone is None else tombstone

    def insert(self, key: str) -> None:
        hash_value = _g_str_hash(key)
        index = self._lookup(key, hash_value)
        if self.hashes[index] >= 2:
            return
        if self.hashes[index] == _UNUSED:
            self.noccupied += 1
        self.hashes[index] = hash_value
        self.keys[index] = key
        self.nnodes += 1
        self._maybe_resize()

    def remove(self, key: str) -> None:
        hash_value = _g_str_hash(key)
        index = self._lookup(key, hash_value)
        if self.hashes[index] < 2:
            return
        self.hashes[index] = _TOMBSTONE
        self.keys[index] = None
        self.nnodes -= 1
        self._maybe_resize()

    def _maybe_resize(self) -> None:
        shrink = self.size > self.nnodes * 4 and self.size > 1 << _MIN_SHIFT
        if shrink or self.size <= self.noccupied + self.noccupied // 16:
            self._resize()

    def _resize(self) -> None:
        old_size = self.size
        shift = max((self.nnodes * 2).bit_length(), _MIN_SHIFT)
        self._set_shift(shift)
        if self.size > old_size:
            self.hashes += [_UNUSED] * (self.size - old_size)
            self.keys += [None] * (self.size - old_size)
        placed = [False] * max(self.size, old_size)
        # GLib rehashes in place: each entry not yet moved is evicted and
        # put where it now belongs, evicting whatever sat there in turn.
        for i in range(old_size):
            node_hash = self.hashes[i]
            if node_hash < 2:
                self.hashes[i] = _UNUSED
                continue
            if placed[i]:
                continue
            self.hashes[i] = _UNUSED
            key = self.keys[i]
            self.keys[i] = None
            while True:
                index = (node_hash * 11) % self.mod
                step = 0
                while placed[index]:
                    step += 1
                    index = (index + step) & self.mask
                placed[index] = True
                replaced_hash, replaced_key = self.hashes[index], self.keys[index]
                self.hashes[index], self.keys[index] = node_hash, key
                if replaced_hash < 2:
                    break
                node_hash, key = replaced_hash, replaced_key
        if self.size < old_size:
            del self.hashes[self.size :]
            del self.keys[self.size :]
        self.noccupied = self.nnodes

    def first(self) -> str | None:
        for hash_value, key in zip(self.hashes, self.keys, strict=True):
            if hash_value >= 2:
                return key
        return None


def first_unvisited(keys: Sequence[str], visited: Iterable[str]) -> str | None:
    """The member QEMU's input visitor reports as unexpected.

    ``keys`` are the object's members in insertion order, ``visited`` the
    members the schema walk consumed, in the order it consumed them.
    """
    table = _GHashSet()
    for key in qdict_order(keys):
        table.insert(key)
    for key in visited:
        table.remove(key)
    return table.first()


__all__ = ["first_unvisited", "qdict_bucket", "qdict_order"]
