"""Host files that qmpd itself created and left reading as zero.

Why.  ``blockdev-create`` with ``preallocation=full`` writes zeroes over
the whole file, so a hole probe finds nothing but data and the ``open``
fact (reads as zero *now*, known cheaply) could only be had by reading
every byte back.  Yet qmpd knows the answer: it wrote those zeroes a
moment ago.  This module keeps that knowledge, and keeps it honest.

Theory of operation.  When a create job has shaped a file it calls
:meth:`ZeroFillRecords.remember` with the open descriptor: the record is
the file's identity (device, inode) and a :class:`FileStamp` of what
``fstat`` said right then (size, allocated blocks, mtime and ctime in
nanoseconds).  A file node asking for its ``open`` fact calls
:meth:`ZeroFillRecords.holds`: the record counts only if the file's stamp
is unchanged, so any later change by anyone -- another process writing,
truncating, even ``touch`` -- voids it, because every change to a file's
data or size moves its ctime.  Since Linux 6.13 ctime is *multigrain*:
once a stamp has been read, the next change gets a fine-grained time, so
a write landing in the same clock tick as our ``fstat`` still shows.  On
older kernels changes are stamped with a coarse clock, so
:meth:`~ZeroFillRecords.remember` returns only once that clock has moved
past the stamp, while the creator still keeps other writers out (below):
any write after that shows, whatever the kernel.  qmpd's own writes never
depend on timestamps: a file node forgets the record explicitly before
every data write (:meth:`ZeroFillRecords.forget`), which costs one dict
operation.

Who may make a record.  A record certifies the file's whole content, so
it may only be made by a creator that kept every other writer out from
before its first zero until the stamp: another process's write landing
in between would carry the creator's stamp and be certified zero.  The
create job refuses to share write while it works (QEMU's lock byte), and
makes no record when another open file holds the write permission; a
process that writes without asking for the lock is outside what locks
can protect, here as in QEMU.

A stale record is dropped when found.  Zero writes, discards and resizes
through qmpd leave a file reading as zero but change its stamp, so they
void the record too: a conservative loss (the node falls back to the hole
probe), never a false claim.  The table is per process because the facts
are about host inodes, which all of a process's graphs share; it is
bounded (oldest records go first) so a long-running daemon does not grow.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

#: Records kept at most; creating more files forgets the oldest.
MAX_RECORDS = 4096
#: Seconds remember() waits for the file clock to pass its stamp; a clock
#: tick is a few milliseconds.
SETTLE_LIMIT = 0.2
#: Linux's CLOCK_REALTIME_COARSE (Python's time module does not name it).
CLOCK_REALTIME_COARSE = 5

FileKey = tuple[int, int]


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What fstat says about a file's content and shape, for comparison."""

    size: int
    blocks: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_size, st.st_blocks, st.st_mtime_ns, st.st_ctime_ns)


def _clock_passes(ctime_ns: int) -> bool:
    """Wait until the clock that stamps file changes without multigrain
    timestamps (the coarse real-time clock) is past ``ctime_ns``; False if
    it is not within :data:`SETTLE_LIMIT` seconds (a clock set back)."""
    deadline = time.monotonic() + SETTLE_LIMIT
    while time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= ctime_ns:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def file_key(st: os.stat_result) -> FileKey:
    """A file's identity: (device, inode)."""
    return (st.st_dev, st.st_ino)


class ZeroFillRecords:
    """Files known to read as zero because qmpd made them so; see the module docstring."""

    def __init__(self, limit: int = MAX_RECORDS) -> None:
        self._records: dict[FileKey, FileStamp] = {}
        self._limit = limit

    def __len__(self) -> int:
        return len(self._records)

    def remember(self, fd: int) -> None:
        """The open file ``fd`` reads as zero now, and nobody but the caller
        can have written it since it was zeroed (see the module docstring).
        Blocks until a later change must move the file's ctime (a few
        milliseconds at most: call it from a worker thread), keeping no
        record if the clock does not get there.  Raises OSError if fstat
        fails."""
        st = os.fstat(fd)
        if not _clock_passes(st.st_ctime_ns):
            return
        key = file_key(st)
        self._records.pop(key, None)
        self._records[key] = FileStamp.of(st)
        while len(self._records) > self._limit:
            del self._records[next(iter(self._records))]

    def holds(self, fd: int) -> bool:
        """Whether ``fd``'s file is one we zero-filled and nobody changed since."""
        if not self._records:
            return False
        try:
            st = os.fstat(fd)
        except OSError:
            return False
        key = file_key(st)
        stamp = self._records.get(key)
        if stamp is None:
            return False
        if stamp != FileStamp.of(st):
            del self._records[key]
            return False
        return True

    def forget(self, key: FileKey) -> None:
        """Drop the record of the file ``key`` (it is about to hold data)."""
        if self._records:
            self._records.pop(key, None)


#: The process's table (see the module docstring for why one per process).
ZERO_FILLED = ZeroFillRecords()

__all__ = ["MAX_RECORDS", "ZERO_FILLED", "FileKey", "FileStamp", "ZeroFillRecords", "file_key"]
