"""Image creation (``blockdev-create``): the ``file`` driver's, as a job.

Theory of operation.  ``blockdev-create`` checks the driver at command
level (only ``file`` can create in qmpd; every other driver answers QEMU's
``Driver does not support blockdev-create``), then starts a
:class:`CreateJob` of type ``create``.  Like QEMU's create jobs it is
never auto-dismissed, always auto-finalized, and counts one unit of
progress, done when the driver returns whether it succeeded or not.

The file driver's work follows QEMU's file-posix ``raw_co_create`` step by
step, because clients observe its order:

1. an ``extent-size-hint`` above 2^32-1 is refused (``Extent size hint is
   too large``; QMP's ``size`` type lets ``-1`` through as 2^64-1);
2. the file is opened with ``O_CREAT`` (``Could not create 'f': ...``);
3. the file-posix locks are taken: permissions write and resize, sharing
   everything but resize, so a QEMU or qmpd holding the image for writing
   without sharing it makes creation fail (``Failed to get "write" lock``)
   before anything is touched;
4. the file is truncated to 0, then ``nocow`` and the extent size hint are
   applied where the file system takes them (failure is not an error);
5. the file grows to ``size``: ``off`` by ftruncate, ``falloc`` by
   posix_fallocate, ``full`` by ftruncate, written zeroes and an fsync;
   ``metadata`` is refused (``Unsupported preallocation mode: metadata``).
   After ``off``/``falloc`` the first block is written with zeroes, as
   QEMU does so that a later open can probe the alignment; a fresh image
   thus shows 4 KiB of data at its start (``qemu-img map``), and ``du``
   shows 4 KiB (off), the whole size (falloc, full).  QEMU's first-block
   write of 512 bytes also *grows* a file smaller than that to 512 bytes;
   qmpd writes no further than ``size``.

Steps 1-3 run inline: QEMU's coroutine does not yield before its first
thread-pool request, so a create failing there shows ``aborting`` and
``concluded`` *before* the command's reply.  Steps 4-5 run in a worker
thread, after which the reply comes first, as in QEMU.

At the end the job records the file in :data:`~.zerofill.ZERO_FILLED`: a
node opened on it right after knows it reads as zero (``open``, how
``record``), even when fully preallocated, without reading it back.  The
record must certify qmpd's zeroes only, so from step 4 on the job also
refuses to share write (QEMU's lock byte ``200 + write``) and records
nothing when it cannot: when another open file holds the write permission
(it may write while the zeroes go in, as QEMU lets it) or locks do not
work.  A process asking for the write lock meanwhile is refused, as it is
while any QEMU writer that does not share write holds the file.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import logging
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from ..errors import GenericError
from ..jobs import Job, JobFailed, JobType
from .file import (
    F_OFD_SETLK,
    LOCK_PERM_BASE,
    LOCK_SHARED_BASE,
    _flock,
    held_elsewhere,
    lock_bytes,
    lock_conflict,
    ofd_locks_supported,
)
from .node import PERM_ALL, Perm
from .zerofill import ZERO_FILLED

log = logging.getLogger("qmpd.block.create")

PREALLOC_MODES = ("off", "metadata", "falloc", "full")
#: QEMU's default extent size hint for new files (1 MiB; 0 means none).
DEFAULT_EXTENT_SIZE_HINT = 1 << 20
#: The first-block write after off/falloc: QEMU's MAX_BLOCKSIZE, or a
#: sector (BDRV_SECTOR_SIZE) when the image is smaller than that.
FIRST_BLOCK = 4096
SECTOR = 512
#: Zeroes written per request with preallocation=full.
FULL_CHUNK = 1 << 20

# What creating asks and shares (file-posix's raw_co_create): it must
# write and resize, and promises the size it leaves, so resize is unshared.
CREATE_PERM = Perm.WRITE | Perm.RESIZE
CREATE_SHARED = PERM_ALL & ~Perm.RESIZE

# Linux ioctls: FS_IOC_GETFLAGS/SETFLAGS (an int; the kernel reads a long's
# low half) and FS_IOC_FSGETXATTR/FSSETXATTR (struct fsxattr).
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_NOCOW_FL = 0x00800000
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FS_XFLAG_EXTSIZE = 0x00000800
_FSXATTR = struct.Struct("IIIII8x")  # xflags, extsize, nextents, projid, cowextsize

_U64 = 1 << 64


@dataclass(frozen=True, slots=True)
class FileCreateOptions:
    """BlockdevCreateOptionsFile.  ``size`` and ``extent_size_hint`` are
    QMP ``size`` values, i.e. already reduced to [0, 2^64)."""

    filename: str
    size: int
    preallocation: str = "off"
    nocow: bool = False
    extent_size_hint: int | None = None

    @classmethod
    def from_qmp(cls, options: Mapping[str, Any]) -> FileCreateOptions:
        """From the checked ``options`` of blockdev-create (driver ``file``)."""
        hint = options.get("extent-size-hint")
        return cls(
            filename=options["filename"],
            size=options["size"] % _U64,
            preallocation=options.get("preallocation", "off"),
            nocow=options.get("nocow", False),
            extent_size_hint=None if hint is None else hint % _U64,
        )

    @property
    def offset(self) -> int:
        """``size`` as the ``off_t`` QEMU passes to the kernel (may be negative)."""
        return self.size - _U64 if self.size >= 1 << 63 else self.size


def parse_create_options(options: Mapping[str, Any]) -> FileCreateOptions:
    """The driver check of ``blockdev-create``: only ``file`` creates.

    Raises GenericError ``Driver does not support blockdev-create``.
    """
    if options.get("driver") != "file":
        raise GenericError("Driver does not support blockdev-create")
    return FileCreateOptions.from_qmp(options)


# ---------------------------------------------------------------- the steps


def _fail(what: str, exc: OSError) -> JobFailed:
    return JobFailed(f"{what}: {os.strerror(exc.errno or errno.EIO)}")


def open_and_lock(opts: FileCreateOptions) -> int:
    """Steps 1-3: check the hint, open (creating), lock.  Returns the fd.

    Raises JobFailed with QEMU's texts; the fd is closed then.
    """
    hint = DEFAULT_EXTENT_SIZE_HINT if opts.extent_size_hint is None else opts.extent_size_hint
    if hint > 0xFFFFFFFF:
        raise JobFailed("Extent size hint is too large")
    try:
        fd = os.open(opts.filename, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _fail(f"Could not create '{opts.filename}'", exc) from None
    try:
        _lock(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock(fd: int) -> None:
    """Take the create permissions' lock bytes, then check nobody conflicts."""
    if not ofd_locks_supported(fd):
        return
    for byte in sorted(lock_bytes(CREATE_PERM, CREATE_SHARED)):
        try:
            _flock(fd, F_OFD_SETLK, fcntl.F_RDLCK, byte)
        except OSError as exc:
            raise JobFailed(f"Failed to lock byte {byte}: {exc.strerror}") from None
    conflict = lock_conflict(fd, CREATE_PERM, CREATE_SHARED)
    if conflict is not None:
        raise JobFailed(conflict)


