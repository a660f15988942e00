"""Chunk bitmaps: which granularity-sized pieces of a node are marked.

A mirror keeps two of them (QEMU's block/mirror.c does the same): the
*dirty* bitmap, chunks whose source content the target does not have yet,
and the *zero* bitmap, chunks the target is known to read as zero, so that
copying a zero region there can be skipped.

A node of 4 GiB at 64 KiB granularity has 65536 chunks, and the marked
ones come in long runs (an extent of data, a region a guest wrote), so a
:class:`ChunkBitmap` stores sorted, disjoint, non-adjacent runs ``[start,
end)`` of chunk indexes rather than one bit per chunk.  Every operation
takes byte ranges; a range marks every chunk it touches
(:meth:`ChunkBitmap.mark`), but only clears or tests chunks it covers
where asked (``whole_chunks``), which is what the zero bitmap needs: a
chunk is known zero only if all of it is.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator


class ChunkBitmap:
    """Marked chunks of a ``length``-byte node, ``granularity`` bytes each.

    Raises ValueError for a granularity that is not a positive power of two.
    """

    __slots__ = ("_ends", "_starts", "granularity", "length")

    def __init__(self, length: int, granularity: int) -> None:
        if granularity <= 0 or granularity & (granularity - 1):
            raise ValueError(f"granularity {granularity} is not a power of two")
        self.length = length
        self.granularity = granularity
        # Runs of chunk indexes: _starts[i] <= chunk < _ends[i].
        self._starts: list[int] = []
        self._ends: list[int] = []

    # ------------------------------------------------------------ geometry

    @property
    def chunks(self) -> int:
        return -(-self.length // self.granularity)

    def _span(self, offset: int, length: int, whole_chunks: bool) -> tuple[int, int]:
        """Chunk indexes ``[first, last)`` for a byte range: touched, or only
        those fully covered (the node's last chunk counts as covered when
        the range reaches the node's end)."""
        end = min(offset + length, self.length)
        g = self.granularity
        if not whole_chunks:
            return offset // g, -(-end // g)
        first = -(-offset // g)
        last = -(-end // g) if end == self.length else end // g
        return first, max(first, last)

    # ------------------------------------------------------------ changes

    def _set_chunks(self, first: int, last: int) -> None:
        if first >= last:
            return
        # Runs overlapping or adjacent to [first, last) merge into one.
        lo = bisect_left(self._ends, first)
        hi = bisect_right(self._starts, last)
        if lo < hi:
            first = min(first, self._starts[lo])
            last = max(last, self._ends[hi - 1])
        self._starts[lo:hi] = [first]
        self._ends[lo:hi] = [last]

    def _clear_chunks(self, first: int, last: int) -> None:
        if first >= last:
            return
        lo = bisect_right(self._ends, first)
        hi = bisect_left(self._starts, last)
        if lo >= hi:
            return
        starts: list[int] = []
        ends: list[int] = []
        if self._starts[lo] < first:
            starts.append(self._starts[lo])
            ends.append(first)
        if self._ends[hi - 1] > last:
            starts.append(last)
            ends.append(self._ends[hi - 1])
        self._starts[lo:hi] = starts
        self._ends[lo:hi] = ends

    def mark(self, offset: int, length: int) -> None:
        """Mark every chunk ``[offset, offset+length)`` touches."""
        if length > 0:
            self._set_chunks(*self._span(offset, length, whole_chunks=False))

    def mark_whole(self, offset: int, length: int) -> None:
        """Mark only the chunks the range covers entirely."""
        if length > 0:
            self._set_chunks(*self._span(offset, length, whole_chunks=True))

    def clear(self, offset: int, length: int) -> None:
        """Unmark every chunk the range touches."""
        if length > 0:
            self._clear_chunks(*self._span(offset, length, whole_chunks=False))

    def mark_all(self) -> None:
        self._starts, self._ends = ([0], [self.chunks]) if self.chunks else ([], [])

    def clear_all(self) -> None:
        self._starts, self._ends = [], []

    # ------------------------------------------------------------ queries

    def count(self) -> int:
        """Marked bytes (the last chunk counts only up to the node's end)."""
        total = sum(e - s for s, e in zip(self._starts, self._ends, strict=True))
        nbytes = total * self.granularity
        if self._ends and self._ends[-1] == self.chunks:
            nbytes -= self.chunks * self.granularity - self.length
        return nbytes

    def all_marked(self, offset: int, length: int) -> bool:
        """Whether every chunk the byte range touches is marked."""
        first, last = self._span(offset, length, whole_chunks=False)
        if first >= last:
            return True
        i = bisect_right(self._starts, first) - 1
        return i >= 0 and self._ends[i] >= last

    def any_marked(self, offset: int, length: int) -> bool:
        """Whether any chunk the byte range touches is marked."""
        first, last = self._span(offset, length, whole_chunks=False)
        if first >= last:
            return False
        i = bisect_right(self._ends, first)
        return i < len(self._starts) and self._starts[i] < last

    def copy(self) -> ChunkBitmap:
        """An independent copy (e.g. a snapshot before changing a range)."""
        twin = ChunkBitmap(self.length, self.granularity)
        twin._starts = list(self._starts)
        twin._ends = list(self._ends)
        return twin

    def unmarked(self, offset: int, length: int) -> list[tuple[int, int]]:
        """The parts of the byte range lying in chunks that are not marked,
        as ``(offset, length)``, clipped to the range."""
        end = min(offset + length, self.length)
        g = self.granularity
        out: list[tuple[int, int]] = []
        pos = offset
        i = bisect_right(self._ends, offset // g)
        while pos < end:
            if i < len(self._starts) and self._starts[i] * g <= pos:
                pos = min(end, self._ends[i] * g)
                i += 1
                continue
            stop = end if i >= len(self._starts) else min(end, self._starts[i] * g)
            out.append((pos, stop - pos))
            pos = stop
        return out

    def next_run(self, offset: int, limit: int) -> tuple[int, int] | None:
        """The first marked byte run at or after ``offset`` (chunk-aligned,
        clipped to the node), at most ``limit`` bytes; None if nothing is
        marked there."""
        g = self.granularity
        chunk = offset // g
        i = bisect_right(self._ends, chunk)
        if i >= len(self._starts):
            return None
        first = max(chunk, self._starts[i])
        start = first * g
        end = min(self._ends[i] * g, self.length, start + max(limit, g))
        return start, end - start

    def runs(self) -> Iterator[tuple[int, int]]:
        """Every marked run as ``(offset, length)`` in bytes."""
        g = self.granularity
        for s, e in zip(self._starts, self._ends, strict=True):
            start = s * g
            yield start, min(e * g, self.length) - start


__all__ = ["ChunkBitmap"]
