"""``null-co`` and ``null-aio``: nodes that store nothing.

Writes vanish; reads return zeroes.  Only with ``read-zeroes=on`` does the
node *promise* zeroes (block status ZERO, known zero "open"): QEMU leaves
the caller's buffer untouched otherwise, so qmpd returns zeroes but claims
nothing.  ``latency-ns`` delays every request.  The two drivers differ in
QEMU only in how requests complete, and not at all here.
"""

from __future__ import annotations

from typing import Any

import trio

from ..errors import GenericError
from .extents import Extent
from .node import BlockNode, CommonOptions
from .zerostate import KnownZero

DEFAULT_SIZE = 1 << 30  # 1 GiB, as QEMU


class NullNode(BlockNode):
    """A null-co node; :class:`NullAioNode` is the null-aio variant."""

    driver = "null-co"
    is_protocol = True

    def __init__(
        self,
        name: str,
        options: CommonOptions,
        *,
        size: int | None = None,
        latency_ns: int | None = None,
        read_zeroes: bool | None = None,
    ) -> None:
        super().__init__(name, options)
        if latency_ns is not None and latency_ns < 0:
            raise GenericError("latency-ns is invalid")
        if size is not None and size < 0:
            # QEMU aborts the whole process here; an error is kinder.
            raise GenericError("size is invalid")
        self._length = DEFAULT_SIZE if size is None else size
        self.latency_ns = latency_ns or 0
        self.read_zeroes = bool(read_zeroes)
        for key, value in (
            ("size", size),
            ("latency-ns", latency_ns),
            ("read-zeroes", read_zeroes),
        ):
            if value is not None:
                self.strong_options[key] = value

    def _size(self) -> int:
        return self._length

    async def _delay(self) -> None:
        if self.latency_ns:
            await trio.sleep(self.latency_ns / 1e9)

    async def _read(self, offset: int, length: int) -> bytes:
        await self._delay()
        return bytes(length)

    async def _write(self, offset: int, data: bytes) -> None:
        await self._delay()

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        await self._delay()
        return "none"

    async def _flush(self) -> None:
        await self._delay()

    async def _block_status(self, offset: int, length: int) -> list[Extent]:
        # As QEMU's null driver: "allocated, zero" with read-zeroes, else
        # nothing known (qemu-img map shows present=false, no offset).
        if self.read_zeroes:
            return [Extent(offset, length, data=False, zero=True, present=True, offset=offset)]
        return [Extent(offset, length, data=False, zero=False, present=False)]

    def _create_zero(self) -> KnownZero:
        # QEMU's null driver has no has_zero_init.
        return KnownZero(False, "driver")

    async def _open_zero(self) -> KnownZero:
        return KnownZero(True, "flag") if self.read_zeroes else KnownZero(False, "none")

    def exact_filename(self) -> str | None:
        # Without options of its own the node is just "null-co://".
        return None if self.strong_options else f"{self.driver}://"

    def full_options(self) -> dict[str, Any]:
        return {"driver": self.driver, **self.strong_options}

    def actual_size(self) -> int | None:
        return 0

    def limits(self) -> dict[str, int]:
        return {**super().limits(), "min-mem-alignment": 512}


class NullAioNode(NullNode):
    driver = "null-aio"


__all__ = ["DEFAULT_SIZE", "NullAioNode", "NullNode"]
