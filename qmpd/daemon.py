"""Process life cycle: sockets, pidfile, daemonizing, signals, shutdown.

Everything that can fail is done before the process forks or trio starts:
the command line is parsed, the schema loaded and checked, every socket
bound and listening and the pidfile locked.  So a bad start prints one line
and exits 1 with nothing left behind, and ``--daemonize`` lets the parent
exit 0 only when clients can already connect.

Sockets are created mode 0600 whatever the umask (they give full control of
the daemon).  A socket file nobody answers on is stale and replaced; one
another process answers on is refused.  SIGTERM, SIGINT, SIGHUP (all three,
as qemu-storage-daemon) and ``quit`` end the daemon cleanly: jobs are
cancelled and every image is flushed and closed (:meth:`App.stop`), sockets
and pidfile are removed and the exit status is 0.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from .app import App, build_app
from .block import blockdev_add
from .cli import Config, UsageError, parse_args
from .errors import CommandError, QMPDError, StartupError
from .qapi.keyval import keyval_to_qapi, parse_keyval
from .server import MonitorOptions, serve_listener

log = logging.getLogger("qmpd")

PROG = "qmpd"
#: Signals that end the daemon cleanly (exit status 0).
SHUTDOWN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
#: Seconds the exit waits for quit's reply, then for clients to take the
#: last events; only a client that stopped reading makes it wait that long.
EXIT_GRACE = 5.0


@dataclass(eq=False)
class BoundSocket:
    path: str
    sock: socket.socket
    options: MonitorOptions
    identity: tuple[int, int]  # (st_dev, st_ino): remove only our own file


def _socket_in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


def bind_unix(path: str, options: MonitorOptions) -> BoundSocket:
    """Listen on ``path`` with mode 0600, replacing a stale socket file.

    Raises StartupError when another process answers on ``path`` or the path
    cannot be bound.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError(f"{path}: exists and is not a socket; refusing to replace it")
        if _socket_in_use(path):
            raise StartupError(f"{path}: another process is listening on this socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"Failed to bind socket to {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(socket.SOMAXCONN)
    st = os.stat(path)
    return BoundSocket(path, sock, options, (st.st_dev, st.st_ino))


def remove_socket(bound: BoundSocket) -> None:
    bound.sock.close()
    with contextlib.suppress(OSError):
        st = os.lstat(bound.path)
        if (st.st_dev, st.st_ino) == bound.identity:
            os.unlink(bound.path)


class PidFile:
    """A locked pidfile, as qemu-storage-daemon's ``--pidfile``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(
                    f"Cannot lock pid file: {path}: another process holds it"
                ) from None
            raise StartupError(f"Cannot lock pid file: {path}: {exc.strerror}") from None

    def write(self) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)


@contextlib.contextmanager
def listening(config: Config) -> Iterator[list[BoundSocket]]:
    bound: list[BoundSocket] = []
    try:
        for index, (path, monitor) in enumerate(config.sockets):
            name = f"qmp{index}" if len(config.sockets) > 1 else "qmp"
            bound.append(bind_unix(path, MonitorOptions(pretty=monitor.pretty, name=name)))
        yield bound
    finally:
        for b in bound:
            remove_socket(b)


async def run(app: App, bound: Sequence[BoundSocket]) -> None:
    """Serve every socket until ``quit`` or a shutdown signal, then end as
    QEMU does: jobs cancelled and images closed (App.stop), the events
    that caused written out, and only then the sockets closed."""
    with trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals:
        # Delivered now if they came while we were starting (see main()).
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SHUTDOWN_SIGNALS)
        async with trio.open_nursery() as nursery:
            # Jobs run here, not in a session: they outlive their client.
            await nursery.start(app.jobs.serve)
            for b in bound:
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(b.sock))
                await nursery.start(serve_listener, app, listener, b.options)
                log.info("listening on %s", b.path)

            async def on_signal() -> None:
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    # The command running now (a guest write...) ends first.
                    async with app.lock:
                        await app.stop()
                    app.shutdown.set()

            nursery.start_soon(on_signal)
            await app.stopped.wait()
            # quit's reply, then its client's hang-up; a client that left
            # before its reply must not keep the daemon alive.
            with trio.move_on_after(EXIT_GRACE):
                await app.shutdown.wait()
            with trio.move_on_after(EXIT_GRACE):
                await app.events.flushed()
            nursery.cancel_scope.cancel()


def add_blockdevs(app: App, texts: Sequence[str]) -> None:
    """Add each ``--blockdev`` as blockdev-add would, before any socket opens.

    JSON is taken as is; dotted keys are converted with the schema, as
    QEMU's keyval visitor does.  Raises StartupError ``--blockdev ARG: MSG``
    (qemu-storage-daemon's form) for the first that fails.
    """
    command = app.schema.model.commands["blockdev-add"]
    assert command.arg_type is not None
    for text in texts:
        try:
            if text.lstrip().startswith("{"):
                try:
                    args = json.loads(text)
                except ValueError as exc:
                    raise StartupError(f"--blockdev {text}: invalid JSON: {exc}") from None
                if not isinstance(args, dict):
                    raise StartupError(f"--blockdev {text}: must be a JSON object")
            else:
                args = keyval_to_qapi(app.schema.model, command.arg_type, parse_keyval(text))
            app.schema.check_arguments("blockdev-add", args)
            blockdev_add(app.graph, args)
        except CommandError as exc:
            raise StartupError(f"--blockdev {text}: {exc.desc}") from None


def _daemonize() -> int | None:
    """Fork; the parent gets the read end of a pipe, the child None."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return read_fd
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    os.environ["QMPD_READY_FD"] = str(write_fd)
    return None


def _wait_for_child(read_fd: int) -> int:
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read()
    if message.startswith(b"ok"):
        return 0
    sys.stderr.write(message.decode(errors="replace") or f"{PROG}: daemon failed to start\n")
    return 1


def _signal_ready() -> None:
    fd = os.environ.pop("QMPD_READY_FD", None)
    if fd is not None:
        os.write(int(fd), b"ok")
        os.close(int(fd))


def setup_logging(trace: bool) -> None:
    level = logging.DEBUG if trace else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``qmpd`` command; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        config = parse_args(args)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    if config.print_and_exit is not None:
        sys.stdout.write(config.print_and_exit)
        return 0
    setup_logging(config.trace or os.environ.get("QMPD_TRACE", "") not in ("", "0"))
    try:
        app = build_app(Path(config.schema) if config.schema else None)
        add_blockdevs(app, config.blockdevs)
        pidfile = PidFile(config.pidfile) if config.pidfile else None
        # Clients may connect, and signal us, as soon as the sockets listen,
        # which is before trio can receive signals: hold them until it can.
        signal.pthread_sigmask(signal.SIG_BLOCK, SHUTDOWN_SIGNALS)
        try:
            with listening(config) as bound:
                if config.daemonize:
                    read_fd = _daemonize()
                    if read_fd is not None:
                        # The parent: the sockets and pidfile now belong to
                        # the child, so leave without any clean-up.
                        os._exit(_wait_for_child(read_fd))
                if pidfile:
                    pidfile.write()
                _signal_ready()
                trio.run(run, app, bound)
        finally:
            if pidfile:
                pidfile.remove()
    except QMPDError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["PidFile", "bind_unix", "main", "run"]
