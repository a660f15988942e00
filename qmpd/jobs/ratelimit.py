"""A bytes-per-second limit for job I/O, computed on any clock.

A job accounts the bytes it has processed with :meth:`RateLimiter.account`
and asks :meth:`RateLimiter.delay` how long to wait before the next chunk.
The limiter keeps a window that starts when the job was last on schedule:
after ``n`` bytes in the window, the next byte may go at
``start + n / speed``.  Once the job is on or behind that schedule the
window restarts at "now", so idle time is never saved up as a burst.

QEMU's ratelimit.c counts in 100 ms slices instead; the long-run rate is the
same, and this form keeps the times exact (1 MiB at 1 MiB/s takes exactly
one second), which lets tests assert ``trio.current_time()`` under a
MockClock.  The limiter never reads a clock itself: callers pass ``now``.
"""

from __future__ import annotations

__all__ = ["RateLimiter"]


class RateLimiter:
    """Bytes-per-second limiter; ``speed == 0`` means unlimited."""

    __slots__ = ("_dispatched", "_speed", "_start")

    def __init__(self, speed: int = 0) -> None:
        self._speed = 0
        self._start = 0.0
        self._dispatched = 0
        self.set_speed(speed)

    @property
    def speed(self) -> int:
        return self._speed

    def set_speed(self, speed: int) -> None:
        """Change the limit; what was already accounted stays accounted.

        Raises ValueError for a negative speed (callers check QMP arguments
        first, with QEMU's message).
        """
        if speed < 0:
            raise ValueError("speed must not be negative")
        self._speed = speed

    def account(self, nbytes: int, now: float) -> None:
        """Record that ``nbytes`` were processed at time ``now``."""
        if nbytes < 0:
            raise ValueError("cannot account a negative number of bytes")
        if self._dispatched == 0:
            self._start = now
        self._dispatched += nbytes

    def delay(self, now: float) -> float:
        """Seconds to wait at ``now`` before processing more (0.0: go on)."""
        if self._speed == 0 or self._dispatched == 0:
            return 0.0
        due = self._start + self._dispatched / self._speed
        if due <= now:
            self._start = now
            self._dispatched = 0
            return 0.0
        return due - now
