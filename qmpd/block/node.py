"""The block node: one vertex of the graph, and the I/O contract drivers fill.

Theory of operation.  A :class:`BlockNode` is what ``blockdev-add`` creates:
a driver instance with a name, options common to every driver, children by
role (``file``...) and parents.  Its public coroutines are the only way I/O
reaches a driver; they apply the rules QEMU's generic block layer applies
before calling into a driver (block/io.c), so that drivers stay small:

* a write of any kind to a read-only node fails with EPERM (qemu-io prints
  ``write failed: Permission denied``);
* a request outside ``[0, size]`` fails with EIO, as a BlockBackend's range
  check does;
* ``detect-zeroes`` turns a write of all-zero data into a zero write, which
  may unmap only when ``detect-zeroes=unmap`` and ``discard=unmap``;
* a zero write may unmap only if the node was opened with ``discard=unmap``
  (QEMU drops BDRV_REQ_MAY_UNMAP otherwise), and ``discard`` requests do
  nothing at all with ``discard=ignore``;
* ``cache.no-flush`` drops only the sync to disk, which protocol nodes
  make: a format node's flush still writes what it holds back to its file
  (QEMU's BDRV_O_NO_FLUSH skips flush_to_disk, never flush_to_os).

Drivers override the ``_``-prefixed hooks.  The zero-state rule: no hook
may ever report ``zero=True`` for bytes that may read as non-zero (see
:mod:`.extents`); every hook that changes content must leave later block
status and :meth:`known_zero` answers true.

Permissions follow QEMU's model: every edge into a node, a parent node's
child edge or a user (a BlockBackend of a device, of qemu-io or of a job,
or a job's own edge: :class:`NodeUser`), asks for permissions
(:class:`Perm`) and says which it lets others have.  A parent node derives
its child edges from what is asked of it (:meth:`BlockNode.child_perms`:
passed through by filters, QEMU's storage and COW defaults for formats).
Any change of edges is checked on the node it touches and on every node
below (:func:`refresh_perms`): each pair of parties must agree (the first
pair that does not gives QEMU's ``Permission conflict`` text), nothing may
write a read-only node, and the file driver's byte-range locks (QEMU's)
must not clash with another process's; only then is anything applied.  A
write or resize reaching a node must be covered by a permission some party
holds (:meth:`BlockNode.holds`).
"""

from __future__ import annotations

import enum
import errno
import logging
import os
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from ..errors import GenericError
from .extents import Extent, check_cover, merge_extents
from .status_snapshot import StatusSnapshot
from .zerostate import SCAN_LIMIT, UNKNOWN, KnownZero, MakeZeroResult, ZeroState

log = logging.getLogger("qmpd.block")


class Perm(enum.IntFlag):
    """QEMU's BlockPermission bits (the bit index is also the lock byte offset)."""

    CONSISTENT_READ = 0x1
    WRITE = 0x2
    WRITE_UNCHANGED = 0x4
    RESIZE = 0x8


PERM_ALL = 0xF
#: The names QEMU uses for the bits in lock errors and in x-debug-query-block-graph.
PERM_NAMES = {
    Perm.CONSISTENT_READ: "consistent read",
    Perm.WRITE: "write",
    Perm.WRITE_UNCHANGED: "write unchanged",
    Perm.RESIZE: "resize",
}


class BlockIOError(GenericError):
    """An I/O request failed; ``errno`` is what QEMU's driver would return.

    The description is ``os.strerror(errno)`` unless given, so a qemu-io
    emulation can print ``write failed: <desc>`` as qemu-io does.

    ``issued`` says whether the request may have reached the storage: a
    failed write may still have landed, in part or whole (an error after
    the bytes went out, a partial write), so whoever undoes work after a
    failure must assume it did unless the error came before anything was
    issued (``issued=False``: a request refused up front, or a fault
    blkdebug injects in its place).
    """

    def __init__(self, err: int, desc: str | None = None, *, issued: bool = True) -> None:
        super().__init__(desc if desc is not None else os.strerror(err))
        self.errno = err
        self.issued = issued


