"""Serving QMP sessions on trio listeners.

Theory of operation
-------------------
The server only moves bytes; the protocol lives in
:class:`qmpd.protocol.session.Session`.  Each accepted stream becomes a
:class:`Connection` running two tasks:

* the *reader* reads bytes, feeds the session, runs each request through
  :func:`qmpd.dispatch.execute` and appends the reply to the outbox.  It runs
  requests of one session one after the other, so replies keep request order;
* the *writer* takes everything queued in the outbox at once and writes it
  with one ``send_all``: a pipelining client gets many replies per system
  call.  When nothing is queued and no other request is waiting, the reader
  writes the reply itself, which saves a task switch per round trip; the
  outbox makes sure only one of them writes at a time.

Events are appended to the same outbox, so an event raised while a command
runs is written before that command's reply, as QEMU does.  The outbox is
bounded: a reply waits for room (the reader stops reading, which pushes back
on that client only), while an event never waits; an event that does not fit
means the client stopped reading, and that session is closed with a log line
so that it cannot block the others or grow memory without bound.

Stream errors (the peer vanished) end the session here and never reach
handlers.

A command's fate is separate from its client's.  Ending a session cancels
its tasks, but a command whose handler has started runs to its end (see
:mod:`qmpd.dispatch`), and what it hands on through the context runs
whether or not its reply can be delivered: ``after_reply_queued`` (the
first steps of a job it started) as soon as the reply is queued, without
waiting for the client to read it, and ``after_reply`` (``quit``) once the
reply is written or the client has gone.  Only the reply itself is lost
with the client.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import trio

from . import dispatch
from .app import App, CommandContext
from .protocol.session import EOF, NEED_DATA, Rejected, Request

log = logging.getLogger("qmpd.server")

#: Bytes read per receive; QEMU's own monitor reads far less at a time.
RECEIVE_SIZE = 65536
#: Bytes of output a session may have queued before events overflow it.
OUTBOX_LIMIT = 1 << 20

#: QMP lets a client nest JSON 1024 deep and replies echo its id, so encoding
#: and checking recurse deeper than Python's default limit of 1000 allows.
RECURSION_LIMIT = 20000

_session_ids = itertools.count(1)


class Outbox:
    """Bytes queued for one client, written in batches; see module docstring."""

    def __init__(self, limit: int = OUTBOX_LIMIT) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._writing = False
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()

    def put_nowait(self, data: bytes) -> bool:
        """Queue ``data`` unless over the limit; False means it did not fit."""
        if self._chunks and self._size + len(data) > self._limit:
            return False
        self._append(data)
        return True

    async def put(self, data: bytes) -> None:
        """Queue ``data``, waiting while the outbox is over its limit."""
        while self._chunks and self._size >= self._limit:
            await self._space_lot.park()
        self._append(data)

    def push(self, data: bytes) -> None:
        """Queue ``data`` now, over the limit if need be (for a reply that
        work waits for, which must not wait for the client to read)."""
        self._append(data)

    def _append(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._writer_lot.unpark_all()

    def claim_idle(self) -> bool:
        """Take the right to write directly when nothing is queued or being
        written; the caller must call :meth:`written` after writing."""
        if self._chunks or self._writing:
            return False
        self._writing = True
        return True

    async def take(self) -> bytes:
        """Everything queued, joined; waits until there is something and
        nobody else is writing."""
        while not self._chunks or self._writing:
            await self._writer_lot.park()
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._writing = True
        return data

    def written(self) -> None:
        """The writer finished writing what it last took."""
        self._writing = False
        self._space_lot.unpark_all()
        if self._chunks:
            self._writer_lot.unpark_all()

    async def flushed(self) -> None:
        """Wait until everything queued so far has been written."""
        while self._chunks or self._writing:
            await self._space_lot.park()


@dataclass(frozen=True, slots=True)
class MonitorOptions:
    """Per-listener options, as qemu-storage-daemon's ``--monitor``."""

    pretty: bool = False
    name: str = "qmp"


