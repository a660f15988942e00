"""Aligned I/O for files opened with O_DIRECT (``cache.direct=on``).

Theory of operation.  With O_DIRECT the kernel moves data straight
between the disk and the caller's memory, so offsets, lengths and buffer
addresses must be multiples of what the file system and device accept,
or the call fails with EINVAL.  Guests do not care: QEMU's generic block
layer pads every unaligned request to the node's ``request-alignment``
and does the missing part as a read-modify-write (RMW), and file-posix
only ever sees aligned requests in aligned memory.  This module is that
layer for the ``file`` driver, synchronous, run in worker threads:

* :func:`probe_alignment` finds the two alignments the way QEMU's
  file-posix does (there is no reliable interface that says them): it
  tries reads at offset 0 with each of 1, 512, 1024, 2048 and 4096 and
  keeps the first that is not refused with EINVAL; "1 works" means the
  kernel does not tell, and QEMU then falls back to the safe
  :data:`MAX_ALIGN`.  So a sparse file (reading a hole is never refused)
  reports 4096 where the same file with data reports 512.
* Bounce buffers come from anonymous ``mmap``, which is page aligned and
  so meets any memory alignment; data moves with ``os.preadv`` and
  ``os.pwritev`` into and out of slices of them, in chunks of at most
  :data:`BOUNCE_MAX` so a large request does not double its memory.
* A short read (the aligned span runs past the end of the file) reads the
  rest as zero, as file-posix does.
* :class:`RangeGate` serialises what RMW needs serialised: while a
  request reads a block, merges and writes it back, no other write may
  touch that block, or the write back would undo it (QEMU marks such
  requests "serialising").  Aligned writes only wait for RMW ones.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

#: QEMU's fallback alignment: MAX(MAX_BLOCKSIZE = 4096, host page size).
MAX_ALIGN = max(4096, mmap.PAGESIZE)
#: The alignments QEMU's probe tries, smallest first.
PROBE_ALIGNMENTS = (1, 512, 1024, 2048, 4096)
#: Largest bounce buffer one request uses (a multiple of any alignment).
BOUNCE_MAX = 1 << 20


@dataclass(frozen=True, slots=True)
class Alignment:
    """What O_DIRECT needs on one open file: ``request`` for offsets and
    lengths, ``memory`` for buffer addresses (both powers of two)."""

    request: int
    memory: int


def _bounce(size: int) -> memoryview:
    """A page-aligned buffer.  Not closed explicitly: slices handed to
    preadv/pwritev hold exports, and the mapping goes with the last view."""
    return memoryview(mmap.mmap(-1, size))


def _io_works(fd: int, view: memoryview) -> bool:
    # QEMU's test: only EINVAL means "misaligned"; any other outcome,
    # even another error, counts as working.
    try:
        os.preadv(fd, [view], 0)
    except OSError as exc:
        return exc.errno != errno.EINVAL
    return True


def probe_alignment(fd: int) -> Alignment | None:
    """Probe ``fd`` (opened with O_DIRECT) as QEMU's file-posix does.

    Returns None when no alignment works (QEMU: "Could not find working
    O_DIRECT alignment").
    """
    memory = request = 0
    view = _bounce(2 * MAX_ALIGN)
    for align in PROBE_ALIGNMENTS:
        if _io_works(fd, view[align : align + MAX_ALIGN]):
            memory = align if align != 1 else MAX_ALIGN
            break
    for align in PROBE_ALIGNMENTS:
        if _io_works(fd, view[:align]):
            request = align if align != 1 else MAX_ALIGN
            break
    if not memory or not request:
        return None
    return Alignment(request, memory)


def align_down(value: int, align: int) -> int:
    return value - value % align


def align_up(value: int, align: int) -> int:
    return align_down(value + align - 1, align)


def _read_into(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``offset``; what lies past the end of file reads as zero."""
    # A short read means the end of the file (going on from an unaligned
    # count would be a misaligned request): file-posix zero-fills the rest.
    done = os.preadv(fd, [view], offset)
    view[done:] = bytes(len(view) - done)


def _write_from(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        n = os.pwritev(fd, [view[done:]], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        done += n


def read_aligned(fd: int, offset: int, length: int, align: int) -> bytes:
    """Read ``length`` bytes at ``offset`` through aligned bounce buffers."""
    start, end = align_down(offset, align), align_up(offset + length, align)
    out = bytearray()
    view = _bounce(min(end - start, BOUNCE_MAX))
    pos = start
    while pos < end:
        chunk = min(end - pos, len(view))
        _read_into(fd, view[:chunk], pos)
        lo = max(offset, pos) - pos
        hi = min(offset + length, pos + chunk) - pos
        out += view[lo:hi]
        pos += chunk
    return bytes(out)


def write_aligned(fd: int, offset: int, data: bytes | None, length: int, align: int) -> int:
    """Write ``data`` (or ``length`` zero bytes when None) at ``offset``.

    The partial blocks at either end are read first and merged (RMW); the
    caller holds them in a :class:`RangeGate` as serialising.  Returns the
    aligned end written, which may lie past the end of the file: the file
    grows to it, as under QEMU.
    """
    start, end = align_down(offset, align), align_up(offset + length, align)
    src = memoryview(data) if data is not None else None
    view = _bounce(min(end - start, BOUNCE_MAX))
    pos = start
    while pos < end:
        chunk = min(end - pos, len(view))
        part = view[:chunk]
        if pos < offset:  # head block: keep what lies before the request
            _read_into(fd, part[:align], pos)
        if pos + chunk > offset + length:  # tail block: keep what follows
            _read_into(fd, part[chunk - align :], pos + chunk - align)
        lo = max(offset, pos)
        hi = min(offset + length, pos + chunk)
        if src is None:
            part[lo - pos : hi - pos] = bytes(hi - lo)
        else:
            part[lo - pos : hi - pos] = src[lo - offset : hi - offset]
        _write_from(fd, part, pos)
        pos += chunk
    return end


@dataclass(slots=True)
class _Request:
    start: int
    end: int
    serialising: bool
    done: trio.Event = field(default_factory=trio.Event)


class RangeGate:
    """Tracks in-flight writes by aligned range; see the module docstring.

    A request waits while an overlapping one is in flight if either of
    the two is serialising.  The check and the registration happen with
    no checkpoint in between, so trio's scheduling makes them atomic.
    """

    def __init__(self) -> None:
        self._active: list[_Request] = []

    @asynccontextmanager
    async def hold(self, start: int, end: int, serialising: bool) -> AsyncIterator[None]:
        while True:
            blocker = next(
                (
                    r
                    for r in self._active
                    if r.start < end and start < r.end and (serialising or r.serialising)
                ),
                None,
            )
            if blocker is None:
                break
            await blocker.done.wait()
        req = _Request(start, end, serialising)
        self._active.append(req)
        try:
            yield
        finally:
            self._active.remove(req)
            req.done.set()

    def busy(self) -> int:
        """How many requests are in flight (for tests)."""
        return len(self._active)


__all__ = [
    "BOUNCE_MAX",
    "MAX_ALIGN",
    "PROBE_ALIGNMENTS",
    "Alignment",
    "RangeGate",
    "align_down",
    "align_up",
    "probe_alignment",
    "read_aligned",
    "write_aligned",
]
