"""The cheapest QMP client Python allows: raw Unix sockets, lines counted.

Why so bare: the daemon under test and this client share a two-core
machine, so every microsecond the client spends is one the daemon may not
get.  Nothing here parses JSON on the hot path.  A QMP server writes each
message as one line (``pretty`` off), so a reply is complete when its
``\\n`` arrives; replies are told from asynchronous events by the
``"event"`` key, which no ``query-version`` reply contains.  Errors are
spotted the same way (``"error"``) so a daemon answering every command
with an error cannot pass for a fast one.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BenchError",
    "SessionsRun",
    "command",
    "connect",
    "daemon_cpu_seconds",
    "pipelined",
    "query_version",
    "round_trips",
    "sessions",
]

# Generous: only a hung daemon gets near it, and then the run says so
# instead of hanging forever.
TIMEOUT = 30.0
_RECV = 1 << 16


class BenchError(Exception):
    """The daemon misbehaved: closed, timed out, or answered with an error."""


def command(cmd_id: int, name: str = "query-version") -> bytes:
    """One QMP command line carrying ``cmd_id`` as its id."""
    return b'{"execute": "%s", "id": %d}\n' % (name.encode(), cmd_id)


class _Lines:
    """Counts complete reply lines across arbitrary recv() splits.

    Only complete lines are inspected, so an ``"event"`` or ``"error"`` key
    cut in two by a recv boundary is still seen whole.
    """

    __slots__ = ("errors", "first_error", "tail")

    def __init__(self) -> None:
        self.tail = b""
        self.errors = 0
        self.first_error = b""

    def feed(self, data: bytes) -> int:
        """Replies completed by ``data`` (events are not replies)."""
        end = data.rfind(b"\n")
        if end < 0:
            self.tail += data
            return 0
        done = self.tail + data[: end + 1] if self.tail else data[: end + 1]
        self.tail = data[end + 1 :]
        n = done.count(b"\n") - done.count(b'"event"')
        if b'"error"' in done:
            self.errors += done.count(b'"error"')
            if not self.first_error:
                at = done.find(b'"error"')
                self.first_error = done[done.rfind(b"\n", 0, at) + 1 : done.find(b"\n", at)]
        return n


def _readline(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        data = sock.recv(_RECV)
        if not data:
            raise BenchError("daemon closed the connection")
        buf += data
    end = buf.index(b"\n")
    line = bytes(buf[:end]).rstrip(b"\r")
    del buf[: end + 1]
    return line


def connect(path: str, *, retries: int = 3) -> socket.socket:
    """A connected, negotiated (command mode) blocking socket.

    A QSD monitor serves one client at a time; once (seen on a loaded
    machine, not reproduced since) one closed a connection made right
    after the start-up probe had disconnected, before any greeting.  Such
    a close is retried a few times; anything else is not.  Raises
    BenchError when the greeting or ``qmp_capabilities`` fails.
    """
    for _ in range(retries):
        try:
            return _connect(path)
        except _ClosedEarly:
            time.sleep(0.05)
    return _connect(path)


class _ClosedEarly(BenchError):
    pass


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(path)
        buf = bytearray()
        try:
            greeting = _readline(sock, buf)
        except BenchError as e:
            raise _ClosedEarly(f"{path}: closed before the greeting") from e
        if b'"QMP"' not in greeting:
            raise BenchError(f"{path}: not a QMP greeting: {greeting[:200]!r}")
        sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        reply = _readline(sock, buf)
        if b'"return"' not in reply:
            raise BenchError(f"{path}: qmp_capabilities failed: {reply[:200]!r}")
        if buf:
            raise BenchError(f"{path}: unexpected data after negotiation: {bytes(buf)[:200]!r}")
    except BaseException:
        sock.close()
        raise
    return sock


def query_version(sock: socket.socket) -> str:
    """The daemon's version string (parsed once, off the hot path)."""
    sock.sendall(command(0))
    buf = bytearray()
    line = _readline(sock, buf)
    reply = json.loads(line)
    if "return" not in reply:
        raise BenchError(f"query-version failed: {line[:200]!r}")
    ver = reply["return"]
    q = ver.get("qemu", {})
    package = str(ver.get("package", "")).strip()
    number = f"{q.get('major')}.{q.get('minor')}.{q.get('micro')}"
    return f"{number} ({package})" if package else number