class Connection:
    """One client: a session, its outbox and its two tasks."""

    def __init__(self, app: App, stream: trio.abc.Stream, options: MonitorOptions) -> None:
        self.app = app
        self.stream = stream
        self.session = app.new_session(pretty=options.pretty)
        self.ctx = CommandContext(app, self.session)
        self.outbox = Outbox()
        self.name = f"{options.name}#{next(_session_ids)}"
        self._cancel = trio.CancelScope()
        self._overflowed = False
        self._lost: str | None = None
        self._trace = log.isEnabledFor(logging.DEBUG)

    # -- EventSink ---------------------------------------------------------

    @property
    def pretty(self) -> bool:
        return self.session.pretty

    @property
    def receives_events(self) -> bool:
        return self.session.receives_events and not self._overflowed

    async def flushed(self) -> None:
        await self.outbox.flushed()

    def deliver_event(self, data: bytes) -> None:
        self._log_out(data)
        if not self.outbox.put_nowait(data):
            self._overflowed = True
            log.warning(
                "%s: client is not reading; event queue full (%d bytes), closing the session",
                self.name,
                OUTBOX_LIMIT,
            )
            self._cancel.cancel()

    # -- tasks -------------------------------------------------------------

    async def run(self) -> None:
        log.info("%s: session opened", self.name)
        self.app.events.subscribe(self)
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    await self._reader()
                    await self.outbox.flushed()
                    nursery.cancel_scope.cancel()
        except Exception:
            # A bug must cost this session at most, never the daemon.
            log.exception("%s: internal error, closing the session", self.name)
            self._lost = "internal error"
        finally:
            self.app.events.unsubscribe(self)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
            log.info("%s: session closed: %s", self.name, self._end_reason())

    def _end_reason(self) -> str:
        if self._overflowed:
            return "event queue overflow"
        return self._lost or "client closed the connection"

    def _connection_lost(self, exc: Exception) -> None:
        # The peer vanished: end the session here, quietly.
        self._lost = f"connection lost ({exc})"
        self._cancel.cancel()

    async def _writer(self) -> None:
        while True:
            data = await self.outbox.take()
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._connection_lost(exc)
                return
            self.outbox.written()

    def _log_out(self, data: bytes) -> None:
        if self._trace:
            log.debug("%s --> %s", self.name, data.rstrip().decode("ascii", "replace"))

    async def _send(self, data: bytes) -> None:
        self._log_out(data)
        # A client waiting for this reply alone gets it written straight away
        # (one task switch less per round trip); while more requests are
        # already parsed, replies queue up so the writer sends them together.
        if self.session.has_pending_input or not self.outbox.claim_idle():
            await self.outbox.put(data)
            return
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._connection_lost(exc)
        finally:
            self.outbox.written()

    async def _reader(self) -> None:
        session = self.session
        await self._send(session.greeting())
        while True:
            event = session.next_event()
            if event is NEED_DATA:
                try:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._connection_lost(exc)
                    return
                if self._trace and data:
                    log.debug("%s <-- %s", self.name, data.decode("utf-8", "replace"))
                session.receive_data(bytes(data))
            elif event is EOF:
                return
            elif isinstance(event, Rejected):
                await self._send(event.reply)
            else:
                await self._run_request(event)  # type: ignore[arg-type]

    async def _run_request(self, request: Request) -> None:
        """Run one request and deliver its reply (see the module docstring).

        Raises trio.Cancelled when the session ends meanwhile; the work the
        command handed on has run by then all the same.
        """
        ctx = self.ctx
        try:
            reply = await dispatch.execute(ctx, request)
            if ctx.after_reply_queued:
                # Queued, the reply comes before whatever the work emits.
                self._log_out(reply)
                self.outbox.push(reply)
                _run_all(ctx.after_reply_queued)
            else:
                await self._send(reply)
            if ctx.after_reply:
                await self.outbox.flushed()
        finally:
            # Normally empty by now; not so when the client has gone first.
            _run_all(ctx.after_reply_queued)
            _run_all(ctx.after_reply)


def _run_all(callbacks: list[Callable[[], None]]) -> None:
    """Call and remove every callback in ``callbacks``, in order."""
    while callbacks:
        callbacks.pop(0)()


async def serve_listener(
    app: App,
    listener: trio.abc.Listener[trio.abc.Stream],
    options: MonitorOptions = MonitorOptions(),
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients on ``listener`` forever, each in its own Connection."""
    if sys.getrecursionlimit() < RECURSION_LIMIT:
        sys.setrecursionlimit(RECURSION_LIMIT)

    async def handle(stream: trio.abc.Stream) -> None:
        await Connection(app, stream, options).run()

    await trio.serve_listeners(handle, [listener], task_status=task_status)  # type: ignore[arg-type]


__all__ = ["Connection", "MonitorOptions", "Outbox", "serve_listener"]
