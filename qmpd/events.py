"""Broadcasting QMP events to every negotiated session.

An event is encoded once (once per output style: compact or pretty) and the
same bytes are handed to every sink that takes events.  Sinks are the
server's connections; delivering must never block the emitter, so a sink
that cannot take more (its client stopped reading) is expected to close
itself rather than make the bus wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from .protocol.session import encode_event


class EventSink(Protocol):
    """What the bus needs of a receiver (implemented by server connections)."""

    @property
    def pretty(self) -> bool: ...

    @property
    def receives_events(self) -> bool: ...

    def deliver_event(self, data: bytes) -> None: ...

    async def flushed(self) -> None:
        """Wait until everything delivered so far has been written."""
        ...


def wall_clock_timestamp(now: float) -> tuple[int, int]:
    """QMP's timestamp: whole seconds and microseconds of wall clock time."""
    micros = int(now * 1_000_000)
    return micros // 1_000_000, micros % 1_000_000


class EventBus:
    """Fan-out of events to sinks; see the module docstring."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        check: Callable[[str, dict[str, Any] | None], None] | None = None,
    ) -> None:
        self._sinks: set[EventSink] = set()
        self._clock = clock
        self.check = check
        #: Every event emitted, newest last, when a test asks for a record.
        self.history: list[tuple[str, dict[str, Any] | None]] | None = None

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.add(sink)

    def unsubscribe(self, sink: EventSink) -> None:
        self._sinks.discard(sink)

    async def flushed(self) -> None:
        """Wait until every sink has written the events delivered so far
        (a daemon about to exit; bound the wait: a client may not read)."""
        for sink in list(self._sinks):
            await sink.flushed()

    def emit(self, name: str, data: dict[str, Any] | None = None) -> None:
        """Send event ``name`` now to every negotiated session."""
        if self.check is not None:
            self.check(name, data)
        if self.history is not None:
            self.history.append((name, data))
        timestamp = wall_clock_timestamp(self._clock())
        encoded: dict[bool, bytes] = {}
        for sink in list(self._sinks):
            if not sink.receives_events:
                continue
            pretty = sink.pretty
            payload = encoded.get(pretty)
            if payload is None:
                payload = encoded[pretty] = encode_event(name, data, timestamp, pretty=pretty)
            sink.deliver_event(payload)


__all__ = ["EventBus", "EventSink", "wall_clock_timestamp"]