def round_trips(sock: socket.socket, commands: Sequence[bytes]) -> list[int]:
    """Send each command and wait for its reply; the round trips in ns."""
    clock = time.perf_counter_ns
    recv = sock.recv
    send = sock.sendall
    samples: list[int] = []
    append = samples.append
    for cmd in commands:
        t0 = clock()
        send(cmd)
        data = recv(_RECV)
        # One recv nearly always holds the whole reply; loop for the rest.
        while not data.endswith(b"\n") or data.count(b"\n") == data.count(b'"event"'):
            more = recv(_RECV)
            if not more:
                raise BenchError("daemon closed the connection")
            data += more
        append(clock() - t0)
        if b'"error"' in data:
            raise BenchError(f"error reply: {data[:300]!r}")
    return samples


def pipelined(sock: socket.socket, commands: bytes, count: int) -> float:
    """Write ``count`` commands at once and read all replies; seconds taken.

    The writing side is non-blocking and driven by poll(): a daemon that
    answers before it has read everything could otherwise fill our receive
    buffer while we block in sendall, and both would wait forever.
    """
    sock.setblocking(False)
    fd = sock.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLOUT)
    view = memoryview(commands)
    sent = 0
    got = 0
    lines = _Lines()
    timeout_ms = int(TIMEOUT * 1000)
    try:
        t0 = time.perf_counter()
        with contextlib.suppress(BlockingIOError):
            sent = sock.send(view)  # usually all of it: one write, like one sendall
        if sent == len(view):
            poller.modify(fd, select.POLLIN)
        while got < count:
            events = poller.poll(timeout_ms)
            if not events:
                raise BenchError(f"timed out after {got}/{count} replies")
            ev = events[0][1]
            if ev & select.POLLIN:
                data = sock.recv(_RECV)
                if not data:
                    raise BenchError(f"daemon closed after {got}/{count} replies")
                got += lines.feed(data)
            elif ev & (select.POLLHUP | select.POLLERR):
                raise BenchError(f"connection failed after {got}/{count} replies")
            if ev & select.POLLOUT and sent < len(view):
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(view[sent:])
                if sent == len(view):
                    poller.modify(fd, select.POLLIN)
        elapsed = time.perf_counter() - t0
    finally:
        sock.settimeout(TIMEOUT)
    if lines.errors:
        raise BenchError(f"{lines.errors} error replies, first: {lines.first_error[:300]!r}")
    return elapsed


@dataclass(frozen=True, slots=True)
class SessionsRun:
    """What ``sessions()`` measured."""

    commands: int
    seconds: float
    client_cpu: float  # CPU seconds this process spent during the run
    min_per_session: int
    max_per_session: int


def sessions(socks: Sequence[socket.socket], duration: float) -> SessionsRun:
    """Every socket does round trips, one command in flight each, for ``duration``.

    One thread and one epoll loop drive all sessions: far cheaper per
    command than a thread per session, whose GIL hand-offs would make the
    client the bottleneck.  After the deadline each session finishes its
    command in flight; the time runs until the last reply.
    """
    ep = select.epoll()
    by_fd: dict[int, tuple[socket.socket, bytes, _Lines]] = {}
    done: dict[int, int] = {}
    for i, s in enumerate(socks):
        s.setblocking(False)
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = (s, command(i + 1), _Lines())
        done[s.fileno()] = 0
    active = len(socks)
    clock = time.perf_counter
    try:
        cpu0 = time.process_time()
        t0 = clock()
        deadline = t0 + duration
        for s, cmd, _ in by_fd.values():
            s.send(cmd)
        while active:
            events = ep.poll(TIMEOUT)
            if not events:
                raise BenchError(f"timed out with {active} sessions waiting")
            now = clock()
            for fd, _ev in events:
                s, cmd, lines = by_fd[fd]
                data = s.recv(_RECV)
                if not data:
                    raise BenchError("daemon closed a session")
                n = lines.feed(data)
                if n:
                    done[fd] += n
                    if now < deadline:
                        s.send(cmd)
                    else:
                        active -= 1
        elapsed = clock() - t0
        cpu = time.process_time() - cpu0
    finally:
        ep.close()
        for s in socks:
            s.settimeout(TIMEOUT)
    errors = sum(lines.errors for _, _, lines in by_fd.values())
    if errors:
        first = next(lines.first_error for _, _, lines in by_fd.values() if lines.errors)
        raise BenchError(f"{errors} error replies, first: {first[:300]!r}")
    counts = list(done.values())
    return SessionsRun(sum(counts), elapsed, cpu, min(counts), max(counts))


_TICK = os.sysconf("SC_CLK_TCK")


def daemon_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name may hold spaces: fields are counted after its ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK
