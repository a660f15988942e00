"""The command line: qemu-storage-daemon's options, plus a short form for people.

Scripts written for qemu-storage-daemon start qmpd with the same argv::

    qmpd --chardev socket,id=m0,path=/run/x.sock,server=on,wait=off \\
         --monitor chardev=m0 --pidfile /run/x.pid --daemonize

and people type ``qmpd [--socket PATH]`` (``./qmpd.sock`` when no monitor is
given).  Parsing is pure: :func:`parse_args` returns a :class:`Config` or
raises :class:`UsageError` with the one line to print; nothing is started.
Option values use QEMU's ``key=value,...`` syntax (``,,`` is a literal
comma), and both ``--opt value`` and ``--opt=value`` are accepted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from . import QEMU_VERSION, __version__
from .errors import QMPDError
from .qapi.keyval import split_options

DEFAULT_SOCKET = "./qmpd.sock"


class UsageError(QMPDError):
    """A bad command line; the message is the line to print (exit status 1)."""


@dataclass(frozen=True, slots=True)
class Chardev:
    id: str
    path: str


@dataclass(frozen=True, slots=True)
class Monitor:
    chardev: str
    pretty: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the command line asked for."""

    chardevs: tuple[Chardev, ...] = ()
    monitors: tuple[Monitor, ...] = ()
    pidfile: str | None = None
    daemonize: bool = False
    #: Raw ``--blockdev`` texts; their types come from the schema (qmpd.daemon).
    blockdevs: tuple[str, ...] = ()
    trace: bool = False
    schema: str | None = None
    #: Set for -h / -V: print this and exit 0 without starting.
    print_and_exit: str | None = None
    sockets: tuple[tuple[str, Monitor], ...] = field(default=())


HELP = f"""Usage: qmpd [options]
qmpd {__version__}: a QMP control daemon for QEMU's block layer

  -h, --help             display this help and exit
  -V, --version          output version information and exit
  --socket PATH          serve QMP on the Unix socket PATH (default {DEFAULT_SOCKET}
                         when no --monitor is given)
  --chardev socket,id=<id>,path=<path>,server=on,wait=off
                         a Unix socket to listen on (as qemu-storage-daemon)
  --monitor [chardev=]<id>[,mode=control][,pretty[=on|off]]
                         serve QMP on the chardev <id>; many clients at once
  --blockdev [driver=]<driver>[,node-name=<N>][,...] or JSON
                         add a block node at start-up
  --pidfile <path>       write the daemon's PID to <path>
  --daemonize            run in the background; the parent exits once the
                         sockets are listening
  --trace                log every QMP message (also: QMPD_TRACE=1)
  --schema <dir>         load the QAPI schema from <dir> (default: schema/)

Connect with: qmp-shell {DEFAULT_SOCKET}
"""


def version_text() -> str:
    major, minor, micro = QEMU_VERSION
    return f"qmpd version {__version__} (QMP of QEMU {major}.{minor}.{micro})\n"


def split_keyvals(text: str) -> list[tuple[str, str | None]]:
    """QEMU's ``a=b,c,d=e`` syntax as (key, value) pairs; a bare key has None."""
    result: list[tuple[str, str | None]] = []
    for part in split_options(text):
        key, sep, value = part.partition("=")
        result.append((key, value if sep else None))
    return result


def _onoff(option: str, key: str, value: str | None) -> bool:
    # QEMU's boolean properties: a bare key means on.
    if value in (None, "on", "yes", "true"):
        return True
    if value in ("off", "no", "false"):
        return False
    raise UsageError(f"{option}: Parameter '{key}' expects 'on' or 'off'")


def _parse_chardev(arg: str) -> Chardev:
    option = f"--chardev {arg}"
    pairs = split_keyvals(arg)
    backend, value = pairs[0]
    if value is not None:  # "backend=socket" is spelled without the key in QEMU
        backend = "" if backend != "backend" else value
    opts: dict[str, str | None] = {}
    for key, val in pairs[1:]:
        opts[key] = val
    if "id" not in opts or not opts["id"]:
        raise UsageError(f"{option}: chardev: no id specified")
    if backend != "socket":
        raise UsageError(f"{option}: chardev backend '{backend}' is not supported (only 'socket')")
    path = opts.pop("path", None)
    chardev_id = opts.pop("id")
    assert chardev_id is not None
    if not path:
        raise UsageError(f"{option}: chardev: socket needs a 'path' (Unix socket) in qmpd")
    server = _onoff(option, "server", opts.pop("server", "off"))
    if not server:
        raise UsageError(f"{option}: qmpd only listens: 'server=on' is required")
    wait = _onoff(option, "wait", opts.pop("wait", "on"))
    if wait:
        raise UsageError(
            f"{option}: qmpd does not wait for a client before starting: use 'wait=off'"
        )
    if opts:
        key = next(iter(opts))
        raise UsageError(f"{option}: Invalid parameter '{key}'")
    return Chardev(chardev_id, path)


