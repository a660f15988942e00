"""The qcow2 driver's view of its ``file`` child: bytes at offsets.

Two paths.  The async one goes through the child node like any parent's
I/O, and grows the file first when a write reaches past its end (a block
node refuses writes outside its size).  The synchronous one serves the few
places where the block layer gives qmpd no event loop to wait in: opening
a node (``blockdev-add`` builds nodes synchronously) and closing one.  It
reaches the host file through ``raw`` windows and filters (``blkdebug``)
with positional I/O, which never blocks the event loop for longer than a
page-cache copy; any other child is refused at open with a clear error.
The synchronous path passes blkdebug by without its rules: faults are
injected into the requests of an open node, and a daemon closes a node
through the async path first (``BlockNode.aclose``), so that the
synchronous close never succeeds where a flush with the rules failed.

Every async request may name the blkdebug event (BlkdebugEvent) QEMU's
qcow2 driver raises on its file child just before the same request, so
that ``inject-error`` rules written for QEMU fail the same writes here.
"""

from __future__ import annotations

import mmap
import os

from ...errors import GenericError
from ..file import FileNode
from ..node import BlockIOError, BlockNode
from ..raw import RawNode

#: Most bytes :meth:`Storage.ensure_size` adds beyond what was asked.
MAX_GROWTH = 8 * 1024 * 1024
_GROWTH_ALIGN = 64 * 1024