def _set_nocow(fd: int) -> None:
    # An optimisation for btrfs; QEMU ignores every failure here.
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        buf[0] |= FS_NOCOW_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, buf, True)
    except OSError:
        pass


def _set_extent_size_hint(fd: int, hint: int, explicit: bool) -> None:
    # Honoured by XFS; elsewhere it fails, which only deserves a warning
    # when the client asked for a hint (QEMU prints one then).
    try:
        buf = bytearray(fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(_FSXATTR.size)))
        xflags, _extsize, nextents, projid, cowextsize = _FSXATTR.unpack(buf)
        packed = _FSXATTR.pack(xflags | FS_XFLAG_EXTSIZE, hint, nextents, projid, cowextsize)
        fcntl.ioctl(fd, FS_IOC_FSSETXATTR, packed)
    except OSError as exc:
        if explicit and hint:
            log.warning("Failed to set extent size hint: %s", exc.strerror)


def _first_block(fd: int, size: int) -> None:
    # Best effort, as QEMU's allocate_first_block: failures are ignored.
    length = FIRST_BLOCK if size >= FIRST_BLOCK else SECTOR
    with contextlib.suppress(OSError):
        os.pwrite(fd, bytes(min(length, size)), 0)


def _restore_length(fd: int) -> None:
    # A failed resize leaves the file as it was before it (empty).
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)


