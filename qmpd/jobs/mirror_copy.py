"""The copy engine of a mirror: dirty and zero bitmaps, operations in
flight, guest writes, errors.

Theory of operation
-------------------
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

Dirty is every chunk the source allocates (``present``; with
``sync=top`` only what its own layer allocates, ``depth`` 0), or the whole
image for ``sync=full`` when the target is not known zero everywhere.  A
target with a backing file gets no pre-zero pass under ``sync=top``: its
unallocated clusters read that file, which the copy relies on.
``sync=none`` starts clean and has no zero bitmap.

Copying is done by *operations* (:class:`_Op`), several at once, as
QEMU does.  The job's main task (:meth:`MirrorCopy._copy_loop`) takes the
next dirty *window* (a run of whole chunks, at most ``buf-size`` bytes),
clears it in the dirty bitmap, records it as in flight, asks the source's
block status for it (cut from the walk made at the start while nothing
of qmpd's wrote the source since, else a fresh query; see
:mod:`qmpd.block.status_snapshot`) and starts one operation per piece in
a nursery:
a zero extent (skipped when the zero bits cover it, else a zero write with
unmapping allowed, bits set) or at most ``max(buf-size/16, 1 MiB)`` bytes
of data, plus a tail shorter than a chunk that would be left over (bits
cleared; copied by the kernel when source and target are
host files, see :meth:`BlockNode.copy_to`, else read and written).  Then
it goes on with the next window, so pieces of different dirty runs are in
flight together.  Before ready, every 16 MiB of data pieces starts a
sync of the target (:meth:`MirrorCopy._write_behind`), so that the flush
before ready (which waits for it) finds little left to write.  At most 16
operations (QEMU's MAX_IN_FLIGHT), and no more than ``buf-size`` bytes of
data pieces (give or take those tails), do I/O at once (a capacity
limiter; at least one); the main task starts no new window while that many
are started.  With a speed limit it waits for each window's operations,
then for the limiter.

Why this stays correct with several operations in flight:

* Windows are chunk-aligned and ranges in flight disjoint: a dirty run
  that overlaps one in flight (a guest re-dirtied it) waits until that one
  is over, so two copies of one range never race on the target (an older
  read landing last would leave stale data behind a clean bit).
* The dirty bits are cleared before the block status is asked, and the
  window is in flight from then on: a guest write landing while the
  answer is on its way re-dirties the range, so a stale "zero" is copied
  again later, never lost.
* Guest writes meanwhile re-dirty what they touch, so a range written
  during its own copy is copied again, after the copy in flight ends.
  They do so however they end, also failed or cancelled part way (the
  source may have changed all the same), unless written through.
* Another process may write the source too (the job shares writing, as
  QEMU's does), so a zero claim cut from the first walk may be stale: before
  ready the job asks the block status of the whole source again
  (:meth:`MirrorCopy._confirm_status`) and copies where such a claim no
  longer holds.  Only claims the copy still relies on count: a window
  asked afresh (the walk stale after a guest write) settles what was
  served there, so a guest's write, copied already, is not copied (and
  its chunk's holes zeroed) a second time.  What another process writes
  ahead of the copy is copied, as by QEMU's, which asks per chunk; what
  it writes after that is not (nothing tells the job, nor QEMU's).
* Only an operation writes the target inside its own bytes (write-through
  is refused there), so the snapshot of the zero bits taken when its
  window was cleared still tells what those bytes read as: a chunk part
  data, part zero in the source loses its zero bit when the data piece is
  written, yet its zero part is still zero there.
* In ``write-blocking`` mode a guest write whose range is clean and not
  in flight is written to the target before the guest's request
  completes; it is itself recorded as in flight (``active``) meanwhile, so
  no copy and no other write-through of that range overlaps it.
* The engine's rule: a yield point (pause, cancel, rate-limit sleep,
  waiting for work) is reached only with none of the job's operations in
  flight.  The main task *drains* first, waiting on the operations with
  plain trio primitives (the job stays busy meanwhile, so a pause waits
  for the drain: no job I/O follows the ``paused`` event).
* An operation never raises on I/O errors: it re-dirties what it did not
  copy and records the outcome; the main task acts on it once the others
  have drained (``report`` fails the job, ``ignore``/``stop`` retry after
  a short sleep, ``stop`` having paused the job).  A forced cancel makes
  operations stop after their current request; the main task drains and
  returns.

No dirty chunk and nothing in flight: confirm the first walk, flush the
target (after any write-behind), ``ready``
(BLOCK_JOB_READY); the job keeps copying new writes until completed or
cancelled (completion and pivot: :mod:`qmpd.jobs.mirror`).

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

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import trio

from ..block.dirty import ChunkBitmap
from ..block.drain import RequestGate
from ..block.extents import Extent
from ..block.node import BlockIOError, BlockNode
from ..block.status_snapshot import StatusSnapshot
from .blockjob import BlockdevOnError, BlockErrorAction, BlockJob
from .job import JobFailed

T = TypeVar("T")
MiB = 1 << 20
#: QEMU's MAX_IO_BYTES: the smallest upper bound of one copy request.
MAX_IO_BYTES = MiB
#: QEMU's MAX_IN_FLIGHT: copy operations running at once.
MAX_IN_FLIGHT = 16
#: Before ready, sync the target in the background after this many bytes of
#: data pieces (see :meth:`MirrorCopy._write_behind`).
WRITE_BEHIND_BYTES = 16 * MiB
#: Most extents kept in the job's map of the source's block status.
STATUS_MAP_MAX = 1 << 16
#: Pause before retrying a range whose error the policy ignored (seconds).
RETRY_DELAY = 0.01


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


class _Op:
    """A byte range ``[start, end)`` being written to the target: a copy
    operation of the job, or (``active``) a guest write written through."""

    __slots__ = ("active", "done", "end", "start", "zero", "zero_before")

    def __init__(
        self,
        start: int,
        end: int,
        *,
        active: bool,
        zero: bool = False,
        zero_before: ChunkBitmap | None = None,
    ) -> None:
        self.start = start
        self.end = end
        self.active = active
        #: A copy operation of a zero extent of the source.
        self.zero = zero
        #: Bytes finished (counted in the job's progress).
        self.done = 0
        #: The zero bitmap as it was when the operation's window was taken.
        self.zero_before = zero_before

    @property
    def length(self) -> int:
        return self.end - self.start

    def overlaps(self, start: int, end: int) -> bool:
        return self.start < end and start < self.end


class MirrorCopy(BlockJob):
    """A block job that keeps ``target`` a copy of ``source``; see the
    module docstring.  :class:`~qmpd.jobs.mirror.MirrorJob` adds the graph
    (filter, pivot) and the job hooks."""

    def __init__(
        self,
        job_id: str,
        *,
        source: BlockNode,
        target: BlockNode,
        options: MirrorOptions,
        auto_finalize: bool = True,
        auto_dismiss: bool = True,
    ) -> None:
        super().__init__(job_id, auto_finalize=auto_finalize, auto_dismiss=auto_dismiss)
        self.source = source
        self.target = target
        self.opts = options
        self.copy_mode = options.copy_mode
        self.stats = ZeroStats()
        self.dirty = ChunkBitmap(source.size, options.granularity)
        self.zero: ChunkBitmap | None = None
        self.op_max = max(options.buf_size // 16, MAX_IO_BYTES)
        #: Operations doing I/O at once: QEMU's MAX_IN_FLIGHT, and no more
        #: than ``buf-size`` bytes of data pieces (but at least one).
        self._slots = trio.CapacityLimiter(
            max(1, min(MAX_IN_FLIGHT, options.buf_size // self.op_max))
        )
        self.should_complete = False
        self.actively_synced = False
        self._initialized = False
        #: Ranges in flight: the job's operations and write-throughs.
        self._ops: list[_Op] = []
        #: Set (and replaced) whenever an entry of ``_ops`` ends.
        self._op_done = trio.Event()
        #: An operation's error was ignored or stopped the job: retry the
        #: range after RETRY_DELAY (at once would spin).
        self._failed = False
        #: A copy or write-through failed with policy report: the job fails
        #: (once nothing is in flight).
        self._fatal: str | None = None
        #: The guest's disks moved to the target: no more write-through.
        self._pivoted = False
        #: The guest's requests through the filter (see :meth:`_leave_in_sync`).
        self.guests = RequestGate()
        #: Waiting in pending for job-finalize: guest requests pass and are
        #: written through (see :meth:`wait_for_finalize`).
        self._through_to_finalize = False
        self._replied = False
        #: The source's block status from the start of the copy, reused for
        #: windows (one walk instead of one query per window) until it is
        #: confirmed before ready (see :meth:`_confirm_status`).
        self._status_map: StatusSnapshot | None = None
        #: Bytes of data pieces started since the last write-behind started.
        self._unsynced = 0
        #: Set when the running write-behind (if any) is over.
        self._writeback: trio.Event | None = None

    # -- guest writes through the filter -----------------------------------------

    async def guest_write(
        self,
        offset: int,
        length: int,
        data: bytes | None,
        source_io: Callable[[], Awaitable[T]],
        *,
        unmap: bool,
    ) -> T:
        if length <= 0:
            return await source_io()
        if self._through_to_finalize:
            return await self._write_to_finalize(offset, length, data, source_io)
        if not self._may_write_through():
            try:
                return await source_io()
            finally:
                # Done, failed part way or cancelled part way: the source
                # may have changed whatever the request reports (QEMU's
                # background mode marks the range before it looks at the
                # result), so the copy takes the range again.
                self._redirty(offset, length)
        async with self._holding(offset, offset + length):
            through = mirrored = False
            try:
                result = await source_io()
                if (
                    data == b""
                    or not self._may_write_through()
                    or self.dirty.any_marked(offset, length)
                ):
                    # A discard (what it reads as is the driver's business), a
                    # mode change meanwhile, or a range still to be copied: the
                    # copy takes it from the source.
                    return result
                through = True
                try:
                    await self._active_write(offset, length, data)
                except BlockIOError as err:
                    action = self.error_action(self.opts.on_target_error, False, err.errno)
                    if action is BlockErrorAction.REPORT and self._fatal is None:
                        self._fatal = err.desc
                    return result
                mirrored = True
                return result
            finally:
                # The one rule of this path: unless the target got what the
                # source got, the range is dirty again, whatever stopped it
                # (a failed or cancelled source request, which may have
                # changed part of the source, a failed or cancelled target
                # write, or the copy's turn).
                if not mirrored:
                    if through:
                        self.actively_synced = False
                    self._redirty(offset, length)

    @asynccontextmanager
    async def _holding(self, start: int, end: int) -> AsyncIterator[None]:
        """QEMU's active_write_prepare: wait until nothing of the job's (a
        copy, another write-through) is in flight on the range, then hold
        it for a guest's source write and target write together, so that
        overlapping guest writes reach both in the same order and no copy
        reads the range half written."""
        while self._conflicts(start, end):
            await self._op_done.wait()
        op = _Op(start, end, active=True)
        self._ops.append(op)
        try:
            yield
        finally:
            self._op_finished(op)

    def wait_for_finalize(self) -> None:
        """In sync, the job waits in pending for job-finalize, with the
        guest's requests held since the copy loop left (QEMU keeps the
        source drained until the switch).  QEMU's guest is a VM; qmpd's is
        the monitor's qemu-io, and holding it would hold the monitor that
        job-finalize must come through (QEMU 11.1's does hang so).  So the
        requests go on now, each written to source and target before it
        completes, even if the switch happens meanwhile, and a failure on
        the target fails the guest's request: whichever disk the guest has
        after the job holds every write it saw succeed, and nothing is
        left to copy (``offset`` stays ``len``)."""
        self._through_to_finalize = True
        self.guests.release()

    async def _write_to_finalize(
        self,
        offset: int,
        length: int,
        data: bytes | None,
        source_io: Callable[[], Awaitable[T]],
    ) -> T:
        """A guest request while waiting for finalize (see
        :meth:`wait_for_finalize`).  Raises BlockIOError from the source or
        the target."""
        async with self._holding(offset, offset + length):
            result = await source_io()
            if data == b"":
                if self.zero is not None:
                    self.zero.clear(offset, length)
                await self.target.discard(offset, length)
            else:
                await self._active_write(offset, length, data)
            return result

    def _redirty(self, offset: int, length: int) -> None:
        self.dirty.mark(offset, length)
        self._update_remaining()
        self.kick()

    def _may_write_through(self) -> bool:
        """Whether guest writes are written to the target as they happen:
        in write-blocking mode once the bitmaps are set up.  (Once the copy
        loop has left in sync, guest writes wait at the gate until the
        pivot, or are written through while the job waits for
        job-finalize: see :meth:`wait_for_finalize`.)"""
        if not self._initialized or self._pivoted:
            return False
        return self.copy_mode == "write-blocking"

    async def _active_write(self, offset: int, length: int, data: bytes | None) -> None:
        if data is None:
            await self._zero_target(offset, length)
        else:
            await self._write_target(offset, data)

    # -- the work ----------------------------------------------------------------

    def reply_sent(self) -> None:
        """The reply to blockdev-mirror is queued ahead of the job's events,
        or its client has gone (see :meth:`run`)."""
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
        failure: JobFailed | None = None
        async with trio.open_nursery() as nursery:
            try:
                await self._copy_loop(nursery)
            except JobFailed as exc:
                # Caught inside so that it leaves the nursery as itself, not
                # in an ExceptionGroup; the loop raises only when drained.
                failure = exc
        if failure is not None:
            raise failure

    async def _copy_loop(self, nursery: trio.Nursery) -> None:
        """Start operations on dirty runs until in sync and asked to stop;
        see the module docstring.  Raises JobFailed (with nothing of the
        job's in flight)."""
        cursor = 0
        while True:
            if self.is_cancelled:
                await self._drain()
                return
            if self._fatal is not None:
                await self._drain()
                raise JobFailed(self._fatal)
            if self._failed:
                await self._drain()
                self._failed = False
                await self.sleep(RETRY_DELAY)
                continue
            if self.should_pause:
                await self._drain()
                await self.pause_point()
                continue
            run = self.dirty.next_run(cursor, self.opts.buf_size)
            if run is None and cursor:
                run = self.dirty.next_run(0, self.opts.buf_size)
            if run is not None:
                start, length = run
                busy = len(self._job_ops()) >= self._slots.total_tokens
                if busy or self._conflicts(start, start + length):
                    # Not a yield point: the job stays busy while it waits.
                    await self._op_done.wait()
                    continue
                cursor = start + length
                await self._dispatch(nursery, start, length)
                if self.speed:
                    # Rate-limited: one window at a time, then the limiter
                    # decides (QEMU also keeps fewer requests in flight).
                    await self._drain()
                    await self.throttle()
                continue
            if self._job_ops():
                # Nothing to start, but not in sync until they are done.
                await self._op_done.wait()
                continue
            cursor = 0
            if self.is_ready and (self.should_complete or self.cancel_requested):
                if await self._leave_in_sync():
                    return
                continue
            if not self.is_ready:
                if await self._confirm_status():
                    continue
                # In sync: make it durable before saying so (QEMU flushes
                # the target before ready).
                if not await self._flush_target():
                    await self.throttle()
                    continue
                if self.dirty.count():
                    continue
                self.actively_synced = self.copy_mode == "write-blocking"
                self.transition_to_ready()
                continue
            await self.yield_()

    async def _leave_in_sync(self) -> bool:
        """The last step of a ready job asked to stop: drain the guest's
        requests, check nothing is left to copy, flush the target.

        True: in sync, and the gate stays held, so no guest request runs
        until the filter is retired (after the pivot, or without one);
        the job's tear-down must retire it on every path.  False: a guest
        request in flight left work (or an error, or a failed flush whose
        policy retries); the gate is released and the loop goes on.
        Raises JobFailed (gate held) when the flush fails with ``report``.
        QEMU's mirror_run: drained_begin, dirty count, mirror_flush.
        """
        await self.guests.drain()
        # Requests that were in flight re-dirtied what they wrote (or wrote
        # it through, or failed doing so); a forced cancel may have come
        # meanwhile: the loop deals with each.
        if self.dirty.count() or self._failed or self._fatal is not None or self.is_cancelled:
            self.guests.release()
            return False
        if not await self._flush_target():
            self.guests.release()
            await self.throttle()
            return False
        self.actively_synced = self.copy_mode == "write-blocking"
        return True

    # -- operations in flight -------------------------------------------------------

    def _job_ops(self) -> list[_Op]:
        return [op for op in self._ops if not op.active]

    def _conflicts(self, start: int, end: int) -> bool:
        return any(op.overlaps(start, end) for op in self._ops)

    async def _dispatch(self, nursery: trio.Nursery, start: int, length: int) -> None:
        """Take the dirty window ``[start, start+length)`` (whole chunks)
        and start one operation per piece of it: a zero extent of the
        source, or at most ``op_max`` bytes of data."""
        end = start + length
        # Clear and reserve in one step: from here a guest write there
        # re-dirties it (write-through is refused), so the block status
        # asked below can only be stale where a copy will follow.
        self.dirty.clear(start, length)
        snapshot = None if self.zero is None else self.zero.copy()
        window = _Op(start, end, active=False)
        self._ops.append(window)
        try:
            extents = await self._source_status(start, end)
        except BlockIOError as err:
            self._io_failed(True, err, start, end)
            return
        finally:
            self._ops.remove(window)
        pieces: list[_Op] = []
        pos = start
        for ext in extents:
            stop = min(ext.end, end)
            if ext.start > pos:
                self.dirty.mark(pos, ext.start - pos)  # never left uncopied
            pos = max(pos, ext.start)
            while pos < stop:
                step = stop - pos if ext.zero else min(self.op_max, stop - pos)
                if stop - pos - step < self.opts.granularity:
                    # A tail shorter than a chunk joins this piece: a file's
                    # data extent is 4 KiB aligned, so a 1 MiB extent at an
                    # odd offset would otherwise cost a second operation.
                    step = stop - pos
                if ext.zero and self.zero is not None and not self.zero.unmarked(pos, step):
                    # Zero on both sides already: nothing to do, no task to
                    # start (most of a sparse disk goes this way).
                    self.stats.skipped += step
                    self.progress.update(step)
                else:
                    pieces.append(
                        _Op(pos, pos + step, active=False, zero=ext.zero, zero_before=snapshot)
                    )
                pos += step
        if pos < end:
            self.dirty.mark(pos, end - pos)
        self._ops.extend(pieces)
        self._update_remaining()
        for op in pieces:
            nursery.start_soon(self._run_op, op)
        self._unsynced += sum(op.length for op in pieces if not op.zero)
        if self._unsynced >= WRITE_BEHIND_BYTES and self._writeback is None and not self.is_ready:
            self._unsynced = 0
            self._writeback = trio.Event()
            nursery.start_soon(self._write_behind, self._writeback)

    async def _write_behind(self, done: trio.Event) -> None:
        """Make what the copy wrote so far durable, beside the copy.

        The target is flushed before ready, and on storage with a volatile
        cache a flush costs in proportion to what was written since the
        last one, however it is split (on this machine ~0.4 s for 200 MiB,
        as long as the copy itself; only starting writeback did not
        shorten it).  Synced every WRITE_BEHIND_BYTES, one at a time, the
        cost is paid while copying, not after.  Changes no data; a failed
        sync fails the flush before ready (:meth:`BlockNode.write_behind`).
        """
        try:
            await self.target.write_behind(0, self.target.size)
        finally:
            self._writeback = None
            done.set()

    async def _source_status(self, start: int, end: int) -> list[Extent]:
        """``[start, end)``'s block status: through the map while there is
        one (cut from the first walk while that may answer; a fresh answer
        there settles the claims it served, see
        :meth:`StatusSnapshot.status`), else asked of the source.  Raises
        BlockIOError as :meth:`BlockNode.block_status`."""
        snapshot = self._status_map
        if snapshot is None:
            return await self.source.block_status(start, end - start)
        return await snapshot.status(start, end)

    async def _confirm_status(self) -> bool:
        """In sync before ready: confirm the zero claims taken from the
        first walk (another process may have written there since, see
        :mod:`qmpd.block.status_snapshot`) and mark what no longer reads
        as zero dirty; the map is gone afterwards, so this happens once.
        True when the loop has work again: ranges to copy, or a failed
        block-status query to act on (policy ``on-source-error``, the map
        kept for the retry)."""
        snapshot = self._status_map
        if snapshot is None:
            return False
        try:
            changed = await snapshot.confirm()
        except BlockIOError as err:
            self._io_failed(True, err, 0, 0)
            return True
        self._status_map = None
        for ext in changed:
            if self._in_sync_scope(ext):
                self.dirty.mark(ext.start, ext.length)
        self._update_remaining()
        return bool(self.dirty.count())

    async def _run_op(self, op: _Op) -> None:
        """One operation: waits for a slot, then one request (a zero write or
        skip, or a read and a write); a failure re-dirties its range."""
        try:
            async with self._slots:
                if self.is_cancelled or self._fatal is not None:
                    self.dirty.mark(op.start, op.length)
                    return
                if await self._copy_piece(op, op.start, op.length, op.zero):
                    self.progress.update(op.length)
                    op.done = op.length
        finally:
            self._op_finished(op)

    def _op_finished(self, op: _Op) -> None:
        self._ops.remove(op)
        self._update_remaining()
        self._op_done.set()
        self._op_done = trio.Event()

    async def _drain(self) -> None:
        """Wait until none of the job's operations, nor a write-behind, is
        in flight (guest write-throughs may be: they are the guest's)."""
        while self._job_ops():
            await self._op_done.wait()
        if self._writeback is not None:
            await self._writeback.wait()

    def _update_remaining(self) -> None:
        pending = sum(op.length - op.done for op in self._job_ops())
        self.progress.set_remaining(self.dirty.count() + pending)

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
        # A target over a backing file reads that file wherever its own
        # layer is unallocated; with sync=top that is the point (the target
        # shares the source's base): no pre-zero pass then, as in QEMU.
        unmap = tgt.unmap_allowed and (
            self.opts.sync == "full" or tgt.children.get("backing") is None
        )
        try:
            if unmap:
                # Holes are cheap and keep the target as thin as the
                # source: punch whatever the target allocates, even when it
                # reads as zero already.  Block status cannot be asked (a
                # file system reports preallocated, unwritten extents as
                # holes), the allocation can.  Nothing allocated means
                # nothing to punch, never that it reads as zero (some file
                # systems report no blocks for data): that only a hole
                # probe or a read proves.
                allocated = tgt.actual_size()
                empty = allocated == 0 and (await tgt.known_zero()).open.value
                if not empty:
                    await tgt.write_zeroes(0, length, may_unmap=True)
                    self.stats.zeroed += min(allocated, length) if allocated else length
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
            snapshot = await src.status_snapshot(0, length)
            status = snapshot.extents
            if snapshot.reusable() and len(status) <= STATUS_MAP_MAX:
                self._status_map = snapshot
            for ext in status:
                if self._in_sync_scope(ext):
                    self.dirty.mark(ext.start, ext.length)
            if self.opts.sync == "full":
                # What reads as zero, where the target does too, is not
                # written thanks to zero knowledge.  (With sync=top it is
                # left out by the sync mode instead.)  Only what no dirty
                # chunk covers counts here: the copy of a dirty chunk
                # counts the zero rest of it itself.
                for ext in status:
                    if not self._in_sync_scope(ext):
                        self.stats.skipped += sum(
                            n for _, n in self.dirty.unmarked(ext.start, ext.length)
                        )
        except BlockIOError as err:
            raise JobFailed(err.desc) from None

    def _in_sync_scope(self, ext: Extent) -> bool:
        """Whether the sync mode copies ``ext`` of the source: full copies
        whatever the chain allocates, top only what the source's own layer
        does (QEMU: allocated above the source's backing file), the rest
        being the target's backing file's business."""
        if self.opts.sync == "top":
            return ext.present and ext.depth == 0
        return ext.present

    async def _copy_piece(self, op: _Op, offset: int, length: int, zero: bool) -> bool:
        """One request; False when it failed (the range is dirty again)."""
        if zero:
            try:
                await self._zero_target(offset, length, op.zero_before)
            except BlockIOError as err:
                return self._io_failed(False, err, offset, offset + length)
            return True
        if await self._offload(offset, length):
            self.account(length)
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

    async def _offload(self, offset: int, length: int) -> bool:
        """Copy a data piece in the kernel when source and target allow
        (:meth:`BlockNode.copy_to`); False: read and write it instead."""
        if self.zero is not None:
            self.zero.clear(offset, length)
        try:
            done = await self.source.copy_to(offset, length, self.target)
        except BlockIOError:
            # The read and write that follow report it as QEMU would.
            return False
        if done:
            self.stats.copied += length
        return done

    async def _zero_target(
        self, offset: int, length: int, before: ChunkBitmap | None = None
    ) -> None:
        """Make the range zero on the target, writing only where it is not
        known to be zero already (now, or in ``before``: the zero bits when
        the operation writing this range started)."""
        zero = self.zero
        if zero is None:
            todo = [(offset, length)]
        else:
            todo = zero.unmarked(offset, length)
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
        """Apply the policy to a failed request of an operation: the range
        is dirty again and the main task acts once the others are drained
        (on report: fails the job with the first error).  Returns False."""
        policy = self.opts.on_source_error if is_read else self.opts.on_target_error
        action = self.error_action(policy, is_read, err.errno)
        self.dirty.mark(start, end - start)
        if action is BlockErrorAction.REPORT:
            if self._fatal is None:
                self._fatal = err.desc
        else:
            self._failed = True
        return False

    async def _flush_target(self) -> bool:
        """Flush the target; True when it succeeded.  A write-behind still
        running is waited for first: two syncs of one file at once may see
        a lost writeback reported to the other one only (the kernel tells
        one of them), and a failed write-behind fails every later flush of
        the node (:meth:`BlockNode.write_behind`), this one included.
        Raises JobFailed when the flush fails and the policy is report."""
        if self._writeback is not None:
            await self._writeback.wait()
        try:
            await self.target.flush()
        except BlockIOError as err:
            action = self.error_action(self.opts.on_target_error, False, err.errno)
            if action is BlockErrorAction.REPORT:
                raise JobFailed(err.desc) from None
            return False
        return True


__all__ = [
    "MAX_IN_FLIGHT",
    "MAX_IO_BYTES",
    "MirrorCopy",
    "MirrorOptions",
    "ZeroStats",
]
