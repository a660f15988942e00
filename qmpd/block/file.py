"""The ``file`` driver: a host file, with real I/O, sparseness and QEMU's locks.

I/O is positional (``os.pread``/``os.pwrite``).  Measured on this machine
(ext4, page cache, trio 0.2x): a hop to a worker thread costs ~130 us,
while a 4 KiB pwrite takes ~5 us and a 64 KiB one ~25 us inline; at 1 MiB
inline takes ~170 us against ~310 us via a thread.  So requests up to
:data:`INLINE_MAX` run inline (they hold the event loop for less than a
thread hop would cost), larger ones, syncs and anything on a node with
``cache.direct=on`` run in ``trio.to_thread.run_sync``, where a slow disk
cannot stall other sessions.

``cache.direct=on`` opens the file with O_DIRECT, as QEMU does, and then
every read and write goes through :mod:`.aligned`: the alignments are
probed at open (and shown in the node's limits), unaligned requests are
padded and done as read-modify-write in aligned bounce buffers, as QEMU's
generic block layer does.  Zero writes keep their unaligned head and tail
as RMW writes of zeroes and fallocate only the aligned middle; discards
drop the unaligned head and tail (discarding is advisory), as QEMU's
bdrv_co_pdiscard does.  A file system that refuses O_DIRECT fails the open
with QEMU's "filesystem does not support O_DIRECT".

A copy between two host files (:meth:`BlockNode.copy_to`) is one
``copy_file_range`` in a worker thread: the data never enters Python, and
a file system that shares extents makes it a reflink.  ``write_behind``
is an fdatasync for a caller that will flush soon anyway.

A failed fdatasync is final for the open file (QEMU's file-posix calls it
an inconsistent page cache): the kernel reports lost writeback to one sync
only and may have dropped the dirty pages, so a later sync that succeeds
proves nothing about them.  Every sync after the first failure -- flush,
write-behind, a format driver's close -- fails with the first errno, and
nothing above (qcow2's dirty bit, a mirror's ready) is ever cleared on the
strength of one.  :meth:`FileNode.sync` is the one place that syncs.  With
``cache.direct=on`` the page cache is not involved and a failure is not
kept, as in QEMU.

Block status asks the file system with ``lseek(SEEK_DATA/SEEK_HOLE)``: a
hole reads as zero (a promise the kernel keeps), everything else is data.
Zero writes, when unmapping is allowed, punch holes
(``fallocate(PUNCH_HOLE|KEEP_SIZE)``); otherwise they keep the range
allocated, as QEMU's file-posix does: ``FALLOC_FL_ZERO_RANGE``, then punch
plus re-allocate, then plain written zeroes.

Locking (``locking=on``, or ``auto`` where OFD locks work) takes the same
byte-range locks as QEMU's file-posix, so QEMU processes and qmpd see each
other's permissions: for each permission bit *i* (:class:`~.node.Perm`)
the node holds, a shared lock on byte ``100 + i``; for each bit it does
*not* share, a shared lock on byte ``200 + i``.  Taking a permission is
refused while another open file holds byte ``200 + i``; refusing to share
it, while another holds ``100 + i``.  The locks are Linux open-file
description (OFD) locks, taken with F_OFD_SETLK, as QEMU does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import struct
from typing import Any

import trio

from ..errors import GenericError
from .aligned import (
    MAX_ALIGN,
    Alignment,
    RangeGate,
    align_down,
    align_up,
    probe_alignment,
    read_aligned,
    write_aligned,
)
from .extents import Extent
from .node import PERM_NAMES, BlockIOError, BlockNode, CommonOptions, Perm
from .zerofill import ZERO_FILLED, file_key
from .zerostate import KnownZero

#: Largest request done without a worker thread (see the module docstring).
INLINE_MAX = 64 * 1024

# QEMU's lock byte bases (block/file-posix.c).
LOCK_PERM_BASE = 100
LOCK_SHARED_BASE = 200

# fcntl constants (Linux); Python exposes the OFD ones since 3.9.
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_FLOCK = struct.Struct("hhqqi4x")  # struct flock on 64-bit Linux

# fallocate modes (linux/falloc.h).
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """Linux fallocate(2); raises OSError (EOPNOTSUPP where unsupported)."""
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _open_direct(filename: str, flags: int) -> int:
    """os.open, telling a file system that refuses O_DIRECT apart.

    Raises OSError, or GenericError with QEMU's text when the open fails
    with EINVAL only because of O_DIRECT (procfs, old tmpfs...).
    """
    try:
        return os.open(filename, flags)
    except OSError as exc:
        if exc.errno != errno.EINVAL or not flags & os.O_DIRECT:
            raise
        try:
            os.close(os.open(filename, flags & ~os.O_DIRECT))
        except OSError:
            raise exc from None
        raise GenericError(
            f"Could not open '{filename}': filesystem does not support O_DIRECT"
        ) from None


def _flock(fd: int, cmd: int, ltype: int, start: int) -> int:
    """One OFD lock call on a single byte; returns the l_type the kernel left."""
    arg = _FLOCK.pack(ltype, os.SEEK_SET, start, 1, 0)
    out = fcntl.fcntl(fd, cmd, arg)
    return int(_FLOCK.unpack(out)[0])


def ofd_locks_supported(fd: int) -> bool:
    """Whether F_OFD_GETLK works here (``locking=auto`` uses locks only then)."""
    try:
        _flock(fd, F_OFD_GETLK, fcntl.F_WRLCK, LOCK_PERM_BASE)
    except OSError:
        return False
    return True


def lock_bytes(perm: int, shared: int) -> set[int]:
    """The bytes QEMU's file-posix read-locks for (``perm``, ``shared``): one
    per permission held, one per permission not shared."""
    want: set[int] = set()
    for bit in Perm:
        if perm & bit:
            want.add(LOCK_PERM_BASE + bit.bit_length() - 1)
        if not shared & bit:
            want.add(LOCK_SHARED_BASE + bit.bit_length() - 1)
    return want


def held_elsewhere(fd: int, byte: int) -> bool:
    """Whether another open file holds a lock on ``byte``: a write-lock
    probe conflicts with any other open file's read lock, and our own OFD
    locks never conflict with ourselves."""
    try:
        return _flock(fd, F_OFD_GETLK, fcntl.F_WRLCK, byte) != fcntl.F_UNLCK
    except OSError:
        return False


def lock_conflict(fd: int, perm: int, shared: int) -> str | None:
    """QEMU's raw_check_lock_bytes: another open file's lock that refuses
    (``perm``, ``shared``), as QEMU's error text, or None.  Every
    permission is checked first, then every unshared one."""
    for bit in Perm:
        if perm & bit and held_elsewhere(fd, LOCK_SHARED_BASE + bit.bit_length() - 1):
            return f'Failed to get "{PERM_NAMES[bit]}" lock'
    for bit in Perm:
        if not shared & bit and held_elsewhere(fd, LOCK_PERM_BASE + bit.bit_length() - 1):
            return f'Failed to get shared "{PERM_NAMES[bit]}" lock'
    return None


class FileNode(BlockNode):
    """A host regular file (QEMU's ``file`` protocol driver)."""

    driver = "file"
    is_protocol = True

    def __init__(
        self,
        name: str,
        options: CommonOptions,
        *,
        filename: str,
        locking: str = "auto",
        aio: str = "threads",
        pr_manager: str | None = None,
    ) -> None:
        super().__init__(name, options)
        if not filename:
            raise GenericError("The 'file' block driver requires a file name")
        if pr_manager is not None:
            # qmpd has no persistent-reservation managers at all.
            raise GenericError(f"No persistent reservation manager with id '{pr_manager}'")
        if aio == "native" and not options.cache_direct:
            raise GenericError(
                "aio=native was specified, but it requires cache.direct=on, "
                "which was not specified."
            )
        self.path = filename
        self.aio = aio
        #: The O_DIRECT alignments; None without cache.direct.
        self.alignment: Alignment | None = None
        self._gate = RangeGate()
        #: The errno of the first failed fdatasync; every later sync fails
        #: with it (see the module docstring).
        self.sync_error: int | None = None
        self.fd = self._open(filename, options)
        try:
            st = os.fstat(self.fd)
            if stat.S_ISDIR(st.st_mode):
                raise GenericError(f"Could not open '{filename}': {os.strerror(errno.EISDIR)}")
            try:
                self._length = os.lseek(self.fd, 0, os.SEEK_END)
            except OSError as exc:  # e.g. a procfs file; QEMU's text
                raise GenericError(
                    f"Could not refresh total sector count: {exc.strerror}"
                ) from None
            if options.cache_direct:
                self.alignment = probe_alignment(self.fd)
                if self.alignment is None:
                    # QEMU adds the hint "Try cache.direct=off", which QMP does not show.
                    raise GenericError("Could not find working O_DIRECT alignment")
            self._key = file_key(st)
            if locking == "on":
                self.use_lock = True
            elif locking == "off":
                self.use_lock = False
            else:
                self.use_lock = ofd_locks_supported(self.fd)
        except BaseException:
            os.close(self.fd)
            raise
        self._locked: set[int] = set()

    def _open(self, filename: str, options: CommonOptions) -> int:
        extra = os.O_CLOEXEC | (os.O_DIRECT if options.cache_direct else 0)
        try:
            return _open_direct(filename, extra | (os.O_RDONLY if self.read_only else os.O_RDWR))
        except OSError as exc:
            retry = exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM)
            if self.read_only or not options.auto_read_only or not retry:
                raise GenericError(f"Could not open '{filename}': {exc.strerror}") from None
        # auto-read-only: fall back to read-only, as QEMU does.
        self.read_only = True
        try:
            return _open_direct(filename, extra | os.O_RDONLY)
        except OSError as exc:
            raise GenericError(f"Could not open '{filename}': {exc.strerror}") from None

    # ------------------------------------------------------------------ I/O

    def _size(self) -> int:
        return self._length

    def refresh_length(self) -> None:
        """Take the host file's length again after qmpd itself grew it
        outside a request (qcow2's repair at open, which has no event loop)."""
        self._length = os.lseek(self.fd, 0, os.SEEK_END)

    def _inline(self, length: int) -> bool:
        return length <= INLINE_MAX and not self.options.cache_direct

    def _span(self, offset: int, length: int, align: int) -> tuple[int, int]:
        return align_down(offset, align), align_up(offset + length, align)

    async def _read(self, offset: int, length: int) -> bytes:
        if self.alignment is not None:
            align = self.alignment.request
            try:
                return await trio.to_thread.run_sync(read_aligned, self.fd, offset, length, align)
            except OSError as exc:
                raise BlockIOError(exc.errno or errno.EIO) from None
        try:
            if self._inline(length):
                data = os.pread(self.fd, length, offset)
            else:
                data = await trio.to_thread.run_sync(os.pread, self.fd, length, offset)
        except OSError as exc:
            raise BlockIOError(exc.errno or errno.EIO) from None
        # Past the host file's end (it shrank under us) reads as zero.
        return data if len(data) == length else data + bytes(length - len(data))

    def _pwrite_all(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            done = os.pwrite(self.fd, view, offset)
            view = view[done:]
            offset += done

    async def _write(self, offset: int, data: bytes) -> None:
        # Data is coming: a zero-fill record of this file no longer holds.
        ZERO_FILLED.forget(self._key)
        if self.alignment is not None:
            await self._write_direct(offset, data, len(data))
            return
        try:
            if self._inline(len(data)):
                self._pwrite_all(data, offset)
            else:
                await trio.to_thread.run_sync(self._pwrite_all, data, offset)
        except OSError as exc:
            raise BlockIOError(exc.errno or errno.EIO) from None

    async def _write_direct(self, offset: int, data: bytes | None, length: int) -> None:
        """An O_DIRECT write of ``data`` (zeroes when None): RMW unless aligned."""
        assert self.alignment is not None
        align = self.alignment.request
        start, end = self._span(offset, length, align)
        rmw = start != offset or end != offset + length
        try:
            async with self._gate.hold(start, end, serialising=rmw):
                written = await trio.to_thread.run_sync(
                    write_aligned, self.fd, offset, data, length, align
                )
        except OSError as exc:
            raise BlockIOError(exc.errno or errno.EIO) from None
        # Padding past the end grows the file, and QEMU's node with it
        # (only reachable with the resize permission: see _apply_perms).
        self._length = max(self._length, written)

    async def _zero_direct(self, offset: int, length: int, unmap: bool) -> str:
        """QEMU's padded zero write: RMW head and tail, the aligned middle as zeroes."""
        assert self.alignment is not None
        align = self.alignment.request
        end = offset + length
        mid_start, mid_end = align_up(offset, align), align_down(end, align)
        if mid_start >= mid_end:  # all inside one or two partial blocks
            await self._write_direct(offset, None, length)
            return "written"
        if offset < mid_start:
            await self._write_direct(offset, None, mid_start - offset)
        if mid_end < end:
            await self._write_direct(mid_end, None, end - mid_end)
        try:
            async with self._gate.hold(mid_start, mid_end, serialising=False):
                return await trio.to_thread.run_sync(
                    self._zero_sync, mid_start, mid_end - mid_start, unmap
                )
        except OSError as exc:
            raise BlockIOError(exc.errno or errno.EIO) from None

    def _zero_sync(self, offset: int, length: int, unmap: bool) -> str:
        """The zero-write strategies in QEMU's order; returns the one that worked."""
        if unmap:
            try:
                fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
            else:
                return "punch-hole"
        try:
            fallocate(self.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        else:
            return "zero-range"
        try:
            # Punch, then allocate again: zero and still allocated.
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
            fallocate(self.fd, FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        else:
            return "punch-and-allocate"
        if self.alignment is not None:  # aligned here: see _zero_direct
            write_aligned(self.fd, offset, None, length, self.alignment.request)
            return "written"
        chunk = bytes(min(length, 1 << 20))
        end = offset + length
        while offset < end:
            self._pwrite_all(chunk[: end - offset], offset)
            offset += len(chunk)
        return "written"

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        if self.alignment is not None:
            return await self._zero_direct(offset, length, unmap)
        try:
            if self._inline(length):
                return self._zero_sync(offset, length, unmap)
            return await trio.to_thread.run_sync(self._zero_sync, offset, length, unmap)
        except OSError as exc:
            raise BlockIOError(exc.errno or errno.EIO) from None

    async def _discard(self, offset: int, length: int) -> None:
        if self.alignment is not None:
            # QEMU discards only the request-aligned part of the range.
            align = self.alignment.request
            offset, end = align_up(offset, align), align_down(offset + length, align)
            if offset >= end:
                return
            length = end - offset
        try:
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as exc:
            # Discard is advisory: a file system without holes just keeps the data.
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise BlockIOError(exc.errno or errno.EIO) from None

    def _host_file(self, offset: int) -> tuple[BlockNode, int] | None:
        # O_DIRECT files keep to the aligned paths (and have no dirty pages).
        return (self, offset) if self.alignment is None else None

    def _host_target(self, offset: int) -> tuple[BlockNode, int, bool] | None:
        if self.read_only or self.alignment is not None:
            return None
        return self, offset, self.options.detect_zeroes != "off"

    async def _copy_in(
        self,
        src: BlockNode,
        src_offset: int,
        offset: int,
        length: int,
        inspect: bool,
    ) -> bool:
        if not isinstance(src, FileNode):
            return False
        ZERO_FILLED.forget(self._key)
        return await trio.to_thread.run_sync(
            self._copy_sync, src.fd, src_offset, offset, length, inspect
        )

    def _copy_sync(
        self,
        src_fd: int,
        src_offset: int,
        offset: int,
        length: int,
        inspect: bool,
    ) -> bool:
        """The worker thread's copy (see BlockNode.copy_to).  Past the
        source's end it writes zeroes (it shrank under us; reads there see
        zeroes too).  False on any error: EXDEV, EOPNOTSUPP... or a real
        I/O error, which the caller's read and write meet and report."""
        try:
            if inspect:
                data = os.pread(src_fd, length, src_offset)
                data += bytes(length - len(data))
                if data == bytes(length):
                    return False
                self._pwrite_all(data, offset)
            else:
                done = 0
                while done < length:
                    n = os.copy_file_range(
                        src_fd, self.fd, length - done, src_offset + done, offset + done
                    )
                    if n == 0:
                        self._pwrite_all(bytes(length - done), offset + done)
                        break
                    done += n
        except OSError:
            return False
        return True

    def sync(self) -> None:
        """fdatasync the file, blocking (run it in a worker thread, or where
        there is no event loop).  After one failure every call fails the
        same way (see the module docstring).

        Raises BlockIOError with the errno of the first failed sync.
        """
        if self.sync_error is not None:
            raise BlockIOError(self.sync_error)
        try:
            os.fdatasync(self.fd)
        except OSError as exc:
            err = exc.errno or errno.EIO
            if self.alignment is None:  # O_DIRECT bypasses the page cache
                self.sync_error = err
            raise BlockIOError(err) from None

    async def _sync_behind(self) -> bool:
        if self.read_only:
            return False
        if self.options.cache_no_flush:
            return True  # as durable as this node's flush makes anything
        try:
            await trio.to_thread.run_sync(self.sync)
        except BlockIOError:
            return False  # kept: every later flush reports it
        return True

    async def _flush(self) -> None:
        await trio.to_thread.run_sync(self.sync)

    async def _truncate(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
        except OSError as exc:
            raise BlockIOError(exc.errno or errno.EIO) from None
        self._length = size

    async def _block_status(self, offset: int, length: int) -> list[Extent]:
        end = offset + length
        out: list[Extent] = []
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    # Cannot tell: say data, which is never wrong.
                    out.append(Extent(pos, end - pos, data=True, zero=False, offset=pos))
                    break
                data = end  # no data from pos to EOF
            if data > pos:
                stop = min(data, end)
                out.append(Extent(pos, stop - pos, data=False, zero=True, offset=pos))
                pos = stop
                continue
            try:
                hole = os.lseek(self.fd, pos, os.SEEK_HOLE)
            except OSError:
                hole = end
            stop = min(max(hole, pos + 1), end)
            out.append(Extent(pos, stop - pos, data=True, zero=False, offset=pos))
            pos = stop
        return out

    def _create_zero(self) -> KnownZero:
        # QEMU's has_zero_init: a new regular file is all holes.
        return KnownZero(True, "driver")

    async def _open_zero(self) -> KnownZero:
        # A file qmpd zero-filled itself (blockdev-create, even fully
        # preallocated) is known zero without a probe; see .zerofill.
        if ZERO_FILLED.holds(self.fd):
            return KnownZero(True, "record")
        return await super()._open_zero()

    # ------------------------------------------------------------ locking

    def request_alignment(self) -> int:
        return self.alignment.request if self.alignment is not None else 1

    def others_may_write(self) -> bool:
        # Without locks nothing keeps other processes out; with them, only
        # what every party here refuses to share is refused to them.
        return not self.use_lock or bool(self._applied_perms[1] & Perm.WRITE)

    def _check_driver_perms(self, perm: int, shared: int) -> None:
        # QEMU's raw_check_lock_bytes: every permission first, then every
        # unshared one.  Our own open file's locks never count.
        if not self.use_lock:
            return
        conflict = lock_conflict(self.fd, perm, shared)
        if conflict is not None:
            raise GenericError(conflict)

    def _apply_perms(self, perm: int, shared: int) -> None:
        if not self.use_lock:
            return
        want = lock_bytes(perm, shared)
        try:
            for byte in sorted(want - self._locked):
                _flock(self.fd, F_OFD_SETLK, fcntl.F_RDLCK, byte)
                self._locked.add(byte)
            for byte in sorted(self._locked - want):
                _flock(self.fd, F_OFD_SETLK, fcntl.F_UNLCK, byte)
                self._locked.discard(byte)
        except OSError as exc:
            raise GenericError(f"Failed to lock byte {byte}: {exc.strerror}") from None
        # Another process may have taken a conflicting lock since the check.
        self._check_driver_perms(perm, shared)

    def locked_bytes(self) -> frozenset[int]:
        """The lock bytes this node holds now (for tests and debugging)."""
        return frozenset(self._locked)

    # ------------------------------------------------------------ description

    def exact_filename(self) -> str | None:
        return self.path

    def full_options(self) -> dict[str, Any]:
        return {"driver": self.driver, "filename": self.path}

    def actual_size(self) -> int | None:
        # What the file takes on disk: never evidence that it reads as zero
        # (some file systems report no blocks for data); only SEEK_DATA/
        # SEEK_HOLE or a read prove that.
        try:
            return os.fstat(self.fd).st_blocks * 512
        except OSError:
            return None

    def limits(self) -> dict[str, int]:
        limits = super().limits()
        if self.alignment is not None:
            # Observed on QEMU 11.1 (ext4 and tmpfs): the probed alignments,
            # and an optimal memory alignment of at least a page.
            limits["request-alignment"] = self.alignment.request
            limits["min-mem-alignment"] = self.alignment.memory
            limits["opt-mem-alignment"] = max(self.alignment.memory, MAX_ALIGN)
        return limits

    def format_specific(self) -> dict[str, Any] | None:
        # QEMU 11.1 reports an empty "file" branch (extent-size-hint only on XFS).
        return {"type": "file", "data": {}}

    def has_dirty_flag(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)  # also drops every OFD lock of this open file
            self._locked.clear()
        super().close()


__all__ = [
    "FALLOC_FL_KEEP_SIZE",
    "FALLOC_FL_PUNCH_HOLE",
    "FALLOC_FL_ZERO_RANGE",
    "INLINE_MAX",
    "LOCK_PERM_BASE",
    "LOCK_SHARED_BASE",
    "FileNode",
    "fallocate",
    "ofd_locks_supported",
]