@dataclass(frozen=True, slots=True)
class CommonOptions:
    """Options every driver takes (BlockdevOptions' base members)."""

    read_only: bool = False
    auto_read_only: bool = False
    force_share: bool = False
    discard: str = "ignore"  # "ignore" | "unmap"
    detect_zeroes: str = "off"  # "off" | "on" | "unmap"
    cache_direct: bool = False
    cache_no_flush: bool = False
    active: bool = True


#: NodeUser.kind of every BlockBackend (devices', qemu-io's, jobs' own).
BACKEND_KIND = "block-backend"


@dataclass(frozen=True, slots=True)
class NodeUser:
    """Something outside the graph using a node: a BlockBackend (a device's,
    qemu-io's, a job's), or a job's own edge to a node it works on.

    ``perm`` is what it needs, ``shared`` what it lets others do meanwhile
    (both :class:`Perm` bit sets).  ``kind`` is :data:`BACKEND_KIND` or a
    job's ``<type> job``; ``role`` the edge's name (``root`` for a backend,
    ``source``, ``target``, ``main node`` for a job's).
    """

    name: str
    kind: str
    perm: int = 0
    shared: int = PERM_ALL
    role: str = "root"

    def description(self) -> str:
        """How QEMU's permission errors name this user."""
        if self.kind == BACKEND_KIND:
            return f"block device '{self.name}'" if self.name else "an unnamed block device"
        return f"{self.kind} '{self.name}'"


@dataclass(frozen=True, slots=True)
class Party:
    """One parent of a node as the permission check sees it: a node's
    child edge or a user, with what it needs and what it shares."""

    description: str
    role: str
    perm: int
    shared: int


