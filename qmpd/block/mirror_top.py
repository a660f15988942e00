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

Every guest request through the filter passes the job's
:class:`~.drain.RequestGate`: when the job is about to leave its copy loop
to pivot it drains the gate (the requests in flight complete and are
mirrored, new ones wait), and the gate stays held until the guest's disks
have moved (or the job waits for ``job-finalize``: then the job writes
them through).  Then the filter is *retired*: the requests it held, and any
that still reach it, go to the node that replaced it (the target after a
pivot, else the source), as QEMU's BlockBackend sends the requests it
queued during a drain to its root of the moment.

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

from .drain import RequestGate
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
        self,
        name: str,
        source: BlockNode,
        tracker: WriteTracker,
        gate: RequestGate,
        *,
        implicit: bool,
    ) -> None:
        # discard=unmap so that unmapping requests reach the source, whose
        # own options then decide; no detect-zeroes of its own.
        super().__init__(name, CommonOptions(read_only=source.read_only, discard="unmap"))
        self.children["backing"] = source
        self.tracker = tracker
        self.gate = gate
        self.implicit = implicit
        self.auto_named = implicit
        #: Where requests go once the filter is retired (see :meth:`retire`).
        self.successor: BlockNode | None = None

    @property
    def source(self) -> BlockNode:
        return self.children["backing"]

    def retire(self, successor: BlockNode) -> None:
        """The filter is out of the graph and ``successor`` took its place
        under the guest's disks: requests held by the gate, and any that
        still arrive, go there, past the job."""
        self.successor = successor
        self.gate.release()

    def _size(self) -> int:
        return self.source.size

    # Each request: through the gate (it may wait for a pivot), then to the
    # successor if the filter was retired meanwhile, else to the source by
    # way of the job.

    async def _read(self, offset: int, length: int) -> bytes:
        async with self.gate.request():
            if self.successor is not None:
                return await self.successor.read(offset, length)
            return await self.source.read(offset, length)

    async def _write(self, offset: int, data: bytes) -> None:
        async with self.gate.request():
            if self.successor is not None:
                return await self.successor.write(offset, data)
            await self.tracker.guest_write(
                offset, len(data), data, partial(self.source.write, offset, data), unmap=False
            )

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        async with self.gate.request():
            if self.successor is not None:
                return await self.successor.write_zeroes(offset, length, unmap)
            return await self.tracker.guest_write(
                offset,
                length,
                None,
                partial(self.source.write_zeroes, offset, length, unmap),
                unmap=unmap,
            )

    async def _discard(self, offset: int, length: int) -> None:
        async with self.gate.request():
            if self.successor is not None:
                return await self.successor.discard(offset, length)
            # What a discarded range reads as is the driver's business: b""
            # tells the job to copy it.
            await self.tracker.guest_write(
                offset, length, b"", partial(self.source.discard, offset, length), unmap=True
            )

    async def _flush(self) -> None:
        async with self.gate.request():
            await (self.successor or self.source).flush()

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
