"""Extents: what a block-status query says about a range of a node.

An :class:`Extent` carries the flags QEMU's block status reports and the
members of a ``qemu-img map --output=json`` entry, so that one list serves
both the block layer (is this range zero? must it be copied?) and clients
comparing qmpd with ``qemu-img map``.

The safety rule everything else relies on: ``zero=True`` is a *promise*
that every byte of the extent reads as zero.  A driver that is not sure
says ``zero=False``; being wrong in that direction costs only speed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Extent:
    """One run of bytes with the same status.

    ``data``: the bytes are stored in this node's storage (QEMU's DATA).
    ``zero``: the bytes read as zero (QEMU's ZERO); see the module docstring.
    ``present``: this layer decides the content (``qemu-img map``'s
    "present", QEMU's ALLOCATED).  ``depth``: how far down the backing chain
    the content comes from (0 without backing files).  ``offset``: where the
    bytes are in the file at the bottom of the graph, when there is one.
    """

    start: int
    length: int
    data: bool
    zero: bool
    present: bool = True
    depth: int = 0
    offset: int | None = None
    compressed: bool = False

    @property
    def end(self) -> int:
        return self.start + self.length

    def shifted(self, delta: int) -> Extent:
        """The same extent seen ``delta`` bytes further on (offset unchanged)."""
        return replace(self, start=self.start + delta)

    def clipped(self, start: int, end: int) -> Extent:
        """The part of this extent inside ``[start, end)`` (must overlap)."""
        new_start = max(self.start, start)
        new_end = min(self.end, end)
        assert new_start < new_end, "clipping to a range that does not overlap"
        offset = None if self.offset is None else self.offset + (new_start - self.start)
        return replace(self, start=new_start, length=new_end - new_start, offset=offset)

    def same_kind(self, other: Extent) -> bool:
        return (
            self.data == other.data
            and self.zero == other.zero
            and self.present == other.present
            and self.depth == other.depth
            and self.compressed == other.compressed
            and (self.offset is None) == (other.offset is None)
        )

    def map_entry(self) -> dict[str, Any]:
        """The entry ``qemu-img map --output=json`` (QEMU 11.1) prints for it."""
        entry: dict[str, Any] = {
            "start": self.start,
            "length": self.length,
            "depth": self.depth,
            "present": self.present,
            "zero": self.zero,
            "data": self.data,
            "compressed": self.compressed,
        }
        # qemu-img shows a host offset only for extents this layer maps.
        if self.offset is not None and (self.data or self.zero):
            entry["offset"] = self.offset
        return entry


def merge_extents(extents: Iterable[Extent]) -> list[Extent]:
    """Join neighbours of the same kind whose host offsets continue each other,
    as ``qemu-img map`` does before printing."""
    merged: list[Extent] = []
    for ext in extents:
        if ext.length == 0:
            continue
        if merged:
            last = merged[-1]
            contiguous_offset = last.offset is None or (
                ext.offset is not None and last.offset + last.length == ext.offset
            )
            if last.end == ext.start and last.same_kind(ext) and contiguous_offset:
                merged[-1] = replace(last, length=last.length + ext.length)
                continue
        merged.append(ext)
    return merged


def check_cover(extents: list[Extent], start: int, end: int) -> None:
    """Assert that ``extents`` tile ``[start, end)`` exactly (drivers' contract)."""
    pos = start
    for ext in extents:
        assert ext.start == pos, f"extent gap or overlap at {pos}: {ext}"
        assert ext.length > 0, f"empty extent at {pos}"
        pos = ext.end
    assert pos == end, f"extents end at {pos}, not {end}"


__all__ = ["Extent", "check_cover", "merge_extents"]