class BlockNode:
    """Base class of every driver; see the module docstring for the contract."""

    #: The driver name as in BlockdevDriver (``file``, ``raw``...).
    driver: ClassVar[str] = ""
    #: Protocol drivers sit at the bottom (QEMU's ``protocol_name``).
    is_protocol: ClassVar[bool] = False
    #: Child roles QEMU opens before it names the node (a format driver's
    #: ``file``); it names the node before any other child.  The order of
    #: naming is the order query-named-block-nodes lists, newest first.
    named_after: ClassVar[tuple[str, ...]] = ()
    #: Answers about content from tables kept in memory (a format driver's
    #: metadata), which another process writing the image would falsify.
    caches_content: ClassVar[bool] = False

    def __init__(self, name: str, options: CommonOptions) -> None:
        self.name = name
        self.options = options
        #: May differ from options.read_only when auto-read-only fell back.
        self.read_only = options.read_only
        self.children: dict[str, BlockNode] = {}
        #: Parent edges (node, role) and users, oldest first: one list,
        #: because QEMU's permission errors name them in attach order.
        self._incoming: list[tuple[BlockNode, str] | NodeUser] = []
        #: Created by blockdev-add/--blockdev itself (may be deleted there).
        self.monitor_owned = False
        #: Named ``#blockNNN`` by the graph.
        self.auto_named = False
        #: The options that change what the node is (QEMU's "strong" options),
        #: as given; used for the ``json:{...}`` pseudo-filename.
        self.strong_options: dict[str, Any] = {}
        self.closed = False
        self._applied_perms: tuple[int, int] = (0, PERM_ALL)
        #: Requests that may have changed the content (write, zero write,
        #: discard, resize, copy in), counted as they start; see
        #: :meth:`change_count`.
        self.changes = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # ------------------------------------------------------------------ size

    @property
    def size(self) -> int:
        """The node's length in bytes: whole 512-byte sectors, rounded up
        from the driver's length, as QEMU keeps it (a 1000-byte file is a
        1024-byte node whose tail reads as zero)."""
        return -(-self._size() // 512) * 512

    def _size(self) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------ public I/O

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise BlockIOError(errno.EIO)

    def _check_writable(self, perm: int = Perm.WRITE | Perm.WRITE_UNCHANGED) -> None:
        # QEMU asserts that a request reaching a node is covered by a
        # permission some parent holds; qmpd refuses it instead.
        if self.read_only or not self.holds(perm):
            raise BlockIOError(errno.EPERM)

    async def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``.

        Raises BlockIOError: EIO outside the node, or the driver's errno.
        """
        self._check_range(offset, length)
        if length == 0:
            return b""
        return await self._read(offset, length)

    async def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``; with detect-zeroes, zero data becomes a zero write.

        Raises BlockIOError: EPERM on a read-only node, EIO outside the node,
        or the driver's errno.
        """
        self._check_writable()
        self._check_range(offset, len(data))
        if not data:
            return
        self.changes += 1
        if self.options.detect_zeroes != "off" and not any(data):
            unmap = self.options.detect_zeroes == "unmap" and self.options.discard == "unmap"
            await self._write_zeroes(offset, len(data), unmap)
            return
        await self._write(offset, data)

    async def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> str:
        """Make ``[offset, offset+length)`` read as zero.

        ``may_unmap`` lets the driver deallocate the range; it is honoured
        only when the node was opened with ``discard=unmap``.  Returns how
        the driver did it (``punch-hole``, ``zero-range``, ``written``,
        ``none``).  Raises BlockIOError as :meth:`write`.
        """
        self._check_writable()
        self._check_range(offset, length)
        if length == 0:
            return "none"
        self.changes += 1
        return await self._write_zeroes(offset, length, may_unmap and self.unmap_allowed)

    async def discard(self, offset: int, length: int) -> None:
        """Tell the driver the range's content is no longer needed.

        A no-op with ``discard=ignore``.  Afterwards the range may read as
        anything (for a file: zero).  Raises BlockIOError as :meth:`write`.
        """
        self._check_writable()
        self._check_range(offset, length)
        if length == 0 or not self.unmap_allowed:
            return
        self.changes += 1
        await self._discard(offset, length)

    async def copy_to(self, offset: int, length: int, target: BlockNode) -> bool:
        """Copy ``[offset, offset+length)`` to the same bytes of ``target``
        in one step below qmpd's event loop, if both nodes can.

        Possible when both resolve, byte for byte, to host files
        (:meth:`_host_file`, :meth:`_host_target`).  The kernel then
        copies (``copy_file_range``: in the page cache, or a reflink on a
        file system that shares extents); a target that must see the data
        (``detect-zeroes``) gets it read and written by a worker thread,
        which hands all-zero data back to the caller.

        Returns False when not done that way: not possible, all-zero data
        for a ``detect-zeroes`` target, or a copy that failed part way
        (the target range may then hold anything).  The caller then reads
        and writes, which applies every node's rules and reports an error
        as a read or a write error.  Range and permission checks as
        :meth:`write`.
        """
        target._check_writable()
        self._check_range(offset, length)
        target._check_range(offset, length)
        if length == 0:
            return True
        src = self._host_file(offset)
        dst = target._host_target(offset)
        if src is None or dst is None:
            return False
        target.changes += 1
        node, host_offset, inspect = dst
        return await node._copy_in(src[0], src[1], host_offset, length, inspect)

    async def write_behind(self, offset: int, length: int) -> bool:
        """Get the range's completed writes onto storage ahead of a flush
        the caller will make anyway (a mirror before ready), so that the
        storage works while the caller goes on.  A host file syncs
        (on storage with a volatile cache, as a virtual disk over a host
        file has, only a sync empties it, and its cost grows with what was
        written since the last one: paid here, beside the caller's work,
        it is not paid after it).  A node whose bytes are not in one host
        file byte for byte (a format driver) passes this on to its whole
        ``file`` child.

        Returns True when every write completed before the call is now
        durable.  Changes no data and raises nothing: a failed sync is
        reported by the node's next :meth:`flush` instead.
        """
        if length <= 0:
            return False
        host = self._host_file(offset)
        if host is not None:
            return await host[0]._sync_behind()
        if (child := self.children.get("file")) is not None:
            return await child.write_behind(0, child.size)
        return False

    def after_open(self) -> None:
        """Work of the open that may write: called by ``blockdev-add`` once
        the node and its subtree hold their permissions (and so the image
        locks), as QEMU's drivers open with their children's permissions
        taken.  Raises GenericError; the node is then removed again."""
        return None

    def debug_event(self, event: str) -> None:
        """A parent's request reached ``event`` (a BlkdebugEvent name) on its
        way to this node, as QEMU's BLKDBG_EVENT reports; only blkdebug acts."""
        return None

    async def flush(self) -> None:
        """Make completed writes durable; with ``cache.no-flush`` only hand
        them to the OS (a protocol node does nothing then).

        Raises BlockIOError with the driver's errno.
        """
        if self.options.cache_no_flush and self.is_protocol:
            return
        await self._flush()

    async def truncate(self, size: int) -> None:
        """Change the node's length; bytes added read as zero.

        Raises BlockIOError: EPERM on a read-only node, EINVAL for a negative
        size, ENOTSUP when the driver cannot resize.
        """
        self._check_writable(Perm.RESIZE)
        if size < 0:
            raise BlockIOError(errno.EINVAL)
        self.changes += 1
        await self._truncate(size)

    def change_count(self) -> int:
        """Content-changing requests started on this node and every node
        below it (file, backing...) so far.  While it stays the same, an
        earlier answer about what the node reads still holds as far as
        qmpd's own requests go; other processes' writes it does not count
        (:meth:`others_may_write`).  Reuse block status only through
        :meth:`status_snapshot`, which weighs both."""
        return self.changes + sum(child.change_count() for child in self.children.values())

    async def status_snapshot(self, offset: int, length: int) -> StatusSnapshot:
        """:meth:`block_status` of the range, kept to answer later questions
        about parts of it while that is safe (see :mod:`.status_snapshot`).

        Raises BlockIOError as :meth:`block_status`.
        """
        changes = self.change_count()
        extents = await self.block_status(offset, length)
        # A request of ours that changed the node during the walk may have
        # changed a part already walked: stale from the start then.
        return StatusSnapshot(self, extents, changes if self.change_count() == changes else None)

    async def block_status(self, offset: int, length: int) -> list[Extent]:
        """Extents tiling ``[offset, offset+length)`` exactly, neighbours merged.

        A driver that answers from its cache (``caches_content``) claims
        nothing zero while another process may write below it.

        Raises BlockIOError: EIO outside the node, or the driver's errno.
        """
        self._check_range(offset, length)
        if length == 0:
            return []
        extents = await self._block_status(offset, length)
        if self.caches_content and self.others_may_write():
            extents = [replace(ext, zero=False) for ext in extents]
        extents = merge_extents(extents)
        check_cover(extents, offset, offset + length)
        return extents

    async def known_zero(self) -> ZeroState:
        """The two zero facts of :mod:`.zerostate`; costs at most a
        block-status walk and a read of SCAN_LIMIT bytes.

        A driver that answers from what it cached (``caches_content``)
        does not answer ``open`` while another process may write below it
        (:meth:`others_may_write`): its cache may be stale by now.
        """
        if self.caches_content and self.others_may_write():
            return ZeroState(self._create_zero(), UNKNOWN)
        return ZeroState(self._create_zero(), await self._open_zero())

    async def make_zero(self) -> MakeZeroResult:
        """Make the whole node read as zero, as cheaply as the driver can.

        A no-op when the node is already known zero.  Otherwise only the
        extents not known zero are zeroed, with unmapping allowed (so it
        deallocates only with ``discard=unmap``; a preallocated node opened
        with ``discard=ignore`` stays allocated).  Raises BlockIOError as
        :meth:`write_zeroes`.
        """
        if (await self.known_zero()).open.value:
            return MakeZeroResult(already_zero=True)
        self._check_writable()
        requests = total = 0
        methods: set[str] = set()
        for ext in await self.block_status(0, self.size):
            if ext.zero:
                continue
            methods.add(await self.write_zeroes(ext.start, ext.length, may_unmap=True))
            requests += 1
            total += ext.length
        return MakeZeroResult(False, requests, total, tuple(sorted(methods)))

    @property
    def unmap_allowed(self) -> bool:
        """QEMU's BDRV_O_UNMAP: ``discard=unmap``."""
        return self.options.discard == "unmap"

    # ------------------------------------------------------------ driver hooks

    async def _read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    async def _write(self, offset: int, data: bytes) -> None:
        raise NotImplementedError

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        await self._write(offset, bytes(length))
        return "written"

    async def _discard(self, offset: int, length: int) -> None:
        return None

    def _host_file(self, offset: int) -> tuple[BlockNode, int] | None:
        """The host file node, and the offset in it, holding this node's
        bytes from ``offset`` on, byte for byte; None if there is none."""
        return None

    def _host_target(self, offset: int) -> tuple[BlockNode, int, bool] | None:
        """Like :meth:`_host_file`, for writes: where data written at
        ``offset`` lands unchanged, and whether some node on the way looks
        at it (``detect-zeroes``: zero data must take the normal path);
        None when there is no such place or the node cannot be written."""
        return None

    async def _sync_behind(self) -> bool:
        """A host file's half of :meth:`write_behind`."""
        return False

    async def _copy_in(
        self,
        src: BlockNode,
        src_offset: int,
        offset: int,
        length: int,
        inspect: bool,
    ) -> bool:
        """Copy from host node ``src`` into this host node (see :meth:`copy_to`)."""
        return False

    async def _flush(self) -> None:
        return None

    async def _truncate(self, size: int) -> None:
        raise BlockIOError(errno.ENOTSUP)

    async def _block_status(self, offset: int, length: int) -> list[Extent]:
        # Know-nothing default: all data, nothing claimed zero.
        return [Extent(offset, length, data=True, zero=False)]

    def _create_zero(self) -> KnownZero:
        return UNKNOWN

    async def _open_zero(self) -> KnownZero:
        return await probe_all_zero(self)

    # ------------------------------------------------------------ permissions
    #
    # Edges are only changed here; permissions are then checked and applied
    # by refresh_perms (or BlockGraph's attach/detach/replace, which undo
    # the change when it cannot be granted).

    @property
    def parents(self) -> list[tuple[BlockNode, str]]:
        """The nodes that have this one as a child, with the role, oldest first."""
        return [p for p in self._incoming if isinstance(p, tuple)]

    @property
    def users(self) -> list[NodeUser]:
        """The users attached to this node, oldest first."""
        return [p for p in self._incoming if isinstance(p, NodeUser)]

    def add_parent(self, parent: BlockNode, role: str) -> None:
        self._incoming.append((parent, role))

    def remove_parent(self, parent: BlockNode, role: str) -> None:
        self._incoming.remove((parent, role))

    def add_user(self, user: NodeUser) -> None:
        self._incoming.append(user)

    def remove_user(self, user: NodeUser) -> None:
        # By identity: two users may be equal (two anonymous backends).
        at = next(i for i, p in enumerate(self._incoming) if p is user)
        del self._incoming[at]

    def replace_user(self, old: NodeUser, new: NodeUser) -> None:
        """Put ``new`` where ``old`` was (a backend changing its
        permissions keeps its place, as QEMU's blk_set_perm)."""
        at = next(i for i, p in enumerate(self._incoming) if p is old)
        self._incoming[at] = new

    def parties(self) -> list[Party]:
        """Every parent edge and user with its permissions, newest first
        (QEMU's parent list).  With ``force-share`` every parent node shares
        all (QEMU's bdrv_child_perm); users share what they say."""
        out = []
        for entry in reversed(self._incoming):
            if isinstance(entry, NodeUser):
                out.append(Party(entry.description(), entry.role, entry.perm, entry.shared))
                continue
            parent, role = entry
            perm, shared = parent.child_perms(role)
            if self.options.force_share:
                shared = PERM_ALL
            out.append(Party(f"node '{parent.name}'", role, perm, shared))
        return out

    def cumulative_perms(self) -> tuple[int, int]:
        """(perm, shared) this node must hold: the union of what its parents
        and users need, and the intersection of what they share."""
        perm, shared = 0, PERM_ALL
        for party in self.parties():
            perm |= party.perm
            shared &= party.shared
        return perm, shared

    def child_perms(self, role: str) -> tuple[int, int]:
        """What this node asks of its child in ``role``, and shares.

        Default: QEMU's for a filtered child, everything passes through.
        Format drivers use :func:`storage_child_perms` and
        :func:`cow_child_perms`.
        """
        return self.cumulative_perms()

    def refresh_perms(self) -> None:
        """Check, then apply, the permissions of this node and every node
        below it (see :func:`refresh_perms`).  Raises GenericError."""
        refresh_perms([self])

    def check_perms(self) -> tuple[int, int]:
        """QEMU's checks of one node, in QEMU's order: every pair of
        parties agrees; no write to a read-only node; no write without
        resize on a size that is not a multiple of the request alignment;
        the driver's own check (another process's locks).

        Returns the cumulative (perm, shared).  Raises GenericError with
        QEMU's texts (``Permission conflict on node ...``).
        """
        parties = self.parties()
        # QEMU's bdrv_parent_perms_conflict: for each party, newest first,
        # everything any other party requires must be shared by it.
        for a in parties:
            for b in parties:
                if a is b:
                    continue
                clash = b.perm & ~a.shared & PERM_ALL
                if clash:
                    raise GenericError(
                        f"Permission conflict on node '{self.name}': permissions "
                        f"'{perm_names(clash)}' are both required by {b.description} "
                        f"(uses node '{self.name}' as '{b.role}' child) and unshared by "
                        f"{a.description} (uses node '{self.name}' as '{a.role}' child)."
                    )
        perm, shared = self.cumulative_perms()
        writes = perm & (Perm.WRITE | Perm.WRITE_UNCHANGED)
        if writes and self.read_only:
            raise GenericError("Block node is read-only")
        if writes and not perm & Perm.RESIZE and self.size % self.request_alignment():
            raise GenericError(
                "Cannot get 'write' permission without 'resize': "
                "Image size is not a multiple of request alignment"
            )
        if (perm, shared) != self._applied_perms:
            # Unchanged permissions are held already (locks included).
            self._check_driver_perms(perm, shared)
        return perm, shared

    def holds(self, perm: int) -> bool:
        """Whether some party holds one of the ``perm`` bits now.

        Requests start at users (BlockBackends, jobs); a node with no user
        anywhere above it is driven directly (a node built outside the
        daemon, in a test) and is not checked.
        """
        return bool(self._applied_perms[0] & perm) or not self._used_from_above()

    def _used_from_above(self) -> bool:
        return bool(self.users) or any(p._used_from_above() for p, _ in self.parents)

    def others_may_write(self) -> bool:
        """Whether something qmpd does not see (another process) may change
        what this node reads: true when a storage node below lets others
        write.  Such a node must answer from the medium, not from cache."""
        return any(child.others_may_write() for child in self.children.values())

    def request_alignment(self) -> int:
        return 1

    def _check_driver_perms(self, perm: int, shared: int) -> None:
        """The driver's check before ``_apply_perms`` (raises GenericError)."""
        return None

    def _apply_perms(self, perm: int, shared: int) -> None:
        """Make the driver hold ``perm`` and share ``shared`` (locks)."""
        return None

    # ------------------------------------------------------------ description

    def exact_filename(self) -> str | None:
        """A plain filename that reopens this node as it is, if there is one."""
        return None

    def full_options(self) -> dict[str, Any]:
        """The options that rebuild this subtree (for ``json:`` filenames)."""
        opts: dict[str, Any] = {"driver": self.driver, **self.strong_options}
        for role, child in self.children.items():
            opts[role] = child.full_options()
        return opts

    def filename(self) -> str:
        """QEMU's ``file``/``filename`` for the node."""
        exact = self.exact_filename()
        if exact is not None:
            return exact
        from .info import json_filename  # late: info imports node

        return json_filename(self.full_options())

    def actual_size(self) -> int | None:
        """Host bytes allocated (ImageInfo's actual-size), None if unknown."""
        return None

    def limits(self) -> dict[str, int]:
        """BlockLimitsInfo as QEMU 11.1 reports it for the driver."""
        return {
            "request-alignment": 1,
            "min-mem-alignment": 1,
            "opt-mem-alignment": 4096,
            "max-iov": 1024,
        }

    def format_specific(self) -> dict[str, Any] | None:
        """ImageInfoSpecific, or None."""
        return None

    def has_dirty_flag(self) -> bool:
        """Whether the driver reports ``dirty-flag`` (QEMU: has bdrv_get_info)."""
        return False

    async def aclose(self) -> None:
        """Close as QEMU's bdrv_close does: flush first (a format driver
        writes what it caches and marks its image clean; a read-only node
        has nothing to flush), then :meth:`close`.  Its parents must be
        closed already (:meth:`BlockGraph.aclose_all` keeps that order).

        Raises nothing: when the flush fails the image stays as a crash
        would leave it (a qcow2 image stays dirty), and that is logged.
        """
        if self.closed:
            return
        if not self.read_only:
            try:
                await self.flush()
            except BlockIOError as exc:
                log.warning("node %s: flush before close failed: %s", self.name, exc.desc)
            await self._before_close()
        self.close()

    async def _before_close(self) -> None:
        """A writable driver's own work at close, after the flush whatever
        its outcome, with the children still open (QEMU's bdrv_close calls
        the driver's close after bdrv_flush).  Raises nothing."""
        return None

    def close(self) -> None:
        """Release host resources; the node must not be used afterwards.

        Synchronous, for paths without an event loop and for undoing a
        failed open; a daemon closes with :meth:`aclose`.
        """
        self.closed = True


def perm_names(perm: int) -> str:
    """QEMU's list of permission names, e.g. ``write, resize``."""
    return ", ".join(name for bit, name in PERM_NAMES.items() if perm & bit)


def _below_first(roots: list[BlockNode]) -> list[BlockNode]:
    """``roots`` and every node below them, each after all of its parents
    that are in the set (QEMU's bdrv_topological_dfs)."""
    order: list[BlockNode] = []
    seen: set[int] = set()

    def visit(node: BlockNode) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        for child in node.children.values():
            visit(child)
        order.append(node)

    for root in roots:
        visit(root)
    return order[::-1]


def refresh_perms(roots: list[BlockNode]) -> None:
    """Check every node from ``roots`` down (:meth:`BlockNode.check_perms`),
    parents before children, and only then apply what changed.

    Raises GenericError from the first node that refuses, before anything
    is applied; a driver failing to apply (a lock that another process took
    between check and apply) raises too, and the caller undoes its change
    and refreshes again.
    """
    order = _below_first(roots)
    wanted = [(node, node.check_perms()) for node in order]
    for node, perms in wanted:
        if perms != node._applied_perms:
            node._apply_perms(*perms)
            node._applied_perms = perms


def storage_child_perms(
    perm: int, shared: int, *, writable: bool, data: bool = True
) -> tuple[int, int]:
    """QEMU's bdrv_default_perms_for_storage: what a format node with
    cumulative (``perm``, ``shared``) asks of the child holding its
    metadata (and its data, unless ``data`` is false).

    The child is always read consistently, written and resized when the
    format node is writable (metadata may change without any guest write),
    and nobody else may write or resize it: the format driver caches what
    the metadata says.
    """
    perm |= Perm.CONSISTENT_READ
    if writable:
        perm |= Perm.WRITE | Perm.RESIZE
    shared &= ~(Perm.WRITE | Perm.RESIZE)
    if data:
        if perm & Perm.WRITE_UNCHANGED:
            perm |= Perm.WRITE
        if perm & Perm.WRITE:
            perm |= Perm.RESIZE
    return perm & PERM_ALL, shared & PERM_ALL


def cow_child_perms(perm: int, shared: int) -> tuple[int, int]:
    """QEMU's bdrv_default_perms_for_cow: a backing child is only read
    (consistently if the parent reads so), and may change under us only
    if our own parents let others write."""
    keep = Perm.WRITE | Perm.RESIZE if shared & Perm.WRITE else 0
    return perm & Perm.CONSISTENT_READ, keep | Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED


async def probe_all_zero(node: BlockNode) -> KnownZero:
    """QEMU 10.1's ``bdrv_co_is_all_zeroes`` idea: block status over the
    whole node; if what is not known zero is small (at most SCAN_LIMIT
    bytes in all), read it and look."""
    size = node.size
    if size == 0:
        return KnownZero(True, "hole-probe")
    unknown = [e for e in await node.block_status(0, size) if not e.zero]
    if not unknown:
        return KnownZero(True, "hole-probe")
    if sum(e.length for e in unknown) > SCAN_LIMIT:
        return UNKNOWN
    for ext in unknown:
        if any(await node.read(ext.start, ext.length)):
            return UNKNOWN
    return KnownZero(True, "scan")


__all__ = [
    "BACKEND_KIND",
    "PERM_ALL",
    "PERM_NAMES",
    "BlockIOError",
    "BlockNode",
    "CommonOptions",
    "NodeUser",
    "Party",
    "Perm",
    "cow_child_perms",
    "perm_names",
    "probe_all_zero",
    "refresh_perms",
    "storage_child_perms",
]
