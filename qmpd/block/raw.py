"""The ``raw`` format: a window ``[offset, offset+size)`` onto its ``file`` child.

Every request is shifted by ``offset`` and passed to the child, so the
child's rules (its own ``discard``, read-only state, locks) apply too.
Without an explicit ``size`` the window runs to the child's end and
follows it when the child is resized; with one, the node cannot be resized
(QEMU: ``Cannot resize fixed-size raw disks``).  Zero facts come from the
child: unchanged when the window is the whole child, otherwise from a
block-status probe of the window.
"""

from __future__ import annotations

import errno
from typing import Any

from ..errors import GenericError
from .extents import Extent
from .node import BlockIOError, BlockNode, CommonOptions, Perm
from .zerostate import KnownZero


class RawNode(BlockNode):
    driver = "raw"
    named_after = ("file",)

    def __init__(
        self,
        name: str,
        options: CommonOptions,
        *,
        file: BlockNode,
        offset: int | None = None,
        size: int | None = None,
    ) -> None:
        super().__init__(name, options)
        # QEMU 11.1's texts; 7.2 said "Parameter 'offset' expects a
        # non-negative number below 2^64".
        for key, value in (("offset", offset), ("size", size)):
            if value is not None and value < 0:
                raise GenericError(f"Value '{value}' is out of range for parameter '{key}'")
        self.offset = offset or 0
        self.fixed_size = size
        real = file.size
        if self.offset > real:
            raise GenericError(
                f"Offset ({self.offset}) cannot be greater than size of the "
                f"containing file ({real})"
            )
        if size is not None and real - self.offset < size:
            # Sic: QEMU's message has two spaces before "actual".
            raise GenericError(
                f"The sum of offset ({self.offset}) and size ({size}) has to be smaller "
                f"or equal to the  actual size of the containing file ({real})"
            )
        if size is not None and size % 512:
            raise GenericError("Specified size is not multiple of 512")
        self.children["file"] = file  # the graph adds the parent edge
        if offset is not None:
            self.strong_options["offset"] = offset
        if size is not None:
            self.strong_options["size"] = size

    @property
    def file(self) -> BlockNode:
        return self.children["file"]

    def _size(self) -> int:
        if self.fixed_size is not None:
            return self.fixed_size
        return max(0, self.file.size - self.offset)

    async def _read(self, offset: int, length: int) -> bytes:
        # QEMU's raw driver reports these events to its file child (blkdebug).
        self.file.debug_event("read_aio")
        return await self.file.read(self.offset + offset, length)

    async def _write(self, offset: int, data: bytes) -> None:
        self.file.debug_event("write_aio")
        await self.file.write(self.offset + offset, data)

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        return await self.file.write_zeroes(self.offset + offset, length, unmap)

    async def _discard(self, offset: int, length: int) -> None:
        await self.file.discard(self.offset + offset, length)

    async def _flush(self) -> None:
        await self.file.flush()

    def _host_file(self, offset: int) -> tuple[BlockNode, int] | None:
        return self.file._host_file(self.offset + offset)

    def _host_target(self, offset: int) -> tuple[BlockNode, int, bool] | None:
        below = None if self.read_only else self.file._host_target(self.offset + offset)
        if below is None:
            return None
        node, host_offset, inspect = below
        return node, host_offset, inspect or self.options.detect_zeroes != "off"

    async def _truncate(self, size: int) -> None:
        if self.fixed_size is not None:
            raise BlockIOError(errno.ENOTSUP, "Cannot resize fixed-size raw disks")
        await self.file.truncate(self.offset + size)

    async def _block_status(self, offset: int, length: int) -> list[Extent]:
        below = await self.file.block_status(self.offset + offset, length)
        return [ext.shifted(-self.offset) for ext in below]

    def _covers_child(self) -> bool:
        return self.offset == 0 and self.size == self.file.size

    def _create_zero(self) -> KnownZero:
        # QEMU's raw_has_zero_init asks the file child.
        return self.file._create_zero()

    async def _open_zero(self) -> KnownZero:
        if self._covers_child():
            return (await self.file.known_zero()).open
        return await super()._open_zero()

    def child_perms(self, role: str) -> tuple[int, int]:
        perm, shared = self.cumulative_perms()
        # QEMU 11.1 (raw_open, x-debug-query-block-graph): without an offset
        # or a size the file is a *filtered* child and permissions pass
        # through; with one it is a data child, whose size the window
        # depends on, so nobody else may resize it.
        if self.offset or self.fixed_size is not None:
            shared &= ~Perm.RESIZE
        return perm, shared

    def exact_filename(self) -> str | None:
        # QEMU uses the child's filename when reopening it would rebuild
        # this very tree: no strong options and a protocol node below.
        if self.strong_options or not self.file.is_protocol:
            return None
        return self.file.exact_filename()

    def full_options(self) -> dict[str, Any]:
        return {"driver": self.driver, **self.strong_options, "file": self.file.full_options()}

    def actual_size(self) -> int | None:
        return self.file.actual_size()

    def limits(self) -> dict[str, int]:
        return self.file.limits()

    def has_dirty_flag(self) -> bool:
        return True


__all__ = ["RawNode"]
