"""The ``mirror_top`` filter: what a mirror puts above its source.

Theory of operation.  While a mirror job runs, QEMU inserts a filter node
of driver ``mirror_top`` above the source, and every former user of the
source (guest disks' BlockBackends) now reaches it through the filter.
The filter passes every request down to its only child (role
``backing``, as QEMU names it); each request that changes content goes
through the job (:class:`WriteTracker`), which runs it on the source and
then, in background mode, marks the range dirty to copy it later, or, in
write-blocking mode, writes the same content to the target before the
guest's request completes (having first waited for, and then held off,
every other request of the job on that range, as QEMU's active mirror
does, so that source and target see overlapping writes in one order).

The filter shows in ``query-named-block-nodes`` with ``drv`` and image
``format`` ``mirror_top``, the child's filename, size and allocation, and
the job's dirty bitmap as an unnamed ``dirty-bitmaps`` entry (QEMU 11.1
lists it there, not on the source).  Named by ``filter-node-name`` it is
an ordinary node; unnamed it is *implicit*: ``#blockNNN`` and hidden from
``query-block``, which shows the source instead.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, ClassVar, Protocol, TypeVar

from .extents import Extent
from .node import BlockIOError, BlockNode, CommonOptions
from .zerostate import KnownZero

T = TypeVar("T")


class WriteTracker(Protocol):
    """The job side of the filter (implemented by the mirror job)."""

    async def guest_write(
        self,
        offset: int,
        length: int,
        data: bytes | None,
        source_io: Callable[[], Awaitable[T]],
        *,
        unmap: bool,
    ) -> T:
        """Run ``source_io``, the guest's request on the source, which
        changes ``[offset, offset+length)``: to ``data``, to zeroes
        (``data is None``; ``unmap`` if holes were allowed) or to whatever
        a discard leaves (``data == b""``).  The job orders it against its
        own requests on that range and follows it up (dirty bits, or the
        same write to the target).  Returns what ``source_io`` returned;
        raises its BlockIOError, or one of a write-blocking copy."""
        ...

    def dirty_bitmaps_info(self) -> list[dict[str, Any]]:
        """The ``dirty-bitmaps`` entries to show on the filter."""


class MirrorTopNode(BlockNode):
    """The filter; see the module docstring."""

    driver = "mirror_top"
    is_filter: ClassVar[bool] = True

    def __init__(
        self, name: str, source: BlockNode, tracker: WriteTracker, *, implicit: bool
    ) -> None:
        # discard=unmap so that unmapping requests reach the source, whose
        # own options then decide; no detect-zeroes of its own.
        super().__init__(name, CommonOptions(read_only=source.read_only, discard="unmap"))
        self.children["backing"] = source
        self.tracker = tracker
        self.implicit = implicit
        self.auto_named = implicit

    @property
    def source(self) -> BlockNode:
        return self.children["backing"]

    def _size(self) -> int:
        return self.source.size

    async def _read(self, offset: int, length: int) -> bytes:
        return await self.source.read(offset, length)

    async def _write(self, offset: int, data: bytes) -> None:
        await self.tracker.guest_write(
            offset, len(data), data, partial(self.source.write, offset, data), unmap=False
        )

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        return await self.tracker.guest_write(
            offset,
            length,
            None,
            partial(self.source.write_zeroes, offset, length, unmap),
            unmap=unmap,
        )

    async def _discard(self, offset: int, length: int) -> None:
        # What a discarded range reads as is the driver's business: b""
        # tells the job to copy it.
        await self.tracker.guest_write(
            offset, length, b"", partial(self.source.discard, offset, length), unmap=True
        )

    async def _flush(self) -> None:
        await self.source.flush()

    async def _truncate(self, size: int) -> None:
        # The job does not share RESIZE on its source (QEMU: the mirror
        # keeps sizes equal for its whole life).
        raise BlockIOError(errno.EPERM)

    async def _block_status(self, offset: int, length: int) -> list[Extent]:
        return await self.source.block_status(offset, length)

    def _create_zero(self) -> KnownZero:
        return self.source._create_zero()

    async def _open_zero(self) -> KnownZero:
        return (await self.source.known_zero()).open

    # A filter's description is its child's (QEMU: bdrv_filter_bs).
    def filename(self) -> str:
        return self.source.filename()

    def exact_filename(self) -> str | None:
        return self.source.exact_filename()

    def full_options(self) -> dict[str, Any]:
        return self.source.full_options()

    def actual_size(self) -> int | None:
        return self.source.actual_size()

    def limits(self) -> dict[str, int]:
        # Observed on QEMU 11.1: the filter has the generic limits, with
        # a 512-byte memory alignment whatever its child has.
        return {**super().limits(), "min-mem-alignment": 512}

    def has_dirty_flag(self) -> bool:
        return self.source.has_dirty_flag()

    def dirty_bitmaps_info(self) -> list[dict[str, Any]]:
        return self.tracker.dirty_bitmaps_info()


__all__ = ["MirrorTopNode", "WriteTracker"]
