"""The mirror job: copy a node to a target while the guest keeps writing.

Theory of operation
-------------------
Set-up (:meth:`MirrorJob.setup`, synchronous, inside ``blockdev-mirror``):
a :class:`~qmpd.block.mirror_top.MirrorTopNode` filter goes above the
source and every guest disk on the source moves onto it; the job takes the
target with WRITE, sharing only WRITE_UNCHANGED (QEMU's mirror target
BlockBackend), so nobody else writes or deletes it; source, filter and
target get the op blocker ``block device is in use by block job: mirror``.

The copy is driven by two :class:`~qmpd.block.dirty.ChunkBitmap`\\ s at the
job's granularity.  *dirty*: source chunks the target lacks.  *zero*:
target chunks known to read as zero (QEMU 10.1's zero bitmap).  At start
(``sync`` top/full) the job decides once whether the target reads as zero:
``target-is-zero``, or the target's own cheap knowledge (``known_zero``:
holes everywhere, or QEMU 10.1's head scan).  Then, improving on QEMU's
table (qmp-facts §5.3):

* target opened with ``discard=unmap`` (which ``detect-zeroes=unmap``
  needs) -> holes punched where the target allocates anything, then every
  bit set: QEMU's pre-zero pass, but only where needed, and also when the
  target was known zero (QEMU then keeps a preallocated target allocated;
  punching keeps it as thin as the source);
* else target known zero (``target-is-zero``, holes everywhere, the head
  scan, qmpd's own zero-fill record) -> every zero bit set;
* otherwise the bits of the target's holes are set (QEMU would mark none
  and rewrite the whole image), so only target regions holding data get
  zeroes written.

Dirty is every chunk the source allocates (``present``), or the whole
image for ``sync=full`` when the target is not known zero everywhere.
``sync=none`` starts clean and has no zero bitmap.

Each iteration takes the next dirty run (at most ``buf-size``), clears it,
asks the source's block status and per extent: zero -> skipped when the
zero bits cover it, else a zero write with unmapping allowed (bits set);
data -> read and written in ``max(buf-size/16, 1 MiB)`` pieces (bits
cleared).  Guest writes meanwhile re-dirty what they touch, so a range
written during its own copy is copied again.  In ``write-blocking`` mode a
guest write whose range is clean and not being copied is written to the
target before the guest's request completes.

No dirty chunk left: flush the target, ``ready`` (BLOCK_JOB_READY); the
job keeps copying new writes until completed or cancelled.  Completion
(``job-complete``, or a soft cancel of a ready job) leaves the loop when
clean; ``prepare`` then pivots (completion only): the job lets go of the
target and every guest disk on the filter moves onto the target.  ``clean``
removes the filter (disks back on the source unless pivoted).

Errors follow ``on-source-error``/``on-target-error`` through
:meth:`BlockJob.error_action`: ``report`` fails the job with the errno's
text, ``ignore`` and ``stop`` put the range back in the dirty bitmap
(``stop`` also pauses the job; resuming retries).

``x-zero-stats`` counts, in bytes, what reached the target as data
(``copied``), what was made zero by zero writes or holes (``zeroed``, the
initial ``make_zero`` included) and what was not written because the
target already read as zero (``skipped``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..block.backend import BACKEND_KIND, check_conflicts
from ..block.dirty import ChunkBitmap
from ..block.mirror_top import MirrorTopNode
from ..block.node import PERM_ALL, BlockIOError, BlockNode, NodeUser, Perm
from ..errors import GenericError
from .blockjob import BlockdevOnError, BlockErrorAction, BlockJob
from .job import JobFailed
from .status import JobType

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..block.backend import DeviceSet
    from ..block.graph import BlockGraph

MiB = 1 << 20
#: QEMU's default buffer: 16 requests of 1 MiB in flight (DEFAULT_MIRROR_BUF_SIZE).
DEFAULT_BUF_SIZE = 16 * MiB
#: QEMU's MAX_IO_BYTES: the smallest upper bound of one copy request.
MAX_IO_BYTES = MiB
#: Pause before retrying a range whose error the policy ignored (seconds).
RETRY_DELAY = 0.01
#: The op blocker text QEMU shows for nodes of a running mirror.
BLOCKER = "block device is in use by block job: mirror"


#: QEMU's default granularity is the target's cluster size clamped to
#: [4 KiB, 64 KiB], and 64 KiB without one: qmpd's drivers have none.
DEFAULT_GRANULARITY = 64 * 1024


@dataclass(frozen=True, slots=True)
class MirrorOptions:
    """The checked arguments of blockdev-mirror that shape the copy."""

    sync: str  # "full" | "top" | "none"
    granularity: int
    buf_size: int
    on_source_error: BlockdevOnError = BlockdevOnError.REPORT
    on_target_error: BlockdevOnError = BlockdevOnError.REPORT
    copy_mode: str = "background"
    target_is_zero: bool = False


class ZeroStats:
    """The ``x-zero-stats`` counters (bytes)."""

    __slots__ = ("copied", "skipped", "zeroed")

    def __init__(self) -> None:
        self.copied = 0
        self.zeroed = 0
        self.skipped = 0

    def to_qmp(self) -> dict[str, int]:
        return {"copied": self.copied, "zeroed": self.zeroed, "skipped": self.skipped}


class MirrorJob(BlockJob):
    """A running blockdev-mirror; see the module docstring."""

    job_type = JobType.MIRROR

    def __init__(
        self,
        job_id: str,
        *,
        graph: BlockGraph,
        devices: DeviceSet,
        source: BlockNode,
        target: BlockNode,
        options: MirrorOptions,
        filter_name: str | None = None,
        auto_finalize: bool = True,
        auto_dismiss: bool = True,
    ) -> None:
        super().__init__(job_id, auto_finalize=auto_finalize, auto_dismiss=auto_dismiss)
        self.graph = graph
        self.devices = devices
        self.source = source
        self.target = target
        self.opts = options
        self.copy_mode = options.copy_mode
        self.filter_name = filter_name
        self.filter: MirrorTopNode | None = None
        self.stats = ZeroStats()
        self.dirty = ChunkBitmap(source.size, options.granularity)
        self.zero: ChunkBitmap | None = None
        self.op_max = max(options.buf_size // 16, MAX_IO_BYTES)
        self.should_complete = False
        self.actively_synced = False
        self._target_user: NodeUser | None = None
        self._blocked: list[BlockNode] = []
        self._initialized = False
        #: Byte range of the copy request in flight, if any.
        self._inflight: tuple[int, int] | None = None
        #: A write-blocking copy failed with policy report: the job fails.
        self._fatal: str | None = None
        self._pivoted = False
        self._replied = False
        #: The zero bitmap as it was when the run in flight started.
        self._zero_before: ChunkBitmap | None = None

    # -- set-up and tear-down (graph changes) --------------------------------

    def setup(self) -> None:
        """Insert the filter, take the target, block the nodes.

        Raises GenericError (a permission conflict on the target, with
        QEMU's text); the graph is unchanged then.
        """
        graph = self.graph
        name = self.filter_name if self.filter_name is not None else graph.auto_name()
        # The job's own anonymous BlockBackend on the target, as QEMU's.
        user = NodeUser("", BACKEND_KIND, int(Perm.WRITE), int(Perm.WRITE_UNCHANGED))
        check_conflicts(self.target, user)
        graph.attach(self.target, user)
        self._target_user = user
        flt = MirrorTopNode(name, self.source, self, implicit=self.filter_name is None)
        self.source.parents.append((flt, "backing"))
        graph.insert(flt)
        self.filter = flt
        try:
            for backend in self.devices.backends_on(self.source):
                backend.replace_node(graph, flt)
        except GenericError:
            self._remove_filter(self.source)
            raise
        for node in (self.source, flt, self.target):
            graph.block(node, BLOCKER)
            self._blocked.append(node)

    def _release_target(self) -> None:
        if self._target_user is not None:
            self.graph.detach(self.target, self._target_user)
            self._target_user = None

    def _remove_filter(self, new_root: BlockNode) -> None:
        flt = self.filter
        if flt is None:
            return
        for backend in self.devices.backends_on(flt):
            backend.replace_node(self.graph, new_root)
        self.graph.release(flt)
        self.filter = None

    def _teardown(self) -> None:
        for node in self._blocked:
            self.graph.unblock(node, BLOCKER)
        self._blocked.clear()
        self._release_target()
        try:
            self._remove_filter(self.target if self._pivoted else self.source)
        except GenericError:
            # Moving back to the source cannot conflict with what the disks
            # had before; if the target refuses, fall back to the source.
            self._remove_filter(self.source)

    def prepare(self) -> None:
        # Completion pivots; a soft cancel of a ready job only stops.
        if not self.should_complete or self.cancel_requested:
            return
        if self.graph.get(self.source.name) is not self.source:
            raise JobFailed(f"Node name '{self.source.name}' not found")
        self._release_target()
        flt = self.filter
        moved = []
        if flt is not None:
            try:
                for backend in self.devices.backends_on(flt):
                    backend.replace_node(self.graph, self.target)
                    moved.append(backend)
            except GenericError as err:
                for backend in moved:
                    backend.replace_node(self.graph, flt)
                raise JobFailed(err.desc) from None
        self._pivoted = True

    def clean(self) -> None:
        self._teardown()

    # -- job hooks -------------------------------------------------------------

    def complete(self) -> None:
        self.should_complete = True
        self.kick()

    def on_cancel(self, force: bool) -> bool:
        # QEMU's mirror_cancel: only a ready job can be cancelled softly.
        return force or not self.is_ready

    def change(self, options: Mapping[str, Any]) -> None:
        mode = options.get("copy-mode", self.copy_mode)
        if mode == self.copy_mode:
            return
        if mode != "write-blocking":
            raise GenericError(f"Change to copy mode '{mode}' is not implemented")
        self.copy_mode = mode

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["x-zero-stats"] = self.stats.to_qmp()
        return info

    def query_extra(self) -> dict[str, Any]:
        return {"actively-synced": self.actively_synced, "x-zero-stats": self.stats.to_qmp()}

    def graph_children(self) -> list[tuple[str, BlockNode, int, int]]:
        """The job's edges for x-debug-query-block-graph, in QEMU's list
        order (QEMU prepends: target, source, then the filter), with the
        permissions QEMU 11.1 shows."""
        out: list[tuple[str, BlockNode, int, int]] = []
        if self._target_user is not None:
            out.append(("target", self.target, 0, PERM_ALL))
        if self.filter is not None:
            unchanged = Perm.CONSISTENT_READ | Perm.WRITE | Perm.WRITE_UNCHANGED
            out.append(("source", self.source, 0, int(unchanged)))
            out.append(("main node", self.filter, int(Perm.CONSISTENT_READ), int(unchanged)))
        return out

    def dirty_bitmaps_info(self) -> list[dict[str, Any]]:
        return [
            {
                "count": self.dirty.count(),
                "granularity": self.opts.granularity,
                "recording": False,
                "busy": False,
                "persistent": False,
            }
        ]

    # -- guest writes through the filter -----------------------------------------

    async def guest_wrote(
        self, offset: int, length: int, data: bytes | None, *, unmap: bool
    ) -> None:
        if length <= 0:
            return
        if self._can_write_through(offset, length) and data != b"":
            try:
                await self._active_write(offset, length, data)
                return
            except BlockIOError as err:
                self.actively_synced = False
                action = self.error_action(self.opts.on_target_error, False, err.errno)
                if action is BlockErrorAction.REPORT and self._fatal is None:
                    self._fatal = err.desc
        self.dirty.mark(offset, length)
        self.progress.set_remaining(self.dirty.count())
        self.kick()

    def _can_write_through(self, offset: int, length: int) -> bool:
        if not self._initialized or self._pivoted or self.dirty.any_marked(offset, length):
            return False
        if self.deferred:
            # The copy loop is over but the filter is still there (pending,
            # or finalizing): QEMU keeps the source drained until the pivot;
            # writing through keeps the target in sync instead.
            return True
        if self.copy_mode != "write-blocking":
            return False
        inflight = self._inflight
        return inflight is None or inflight[1] <= offset or offset + length <= inflight[0]

    async def _active_write(self, offset: int, length: int, data: bytes | None) -> None:
        if data is None:
            await self._zero_target(offset, length)
        else:
            await self._write_target(offset, data)

    # -- the work ----------------------------------------------------------------

    def reply_sent(self) -> None:
        """The reply to blockdev-mirror is out (see :meth:`run`)."""
        self._replied = True
        self.kick()

    async def run(self) -> None:
        if self.source.size != self.target.size:
            # QEMU fails the job only after blockdev-mirror has answered:
            # wait (parked, so the command can reply) for reply_sent().
            await self._until_replied()
            raise JobFailed("Source and target image have different sizes")
        if self.opts.sync != "none":
            self.zero = ChunkBitmap(self.source.size, self.opts.granularity)
            await self._dirty_init()
        self._initialized = True
        self.progress.set_remaining(self.dirty.count())
        if self.dirty.count():
            # Copying takes QEMU's job past several yields before any
            # result, so the command's reply comes first: wait for it.
            await self._until_replied()
        cursor = 0
        while True:
            if self.is_cancelled:
                return
            if self._fatal is not None:
                raise JobFailed(self._fatal)
            run = self.dirty.next_run(cursor, self.opts.buf_size)
            if run is None and cursor:
                run = self.dirty.next_run(0, self.opts.buf_size)
            if run is not None:
                failed = not await self._copy(*run)
                cursor = run[0] + run[1]
                self.progress.set_remaining(self.dirty.count())
                if failed:
                    # Retrying an ignored error at once would spin.
                    await self.sleep(RETRY_DELAY)
                await self.throttle()
                continue
            cursor = 0
            if not self.is_ready or self.should_complete or self.cancel_requested:
                # In sync: make it durable before saying so (QEMU flushes
                # the target before ready and before completing).
                if not await self._flush_target():
                    await self.throttle()
                    continue
                if self.dirty.count():
                    continue
                self.actively_synced = self.copy_mode == "write-blocking"
                if not self.is_ready:
                    self.transition_to_ready()
                    continue
                return
            await self.yield_()

    async def _until_replied(self) -> None:
        while not self._replied and not self.is_cancelled:
            await self.yield_()

    async def _dirty_init(self) -> None:
        """Decide what the target reads as and what must be copied (see the
        module docstring).  Raises JobFailed when the target cannot be probed
        or zeroed."""
        src, tgt, zero = self.source, self.target, self.zero
        assert zero is not None
        length = src.size
        unmap = tgt.unmap_allowed
        try:
            if unmap:
                # Holes are cheap and keep the target as thin as the
                # source: punch whatever the target allocates, even when it
                # reads as zero already.  Block status cannot be asked (a
                # file system reports preallocated, unwritten extents as
                # holes), the allocation can.
                allocated = tgt.actual_size()
                if allocated is None or allocated > 0:
                    await tgt.write_zeroes(0, length, may_unmap=True)
                    self.stats.zeroed += length if allocated is None else min(allocated, length)
                zero.mark_all()
            elif self.opts.target_is_zero or (await tgt.known_zero()).open.value:
                zero.mark_all()
            else:
                for ext in await tgt.block_status(0, length):
                    if ext.zero:
                        zero.mark_whole(ext.start, ext.length)
        except BlockIOError as err:
            raise JobFailed(err.desc) from None
        if self.opts.sync == "full" and zero.count() != length:
            self.dirty.mark_all()
            return
        try:
            for ext in await src.block_status(0, length):
                if ext.present:
                    self.dirty.mark(ext.start, ext.length)
        except BlockIOError as err:
            raise JobFailed(err.desc) from None

    async def _copy(self, offset: int, length: int) -> bool:
        """Copy one dirty run; errors go through the policies.  False when
        a request failed (what is left of the run is dirty again)."""
        self.dirty.clear(offset, length)
        self._inflight = (offset, offset + length)
        end = offset + length
        pos = offset
        try:
            try:
                extents = await self.source.block_status(offset, length)
            except BlockIOError as err:
                return self._io_failed(True, err, offset, end)
            # What the target was known to read as before this run: a chunk
            # part data, part zero in the source loses its zero bit when the
            # data part is written, yet its zero part is still zero there
            # (only this job writes the target inside the run in flight).
            self._zero_before = None if self.zero is None else self.zero.copy()
            for ext in extents:
                pos = ext.start
                while pos < ext.end:
                    if self.is_cancelled:
                        self.dirty.mark(pos, end - pos)
                        return True
                    step = ext.end - pos if ext.zero else min(self.op_max, ext.end - pos)
                    if not await self._copy_piece(pos, step, ext.zero):
                        self.dirty.mark(pos, end - pos)
                        return False
                    self.progress.update(step)
                    pos += step
            return True
        finally:
            self._inflight = None
            self._zero_before = None

    async def _copy_piece(self, offset: int, length: int, zero: bool) -> bool:
        """One request; False when it failed and the run must stop."""
        if zero:
            try:
                await self._zero_target(offset, length)
            except BlockIOError as err:
                return self._io_failed(False, err, offset, offset + length)
            return True
        try:
            data = await self.source.read(offset, length)
        except BlockIOError as err:
            return self._io_failed(True, err, offset, offset + length)
        try:
            await self._write_target(offset, data)
        except BlockIOError as err:
            return self._io_failed(False, err, offset, offset + length)
        self.account(length)
        return True

    async def _zero_target(self, offset: int, length: int) -> None:
        """Make the range zero on the target, writing only where it is not
        known to be zero already."""
        zero = self.zero
        if zero is None:
            todo = [(offset, length)]
        else:
            todo = zero.unmarked(offset, length)
            before = self._zero_before
            if before is not None:
                todo = [p for s, n in todo for p in before.unmarked(s, n)]
        written = 0
        for start, count in todo:
            await self.target.write_zeroes(start, count, may_unmap=True)
            written += count
            if zero is not None:
                zero.mark_whole(start, count)
        self.stats.zeroed += written
        self.stats.skipped += length - written
        if written and not self.target.unmap_allowed:
            # Only zero writes that can unmap are free (QEMU's rule).
            self.account(written)

    async def _write_target(self, offset: int, data: bytes) -> None:
        if self.zero is not None:
            # Cleared first: while the write is in flight the range is not
            # known to read as zero.
            self.zero.clear(offset, len(data))
        await self.target.write(offset, data)
        if self.target.options.detect_zeroes != "off" and data == bytes(len(data)):
            self.stats.zeroed += len(data)
        else:
            self.stats.copied += len(data)

    def _io_failed(self, is_read: bool, err: BlockIOError, start: int, end: int) -> bool:
        """Apply the policy to a failed request; raises JobFailed on report."""
        policy = self.opts.on_source_error if is_read else self.opts.on_target_error
        action = self.error_action(policy, is_read, err.errno)
        if action is BlockErrorAction.REPORT:
            raise JobFailed(err.desc)
        self.dirty.mark(start, end - start)
        return False

    async def _flush_target(self) -> bool:
        try:
            await self.target.flush()
        except BlockIOError as err:
            action = self.error_action(self.opts.on_target_error, False, err.errno)
            if action is BlockErrorAction.REPORT:
                raise JobFailed(err.desc) from None
            return False
        return True


__all__ = [
    "BLOCKER",
    "DEFAULT_BUF_SIZE",
    "DEFAULT_GRANULARITY",
    "MirrorJob",
    "MirrorOptions",
    "ZeroStats",
]
