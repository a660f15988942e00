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
  do again.

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

    __slots__ = ("_changes", "_node", "_provisional", "_starts", "extents")

    def __init__(self, node: BlockNode, extents: list[Extent], changes: int | None) -> None:
        self._node = node
        #: The answer as it was (tiling the range asked, neighbours merged).
        self.extents = extents
        self._starts = [ext.start for ext in extents]
        #: None: answers nothing (the node changed since, or it was confirmed).
        self._changes = changes
        #: A zero claim was served and not confirmed yet.
        self._provisional = False

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
        is provisional until :meth:`confirm`."""
        if not self.reusable():
            return None
        status = self.extents
        i = max(bisect_right(self._starts, start) - 1, 0)
        out = []
        while i < len(status) and status[i].start < end:
            out.append(status[i].clipped(start, end))
            i += 1
        if any(ext.zero for ext in out):
            self._provisional = True
        return out

    async def confirm(self) -> list[Extent]:
        """Confirm the zero claims served so far: when there were any, ask
        the node's block status again over the whole range and return the
        extents of that answer that are not zero where the snapshot said
        zero (clipped to those places): someone wrote there since.  The
        snapshot answers nothing more afterwards.

        Raises BlockIOError as :meth:`~.node.BlockNode.block_status` (the
        snapshot is left as it was: confirm again).
        """
        if not self._provisional:
            self._changes = None
            return []
        start, end = self.extents[0].start, self.extents[-1].end
        fresh = await self._node.block_status(start, end - start)
        self._changes = None
        self._provisional = False
        out: list[Extent] = []
        old = [ext for ext in self.extents if ext.zero]
        i = 0
        for ext in fresh:
            if ext.zero:
                continue
            while i < len(old) and old[i].end <= ext.start:
                i += 1
            j = i
            while j < len(old) and old[j].start < ext.end:
                out.append(ext.clipped(old[j].start, old[j].end))
                j += 1
        return out


__all__ = ["StatusSnapshot"]
