"""A node's block status kept for later questions: the one rule for when an
earlier answer may be reused.

A block-status walk costs system calls (``lseek`` on a host file, table
lookups in a format).  A job that walks a whole image anyway (a mirror,
to set up its dirty bitmap) may answer later questions about parts of it
from that walk instead of asking again, but only where the answer still
holds:

* qmpd's own requests: the node counts every request that may change what
  it reads, on itself and on every node below
  (:meth:`~.node.BlockNode.change_count`).  Any change since the walk and
  the whole snapshot is stale: where it changed is not recorded.
* other processes, whose writes qmpd does not see: when a storage node
  below lets others write (:meth:`~.node.BlockNode.others_may_write`:
  locking off, or every party here shares writing, as a mirror's source
  does, like QEMU's), a hole may hold data by now.  A stale claim of data
  is harmless (whoever reads the range reads what it holds now; a claim of
  data is never a promise, see :mod:`.extents`); a stale claim of zero is
  a wrong zero claim, and a copy skipping it loses the other process's
  data.  So where the snapshot claims zero, the range must be asked again.

QEMU's mirror asks the block status per chunk as it copies, so another
process's write ahead of the copy is copied; a reuse under this rule
keeps that true.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

from .extents import Extent

if TYPE_CHECKING:
    from .node import BlockNode


class StatusSnapshot:
    """A block-status answer of ``node`` over a range, taken when its
    change count was ``changes`` (see the module docstring).  Made by
    :meth:`~.node.BlockNode.status_snapshot`."""

    __slots__ = ("_changes", "_node", "_starts", "extents")

    def __init__(self, node: BlockNode, extents: list[Extent], changes: int | None) -> None:
        self._node = node
        #: The answer as it was (tiling the range asked, neighbours merged).
        self.extents = extents
        self._starts = [ext.start for ext in extents]
        #: None: stale from the start (the node changed during the walk).
        self._changes = changes

    def reusable(self) -> bool:
        """Whether any part of the answer may still be reused: nothing of
        qmpd's has changed the node since (a change makes it stale for
        good)."""
        if self._changes is not None and self._node.change_count() != self._changes:
            self._changes = None
        return self._changes is not None

    def get(self, start: int, end: int) -> list[Extent] | None:
        """The extents tiling ``[start, end)`` (inside the range taken), cut
        from the snapshot, or None when they may be stale there and the
        caller must ask the node's :meth:`~.node.BlockNode.block_status`."""
        if not self.reusable():
            return None
        status = self.extents
        i = max(bisect_right(self._starts, start) - 1, 0)
        out = []
        while i < len(status) and status[i].start < end:
            out.append(status[i].clipped(start, end))
            i += 1
        if self._node.others_may_write() and any(ext.zero for ext in out):
            return None
        return out


__all__ = ["StatusSnapshot"]
