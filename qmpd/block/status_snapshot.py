"""A node's block status kept for later questions: the one rule for when an
earlier answer may be reused, and what a reuse must be followed by.

A block-status walk costs system calls (``lseek`` on a host file, table
lookups in a format).  A job that walks a whole image anyway (a mirror,
to set up its dirty bitmap) may answer later questions about parts of it
from that walk instead of asking per part, under two rules:

* qmpd's own requests: the node counts every request that may change what
  it reads, on itself and on every node below
  (:meth:`~.node.BlockNode.change_count`).  After any change since the
  walk the snapshot answers nothing more: where it changed is not
  recorded.
* other processes, whose writes qmpd does not see: QEMU's locks let them
  write whenever every party here shares writing (a mirror's source,
  as QEMU's: :meth:`~.node.BlockNode.others_may_write`), and that may
  change while the snapshot lives.  A stale claim of data is harmless
  (whoever reads the range reads what it holds now; a claim of data is
  never a promise, see :mod:`.extents`); a stale claim of zero is a wrong
  zero claim, and a copy that skipped it lost the other process's data.
  So every zero claim the snapshot served is *provisional*: before the
  caller relies on what it did with one (a mirror, before it says it is
  in sync), it calls :meth:`StatusSnapshot.confirm`, which asks the node
  again and returns where such a claim no longer holds, for the caller to
  do again.  Only claims served count, and only until the caller asked
  the node afresh about their range (:meth:`StatusSnapshot.status`): from
  then on it relies on the fresh answer, as QEMU's per-chunk query does.
  Comparing the whole walk instead would take every write of qmpd's own
  since (which the caller tracks itself, a mirror by its dirty bitmap)
  for a stale claim and have it done twice.

That keeps QEMU's promise (its mirror asks the block status per chunk as
it copies, so another process's write ahead of the copy is copied) at the
cost of one more walk, not one query per part.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

from .extents import Extent

if TYPE_CHECKING:
    from .node import BlockNode


class StatusSnapshot:
    """The block status of ``node`` over a range, taken when its change
    count was ``changes`` (see the module docstring).  Made by
    :meth:`~.node.BlockNode.status_snapshot`."""

    __slots__ = ("_changes", "_claims", "_node", "_starts", "extents")

    def __init__(self, node: BlockNode, extents: list[Extent], changes: int | None) -> None:
        self._node = node
        #: The answer as it was (tiling the range asked, neighbours merged).
        self.extents = extents
        self._starts = [ext.start for ext in extents]
        #: None: answers nothing (the node changed since, or it was confirmed).
        self._changes = changes
        #: The zero claims served and not confirmed nor answered afresh
        #: yet: sorted, disjoint, neighbours merged ``[start, end)``.
        self._claims: list[tuple[int, int]] = []

    def reusable(self) -> bool:
        """Whether :meth:`get` may still answer: nothing of qmpd's has
        changed the node since, and it was not confirmed yet."""
        if self._changes is not None and self._node.change_count() != self._changes:
            self._changes = None
        return self._changes is not None

    def get(self, start: int, end: int) -> list[Extent] | None:
        """The extents tiling ``[start, end)`` (inside the range taken), cut
        from the snapshot, or None when the caller must ask the node's
        :meth:`~.node.BlockNode.block_status` instead.  A zero claim served
        is provisional until :meth:`confirm`, or until :meth:`status`
        answers its range afresh."""
        if not self.reusable():
            return None
        status = self.extents
        i = max(bisect_right(self._starts, start) - 1, 0)
        out = []
        while i < len(status) and status[i].start < end:
            out.append(status[i].clipped(start, end))
            i += 1
        for ext in out:
            if ext.zero:
                self._claim(ext.start, ext.end)
        return out

    async def status(self, start: int, end: int) -> list[Extent]:
        """The extents tiling ``[start, end)``: cut from the snapshot while
        :meth:`get` may answer, else the node's fresh block status, which
        replaces any claim served there (nothing to confirm there any
        more).  Raises BlockIOError as
        :meth:`~.node.BlockNode.block_status`."""
        out = self.get(start, end)
        if out is None:
            out = await self._node.block_status(start, end - start)
            self._settle(start, end)
        return out

    def _claim(self, start: int, end: int) -> None:
        claims = self._claims
        if claims and claims[-1][1] == start:  # windows come in order mostly
            claims[-1] = (claims[-1][0], end)
            return
        self._settle(start, end)
        i = bisect_right(claims, (start, end))
        claims.insert(i, (start, end))
        if i + 1 < len(claims) and claims[i + 1][0] == end:
            claims[i : i + 2] = [(start, claims[i + 1][1])]
        if i and claims[i - 1][1] == start:
            claims[i - 1 : i + 1] = [(claims[i - 1][0], claims[i][1])]

    def _settle(self, start: int, end: int) -> None:
        """No claim inside ``[start, end)`` needs confirming any more."""
        kept: list[tuple[int, int]] = []
        for s, e in self._claims:
            if e <= start or s >= end:
                kept.append((s, e))
                continue
            if s < start:
                kept.append((s, start))
            if e > end:
                kept.append((end, e))
        self._claims[:] = kept

    async def confirm(self) -> list[Extent]:
        """Confirm the zero claims served and not answered afresh since:
        when there are any, ask the node's block status again over the
        whole range and return the extents of that answer that are not
        zero where such a claim was (clipped to those places): someone
        wrote there since.  The snapshot answers nothing more afterwards.

        Raises BlockIOError as :meth:`~.node.BlockNode.block_status` (the
        snapshot is left as it was: confirm again).
        """
        if not self._claims:
            self._changes = None
            return []
        start, end = self.extents[0].start, self.extents[-1].end
        fresh = await self._node.block_status(start, end - start)
        self._changes = None
        claims, self._claims = self._claims, []
        out: list[Extent] = []
        i = 0
        for ext in fresh:
            if ext.zero:
                continue
            while i < len(claims) and claims[i][1] <= ext.start:
                i += 1
            j = i
            while j < len(claims) and claims[j][0] < ext.end:
                out.append(ext.clipped(*claims[j]))
                j += 1
        return out


__all__ = ["StatusSnapshot"]
