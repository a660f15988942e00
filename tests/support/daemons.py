"""Start QMP daemons (qmpd or QEMU's qemu-storage-daemon) as processes.

Tests, differential tests and ``scripts/bench`` share this: a daemon is
started with qemu-storage-daemon's command line (``--chardev socket,...
--monitor chardev=...``), which qmpd accepts too, so the same argv starts
either.  Readiness is the socket answering a connect, never a sleep.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.qemu_tools import (
    new_tool,
    system_tool,
    why_new_missing,
    why_system_missing,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class DaemonKind:
    """One way of starting a QMP daemon: a name and the argv prefix."""

    name: str
    argv: tuple[str, ...]


def qmpd_kind() -> DaemonKind:
    return DaemonKind("qmpd", (sys.executable, "-m", "qmpd"))


def qsd72_kind() -> DaemonKind | None:
    """Debian's qemu-storage-daemon (QEMU 7.2), or None when not installed."""
    path = system_tool("qemu-storage-daemon")
    return DaemonKind("qsd-7.2", (path,)) if path else None


def qsd_new_kind() -> DaemonKind | None:
    """QEMU 11.1's qemu-storage-daemon (see tests/support/qemu_tools.py), or
    None when it is not set up."""
    qsd = new_tool("qsd")
    return DaemonKind("qsd-new", (qsd,)) if qsd else None


def why_missing(kind: str) -> str:
    """Why the daemon ``kind`` (``qsd-7.2`` or ``qsd-new``) is absent: a skip reason."""
    if kind == "qsd-7.2":
        return why_system_missing("qemu-storage-daemon")
    return why_new_missing("qsd")


@dataclass
class Daemon:
    """A running daemon process and the sockets of its monitors."""

    kind: DaemonKind
    proc: subprocess.Popen[bytes]
    sockets: list[str]
    workdir: str
    stderr_path: str = field(default="")

    def stderr(self) -> str:
        try:
            return Path(self.stderr_path).read_text(errors="replace")
        except OSError:
            return ""


def monitor_args(sockets: Sequence[str], *, pretty: bool = False) -> list[str]:
    """``--chardev``/``--monitor`` pairs for each socket path."""
    args: list[str] = []
    for i, path in enumerate(sockets):
        args += ["--chardev", f"socket,id=mon{i},path={path},server=on,wait=off"]
        args += ["--monitor", f"chardev=mon{i}" + (",pretty=on" if pretty else "")]
    return args


def _listening(path: str) -> bool | None:
    """Whether a Unix socket at ``path`` is listening, from /proc/net/unix
    (None when that cannot be read)."""
    try:
        with open("/proc/net/unix") as table:
            next(table)  # header
            for line in table:
                fields = line.split()
                # Num RefCount Protocol Flags Type St Inode [Path]
                if len(fields) >= 8 and fields[7] == path and int(fields[3], 16) & 0x10000:
                    return True
    except OSError:
        return None
    return False


def wait_for_socket(path: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Block until something listens on ``path``; raise if the process dies.

    Asks /proc/net/unix rather than connecting: QEMU's monitor serves one
    client at a time and closes a connection that arrives before it has
    seen the previous one hang up, so a probe connection made just before
    the test's own could cost the test its greeting.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before {path} was ready")
        if os.path.exists(path):
            listening = _listening(path)
            if listening:
                return
            if listening is None:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(path)
                    return
                except OSError:
                    pass
                finally:
                    s.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} not ready after {timeout}s")
        time.sleep(0.01)


@contextmanager
def running(
    kind: DaemonKind,
    *,
    monitors: int = 1,
    extra: Sequence[str] = (),
    pretty: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[Daemon]:
    """Run a daemon with ``monitors`` QMP sockets in a fresh directory under /tmp."""
    workdir = tempfile.mkdtemp(prefix=f"{kind.name}-", dir="/tmp")
    sockets = [os.path.join(workdir, f"m{i}.sock") for i in range(monitors)]
    stderr_path = os.path.join(workdir, "stderr")
    argv = [*kind.argv, *monitor_args(sockets, pretty=pretty), *extra]
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=full_env
        )
    daemon = Daemon(kind, proc, sockets, workdir, stderr_path)
    try:
        # Probe the last socket: both daemons create them in order.
        try:
            wait_for_socket(sockets[-1], proc)
        except (RuntimeError, TimeoutError) as e:
            # The workdir (and its stderr file) is gone once we return:
            # carry the daemon's last words in the error for the skip/fail text.
            tail = daemon.stderr().strip().splitlines()[-3:]
            raise type(e)(f"{e}: {' | '.join(tail)}" if tail else str(e)) from e
        yield daemon
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


class RawClient:
    """A blocking QMP client on a raw socket: send bytes, read CRLF lines.

    Differential tests need the exact bytes (bad JSON, odd ids) that a
    real client library would refuse to send.
    """

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()  # else an unclosed-socket warning fails the run later
            raise
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        """One server message line, without its ``\\r\\n``."""
        return self.read_raw_line().rstrip(b"\n").rstrip(b"\r")

    def read_raw_line(self) -> bytes:
        """One line exactly as received, with its ``\\n`` (and ``\\r``, if any).

        Raises EOFError when the server closes first (bytes already
        received without a newline are dropped), socket.timeout when it
        stays silent longer than the socket's timeout.
        """
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def greeting(self) -> bytes:
        return self.readline()

    def negotiate(self) -> None:
        self.greeting()
        self.send(b'{"execute": "qmp_capabilities"}')
        reply = self.readline()
        if b'"return"' not in reply:
            raise RuntimeError(f"negotiation failed: {reply!r}")
