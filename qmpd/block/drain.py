"""Draining: counting the requests that pass a point, and holding them off.

QEMU *drains* a node before changing the graph under its users: every
request in flight there completes, and requests that arrive meanwhile wait
in their BlockBackend until the drained section ends, then go to whatever
node the backend points at by then.  A mirror's pivot relies on it: with
its source drained, no guest write can slip between the job's last "in
sync" check and the switch of the guest's disk to the target.

A :class:`RequestGate` is that point in qmpd.  Every request passes
through :meth:`RequestGate.request`; :meth:`RequestGate.drain` holds off
new ones and returns once none is in flight; :meth:`RequestGate.release`
lets the held ones go on.  The gate only counts and waits: where a held
request goes afterwards is its owner's business (the mirror filter sends
it to the node that replaced it, see :mod:`.mirror_top`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["RequestGate"]


class RequestGate:
    """Requests in flight through one point, which can be held off."""

    __slots__ = ("_changed", "_held", "_in_flight")

    def __init__(self) -> None:
        self._in_flight = 0
        self._held = False
        #: Set (and replaced) whenever a request ends or the gate opens.
        self._changed = trio.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def held(self) -> bool:
        return self._held

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """One request: waits while the gate is held, then counts as in
        flight until the block ends."""
        while self._held:
            await self._changed.wait()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._notify()

    async def drain(self) -> None:
        """Hold off new requests and wait until none is in flight.

        The gate stays held, also when the wait is cancelled, until
        :meth:`release`: a caller that drains must release on every path.
        """
        self._held = True
        while self._in_flight:
            await self._changed.wait()

    def release(self) -> None:
        """Let held requests go on (a no-op when not held)."""
        if self._held:
            self._held = False
            self._notify()