def _parse_monitor(arg: str) -> Monitor:
    option = f"--monitor {arg}"
    chardev: str | None = None
    pretty = False
    for index, (key, value) in enumerate(split_keyvals(arg)):
        if index == 0 and value is None and key not in ("pretty",):
            chardev = key  # the implied key is chardev, as in QEMU
        elif key == "chardev":
            chardev = value
        elif key == "mode":
            if value != "control":
                raise UsageError(f"{option}: Only QMP is supported: mode must be 'control'")
        elif key == "pretty":
            pretty = _onoff(option, key, value)
        elif key == "id":
            pass
        else:
            raise UsageError(f"{option}: Invalid parameter '{key}'")
    if not chardev:
        raise UsageError(f"{option}: Parameter 'chardev' is missing")
    return Monitor(chardev, pretty)


_WITH_VALUE = {"--chardev", "--monitor", "--pidfile", "--blockdev", "--socket", "--schema"}
_FLAGS = {"--daemonize", "--trace", "-h", "--help", "-V", "--version"}


def parse_args(argv: Sequence[str]) -> Config:
    """Parse ``argv`` (without the program name). Raises UsageError."""
    chardevs: list[Chardev] = []
    monitors: list[Monitor] = []
    blockdevs: list[str] = []
    sockets: list[str] = []
    pidfile: str | None = None
    schema: str | None = None
    daemonize = trace = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in ("-h", "--help"):
            return Config(print_and_exit=HELP)
        if name in ("-V", "--version"):
            return Config(print_and_exit=version_text())
        if name in _FLAGS:
            if eq:
                raise UsageError(f"option '{name}' doesn't allow an argument")
            daemonize = daemonize or name == "--daemonize"
            trace = trace or name == "--trace"
            continue
        if name not in _WITH_VALUE:
            if arg.startswith("-"):
                raise UsageError(f"unrecognized option '{arg}'")
            raise UsageError(f"unexpected argument '{arg}'")
        if eq:
            value = inline
        elif i < len(argv):
            value = argv[i]
            i += 1
        else:
            raise UsageError(f"option '{name}' requires an argument")
        if name == "--chardev":
            chardevs.append(_parse_chardev(value))
        elif name == "--monitor":
            monitors.append(_parse_monitor(value))
        elif name == "--blockdev":
            blockdevs.append(value)
        elif name == "--pidfile":
            pidfile = value
        elif name == "--schema":
            schema = value
        else:
            sockets.append(value)

    by_id: dict[str, Chardev] = {}
    for chardev in chardevs:
        if chardev.id in by_id:
            raise UsageError(f"--chardev id={chardev.id}: duplicate ID '{chardev.id}' for chardev")
        by_id[chardev.id] = chardev
    bound: list[tuple[str, Monitor]] = []
    used: set[str] = set()
    for monitor in monitors:
        if monitor.chardev not in by_id:
            raise UsageError(
                f'--monitor chardev={monitor.chardev}: chardev "{monitor.chardev}" not found'
            )
        if monitor.chardev in used:
            raise UsageError(
                f"--monitor chardev={monitor.chardev}: Device '{monitor.chardev}' is in use"
            )
        used.add(monitor.chardev)
        bound.append((by_id[monitor.chardev].path, monitor))
    for path in sockets:
        bound.append((path, Monitor(chardev=path)))
    if not bound and not chardevs:
        bound.append((DEFAULT_SOCKET, Monitor(chardev=DEFAULT_SOCKET)))
    paths = [path for path, _ in bound]
    for path in paths:
        if paths.count(path) > 1:
            raise UsageError(f"socket path '{path}' is given twice")
    return Config(
        chardevs=tuple(chardevs),
        monitors=tuple(monitors),
        pidfile=pidfile,
        daemonize=daemonize,
        blockdevs=tuple(blockdevs),
        trace=trace,
        schema=schema,
        sockets=tuple(bound),
    )


__all__ = ["DEFAULT_SOCKET", "HELP", "Config", "UsageError", "parse_args", "split_keyvals"]