class Storage:
    """Async byte access to the image file (the node's ``file`` child)."""

    def __init__(self, node: BlockNode) -> None:
        self.node = node
        #: The last flush of the file failed: what was written since the
        #: last one that succeeded is not known to be durable, and nothing
        #: may be built on it (a close must not mark the image clean) until
        #: a flush succeeds again.  A host file whose sync failed never
        #: succeeds again (FileNode.sync); an injected failure may.
        self.flush_failed = False

    @property
    def size(self) -> int:
        return self.node.size

    def event(self, name: str) -> None:
        """Report blkdebug event ``name`` to the file child."""
        self.node.debug_event(name)

    async def read(self, offset: int, length: int, event: str | None = None) -> bytes:
        """Read; bytes past the end of the file read as zero (a qcow2 image
        may reference a cluster whose tail was never written)."""
        if event is not None:
            self.node.debug_event(event)
        end = min(offset + length, self.node.size)
        data = await self.node.read(offset, end - offset) if end > offset else b""
        return data + bytes(length - len(data))

    async def write(
        self, offset: int, data: bytes | bytearray | memoryview, event: str | None = None
    ) -> None:
        if event is not None:
            self.node.debug_event(event)
        end = offset + len(data)
        if end > self.node.size:
            await self.node.truncate(end)
        await self.node.write(offset, bytes(data))

    async def ensure_size(self, size: int) -> None:
        """Make the file reach at least ``size`` bytes (newly allocated
        clusters).  It grows a step further, 1/8 of ``size`` up to
        :data:`MAX_GROWTH`: a resize changes the file's inode through the
        file system's journal, and waits for a sync in progress to end
        (~0.3 ms each on ext4 beside a mirror's syncs), so a run of
        allocations should not pay one each.  The step is a hole: nothing
        is allocated below, and the clusters in it are free for qcow2 (their
        refcount is 0) like any past the end."""
        if size > self.node.size:
            step = min(size // 8, MAX_GROWTH)
            await self.node.truncate(-(-(size + step) // _GROWTH_ALIGN) * _GROWTH_ALIGN)

    async def flush(self) -> None:
        """Make the file's writes durable.  Raises BlockIOError, and
        remembers the failure in :attr:`flush_failed`."""
        try:
            await self.node.flush()
        except BlockIOError:
            self.flush_failed = True
            raise
        self.flush_failed = False


def _host_file(node: BlockNode) -> tuple[FileNode, int]:
    base = 0
    while True:
        if isinstance(node, RawNode):
            base += node.offset
            node = node.file
        elif getattr(type(node), "is_filter", False) and len(node.children) == 1:
            (node,) = node.children.values()
        else:
            break
    if not isinstance(node, FileNode):
        raise GenericError(
            "qcow2 in qmpd needs a 'file' node (or 'raw' or 'blkdebug' over one) below it, "
            f"not '{node.driver}'"
        )
    return node, base


def _growable(node: BlockNode) -> bool:
    """Whether ``node``'s end follows its host file's (no fixed-size window)."""
    while isinstance(node, RawNode) or getattr(type(node), "is_filter", False):
        if isinstance(node, RawNode):
            if node.fixed_size is not None:
                return False
            node = node.file
        else:
            (node,) = node.children.values()
    return True


def check_sync_capable(node: BlockNode) -> None:
    """Raise GenericError unless :func:`pread_now` can serve ``node``."""
    _host_file(node)


_ALIGN = 4096  # enough for O_DIRECT on the block devices and file systems seen


def _pread_host(host: FileNode, offset: int, length: int) -> bytes:
    if not host.options.cache_direct:
        return os.pread(host.fd, length, offset)
    # O_DIRECT: aligned offset, length and memory (an mmap is page-aligned).
    start = offset // _ALIGN * _ALIGN
    end = -(-(offset + length) // _ALIGN) * _ALIGN
    with mmap.mmap(-1, end - start) as buf:
        done = os.preadv(host.fd, [buf], start)
        return bytes(buf[offset - start : min(done, offset - start + length)])


def _pwrite_host(host: FileNode, offset: int, data: bytes) -> None:
    if not host.options.cache_direct:
        view = memoryview(data)
        while view:
            done = os.pwrite(host.fd, view, offset)
            view, offset = view[done:], offset + done
        return
    start = offset // _ALIGN * _ALIGN
    end = -(-(offset + len(data)) // _ALIGN) * _ALIGN
    with mmap.mmap(-1, end - start) as buf:
        os.preadv(host.fd, [buf], start)
        buf[offset - start : offset - start + len(data)] = data
        os.pwritev(host.fd, [buf], start)


def pread_now(node: BlockNode, offset: int, length: int) -> bytes:
    """Read without an event loop; past the end reads as zero.

    Raises GenericError when the child is not a host file.
    """
    host, base = _host_file(node)
    end = min(offset + length, node.size)
    data = b""
    if end > offset:
        try:
            data = _pread_host(host, base + offset, end - offset)
        except OSError as exc:
            raise GenericError(f"Could not read qcow2 header: {exc.strerror}") from None
    return data + bytes(length - len(data))


def pwrite_now(node: BlockNode, offset: int, data: bytes) -> None:
    """Write without an event loop, growing the file when the write reaches
    past its end.  Raises GenericError (the OS error's text) when the write
    fails or the file cannot grow here."""
    host, base = _host_file(node)
    end = offset + len(data)
    if end > node.size and not _growable(node):
        raise GenericError("qcow2: the image cannot grow inside a fixed-size window")
    try:
        _pwrite_host(host, base + offset, data)
    except OSError as exc:
        raise GenericError(exc.strerror or "I/O error") from None
    if end > node.size:
        host.refresh_length()


def sync_now(node: BlockNode) -> None:
    """Sync the host file without an event loop (nothing with
    cache.no-flush), through FileNode.sync: after one failed sync none may
    succeed.  Raises GenericError."""
    host, _ = _host_file(node)
    if host.options.cache_no_flush:
        return
    try:
        host.sync()
    except BlockIOError as exc:
        raise GenericError(exc.desc) from None


def pwrite_and_sync_now(node: BlockNode, offset: int, data: bytes, *, sync_first: bool) -> bool:
    """Write within the file's current size without an event loop; with
    ``sync_first`` make earlier writes durable first.  Returns False (and
    writes nothing) when that is not possible here."""
    try:
        host, base = _host_file(node)
    except GenericError:
        return False
    if host.closed or offset + len(data) > node.size:
        return False
    try:
        # host.sync, not fdatasync: after one failed sync none may succeed.
        if sync_first and not host.options.cache_no_flush:
            host.sync()
        _pwrite_host(host, base + offset, data)
        if not host.options.cache_no_flush:
            host.sync()
    except (OSError, BlockIOError):
        return False
    return True


__all__ = [
    "MAX_GROWTH",
    "Storage",
    "check_sync_capable",
    "pread_now",
    "pwrite_and_sync_now",
    "pwrite_now",
    "sync_now",
]