def _grow(fd: int, opts: FileCreateOptions) -> None:
    """Step 5: from an empty file to ``size`` with the preallocation asked."""
    offset = opts.offset
    mode = opts.preallocation
    if mode == "off":
        try:
            os.ftruncate(fd, offset)
        except OSError as exc:
            raise _fail("Could not resize file", exc) from None
        if offset > 0:
            _first_block(fd, offset)
    elif mode == "falloc":
        if offset == 0:
            return
        try:
            os.posix_fallocate(fd, 0, offset)
        except OSError as exc:
            _restore_length(fd)
            raise _fail("Could not preallocate new data", exc) from None
        _first_block(fd, offset)
    elif mode == "full":
        try:
            os.ftruncate(fd, offset)
        except OSError as exc:
            raise _fail("Could not resize file", exc) from None
        chunk = bytes(min(FULL_CHUNK, max(offset, 0)))
        pos = 0
        try:
            while pos < offset:
                pos += os.pwrite(fd, memoryview(chunk)[: offset - pos], pos)
        except OSError as exc:
            _restore_length(fd)
            raise _fail("Could not write zeros for preallocation", exc) from None
        try:
            os.fsync(fd)
        except OSError as exc:
            _restore_length(fd)
            raise _fail("Could not flush file to disk", exc) from None
    else:
        raise JobFailed(f"Unsupported preallocation mode: {mode}")


def _keep_writers_out(fd: int) -> bool:
    """Refuse to share write from now on, so that nobody who respects the
    locks writes while the file is made zero; True when that holds.  False
    (and nothing kept) when another open file already holds the write
    permission or locks do not work here."""
    index = Perm.WRITE.bit_length() - 1
    if not ofd_locks_supported(fd):
        return False
    try:
        _flock(fd, F_OFD_SETLK, fcntl.F_RDLCK, LOCK_SHARED_BASE + index)
    except OSError:
        return False
    # Taken, then checked, as every party does: of two racing, one sees the other.
    if held_elsewhere(fd, LOCK_PERM_BASE + index):
        with contextlib.suppress(OSError):
            _flock(fd, F_OFD_SETLK, fcntl.F_UNLCK, LOCK_SHARED_BASE + index)
        return False
    return True


def shape_file(fd: int, opts: FileCreateOptions) -> None:
    """Steps 4-5 (blocking; run in a worker thread), then the zero-fill
    record, made only when no other writer could have been at work.

    Raises JobFailed with QEMU's texts.
    """
    alone = _keep_writers_out(fd)
    try:
        os.ftruncate(fd, 0)
    except OSError as exc:
        raise _fail("Could not resize file", exc) from None
    if opts.nocow:
        _set_nocow(fd)
    hint = DEFAULT_EXTENT_SIZE_HINT if opts.extent_size_hint is None else opts.extent_size_hint
    _set_extent_size_hint(fd, hint, opts.extent_size_hint is not None)
    _grow(fd, opts)
    if alone:
        # Everything from 0 to size reads as zero now, and we know it.
        with contextlib.suppress(OSError):
            ZERO_FILLED.remember(fd)


def close_created(fd: int) -> None:
    """Close (which drops the OFD locks).  Raises JobFailed as QEMU does."""
    try:
        os.close(fd)
    except OSError as exc:
        raise _fail("Could not close the new file", exc) from None


# ---------------------------------------------------------------- the job


class CreateJob(Job):
    """A ``blockdev-create`` of a host file; see the module docstring."""

    job_type = JobType.CREATE

    def __init__(self, job_id: str, options: FileCreateOptions) -> None:
        # QEMU's create jobs: JOB_MANUAL_DISMISS, never manual finalize.
        super().__init__(job_id, auto_finalize=True, auto_dismiss=False)
        self.options = options

    async def run(self) -> None:
        self.progress.set_remaining(1)
        try:
            fd = open_and_lock(self.options)
            # The reply waits for the inline steps only (module docstring):
            # the hop to a thread counts as the first yield.  Job's own
            # event, so that a job cancelled before it ran (shutdown) still
            # releases blockdev-create, which cannot itself be cancelled.
            self._first_yield.set()
            try:
                await trio.to_thread.run_sync(shape_file, fd, self.options)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            # Only a create that worked reports a failing close (as QEMU).
            close_created(fd)
        finally:
            # QEMU counts the step done whatever the driver returned.
            self.progress.update(1)


__all__ = [
    "CREATE_PERM",
    "CREATE_SHARED",
    "DEFAULT_EXTENT_SIZE_HINT",
    "PREALLOC_MODES",
    "CreateJob",
    "FileCreateOptions",
    "close_created",
    "open_and_lock",
    "parse_create_options",
    "shape_file",
]
