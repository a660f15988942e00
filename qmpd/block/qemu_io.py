"""A small qemu-io: the guest-I/O commands iotests drive through HMP.

Theory of operation.  :func:`run_command` takes one qemu-io command line
and a :class:`~.backend.BlockBackend`, runs the command's I/O through the
backend, and returns the text qemu-io would print, line for line: the
``wrote``/``read`` reports with their statistics line, ``map``'s and
``alloc``'s allocation lines, and the error texts of qemu-io 11.1
(argument counts, getopt's complaints, ``Parsing error: ...``, ``300 is
not a valid pattern byte``, ``Pattern verification failed at offset N, M
bytes``, ``write failed: <strerror>``).

Parsing follows qemu-io's own rules, which differ from a shell's: the
line is split on single spaces (no quoting), options are parsed like GNU
getopt (so ``write 0 -1`` is an invalid option ``-1``, not a negative
length), numbers take QEMU's size syntax (``64k``, ``1.5M``, ``0x200``),
and the ``-P`` pattern byte is C's ``strtol(s, 0)`` in [0, 255].

As in QEMU's HMP, a command that needs a permission (write, resize) first
extends the backend's permissions, and they stay extended.  Asynchronous
commands (``aio_write``...) complete before the command returns, as they
do when QEMU's monitor drains the backend.  The statistics line carries
real timings; tests normalise it as iotests do.
"""

from __future__ import annotations

import errno
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..errors import GenericError
from .backend import BlockBackend
from .graph import BlockGraph
from .node import BlockIOError, Perm

#: QEMU's BDRV_REQUEST_MAX_BYTES (INT_MAX rounded down to 512).
REQUEST_MAX_BYTES = 2147483136
#: qemu-io's default fill byte for writes.
DEFAULT_PATTERN = 0xCD

_UNITS = (
    (" EiB", 1 << 60),
    (" PiB", 1 << 50),
    (" TiB", 1 << 40),
    (" GiB", 1 << 30),
    (" MiB", 1 << 20),
    (" KiB", 1 << 10),
)
_SUFFIX = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_SIZE_RE = re.compile(r"(\d+)(?:\.(\d+))?([a-zA-Z]?)\Z")
PREALLOC_MODES = ("off", "metadata", "falloc", "full")


class Usage(Exception):
    """A command's arguments are wrong; its message (maybe empty) is printed
    before the usage line."""


class Failed(Exception):
    """A command stops after printing its message."""


# ------------------------------------------------------------------ formats


def cvtstr(value: float) -> str:
    """qemu-io's human size: ``64 KiB``, ``1.500 KiB``, ``2 bytes``."""
    suffix = " bytes"
    for name, mul in _UNITS:
        if value >= mul:
            value /= mul
            suffix = name
            break
    text = f"{value:.3f}"
    return text[:-4] + suffix if text.endswith(".000") else text + suffix


def timestr(seconds: float) -> str:
    """qemu-io's elapsed time: ``00.00 sec`` under a second, else ``H:MM:SS.ss``."""
    whole = int(seconds)
    frac = seconds - whole
    if whole == 0:
        return f"{frac:05.2f} sec"
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60 + frac:05.2f}"


def report(verb: str, offset: int, count: int, total: int, elapsed: float) -> str:
    """The two lines after a successful read, write or discard."""
    elapsed = max(elapsed, 1e-9)
    return (
        f"{verb} {count}/{total} bytes at offset {offset}\n"
        f"{cvtstr(total)}, 1 ops; {timestr(elapsed)} "
        f"({cvtstr(total / elapsed)}/sec and {1 / elapsed:.4f} ops/sec)\n"
    )


def hexdump(data: bytes, offset: int) -> str:
    """``read -v``'s dump: 16 bytes a line, alphanumerics shown."""
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i : i + 16]
        hexes = "".join(f"{b:02x} " for b in chunk)
        text = "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else "." for b in chunk)
        lines.append(f"{offset + i:08x}:  {hexes} {text}\n")
    return "".join(lines)


# ------------------------------------------------------------------ numbers


def cvtnum(text: str) -> int:
    """QEMU's size syntax (qemu_strtosz): decimal with an optional fraction
    and a binary suffix, or hex without either.

    Raises Failed with qemu-io's ``Parsing error`` line.
    """
    too_large = f"Parsing error: argument too large -- {text}\n"
    bad = f"Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {text}\n"
    if text.startswith("-"):
        raise Failed(too_large)
    if text[:2].lower() == "0x":
        digits = text[2:]
        if not digits or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise Failed(bad)
        value = int(digits, 16)
    else:
        match = _SIZE_RE.match(text)
        if match is None:
            raise Failed(bad)
        whole, frac, suffix = match.groups()
        if suffix and suffix.lower() not in _SUFFIX:
            raise Failed(bad)
        shift = _SUFFIX[suffix.lower()] if suffix else 0
        if frac is not None and not suffix:
            raise Failed(bad)
        value = int(whole) << shift
        if frac is not None:
            value += int(int(frac) * (1 << shift) // 10 ** len(frac))
    if value >= 1 << 63:
        raise Failed(too_large)
    return value


def parse_pattern(text: str) -> int:
    """``-P``'s byte, parsed as C's ``strtol(text, NULL, 0)``.  Raises Failed."""
    match = re.fullmatch(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    value = -1
    if match:
        sign, digits = match.groups()
        if digits[:2].lower() == "0x":
            value = int(digits, 16)
        elif digits.startswith("0"):
            value = int(digits, 8)
        else:
            value = int(digits)
        value = -value if sign == "-" else value
    if not 0 <= value <= 0xFF:
        raise Failed(f"{text} is not a valid pattern byte\n")
    return value


def getopt(name: str, args: list[str], optstring: str) -> tuple[list[tuple[str, str]], list[str]]:
    """GNU getopt with argument permutation: (options, operands).

    Raises Usage with getopt's complaint for an unknown option or a
    missing option argument.
    """
    opts: list[tuple[str, str]] = []
    operands: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            operands += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)
            continue
        j = 1
        while j < len(arg):
            c = arg[j]
            j += 1
            pos = optstring.find(c)
            if c == ":" or pos < 0:
                raise Usage(f"{name}: invalid option -- '{c}'\n")
            if optstring[pos + 1 : pos + 2] != ":":
                opts.append((c, ""))
                continue
            if j < len(arg):
                opts.append((c, arg[j:]))
            elif i < len(args):
                opts.append((c, args[i]))
                i += 1
            else:
                raise Usage(f"{name}: option requires an argument -- '{c}'\n")
            break
    return opts, operands


# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class Context:
    """What a command works on; ``out`` collects its text."""

    backend: BlockBackend
    out: list[str]
    clock: Callable[[], float]


Handler = Callable[[Context, str, list[str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Handler
    argmin: int
    argmax: int  # -1: no limit
    usage: str
    perm: int = 0
    alias: str | None = None


def _io_error(verb: str, err: BlockIOError) -> Failed:
    return Failed(f"{verb} failed: {err.desc}\n")


async def _timed(ctx: Context, io: Awaitable[object]) -> float:
    start = ctx.clock()
    await io
    return ctx.clock() - start


def _fill(ctx_len: int, pattern: int) -> bytes:
    return bytes([pattern]) * ctx_len


def _source_file(path: str, length: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(length)
    except OSError as err:
        raise Failed(f"{path}: {err.strerror}\n") from None
    if not data:
        return bytes(length)
    return (data * (length // len(data) + 1))[:length]


async def cmd_write(ctx: Context, name: str, args: list[str]) -> None:
    opts, operands = getopt(name, args, "bcCfnpP:qrs:uz")
    pattern = DEFAULT_PATTERN
    flags = {c for c, _ in opts}
    source = ""
    for c, value in opts:
        if c == "P":
            pattern = parse_pattern(value)
        elif c == "s":
            source = value
    if len(operands) != 2:
        raise Usage("")
    z, vmstate, compressed = "z" in flags, "b" in flags, "c" in flags
    if vmstate and z:
        raise Failed("-b and -z cannot be specified at the same time\n")
    if "f" in flags and (vmstate or compressed):
        raise Failed("-f and -b or -c cannot be specified at the same time\n")
    if "n" in flags and not z:
        raise Failed("-n requires -z to be specified\n")
    if "u" in flags and not z:
        raise Failed("-u requires -z to be specified\n")
    if z + ("P" in flags) + ("s" in flags) > 1:
        raise Failed("Only one of -z, -P, and -s can be specified at the same time\n")
    offset = cvtnum(operands[0])
    count = cvtnum(operands[1])
    if count > REQUEST_MAX_BYTES and "n" not in flags:
        raise Failed(f"length cannot exceed {REQUEST_MAX_BYTES} without -n, given {operands[1]}\n")
    backend = ctx.backend
    try:
        if vmstate or compressed:
            # The VM state and compressed writes need formats qmpd lacks.
            raise BlockIOError(errno.ENOTSUP)
        if z:
            elapsed = await _timed(ctx, backend.write_zeroes(offset, count, "u" in flags))
        else:
            data = _source_file(source, count) if source else _fill(count, pattern)
            elapsed = await _timed(ctx, backend.write(offset, data))
    except BlockIOError as err:
        raise _io_error("write", err) from None
    if "q" not in flags:
        ctx.out.append(report("wrote", offset, count, count, elapsed))


async def cmd_read(ctx: Context, name: str, args: list[str]) -> None:
    opts, operands = getopt(name, args, "abCl:pP:qrs:v")
    flags = {c for c, _ in opts}
    pattern = 0
    pattern_offset = 0
    pattern_count: int | None = None
    for c, value in opts:
        if c == "P":
            pattern = parse_pattern(value)
        elif c == "l":
            pattern_count = cvtnum(value)
        elif c == "s":
            pattern_offset = cvtnum(value)
    if len(operands) != 2:
        raise Usage("")
    offset = cvtnum(operands[0])
    count = cvtnum(operands[1])
    if count > REQUEST_MAX_BYTES:
        raise Failed(f"length cannot exceed {REQUEST_MAX_BYTES}, given {operands[1]}\n")
    if "P" not in flags and ("l" in flags or "s" in flags):
        raise Usage("")
    if pattern_count is None:
        pattern_count = count - pattern_offset
    if pattern_count < 0 or pattern_count + pattern_offset > count:
        raise Failed("pattern verification range exceeds end of read data\n")
    try:
        if "b" in flags:
            raise BlockIOError(errno.ENOTSUP)
        start = ctx.clock()
        data = await ctx.backend.read(offset, count)
        elapsed = ctx.clock() - start
    except BlockIOError as err:
        raise _io_error("read", err) from None
    if "P" in flags:
        region = data[pattern_offset : pattern_offset + pattern_count]
        if region != bytes([pattern]) * pattern_count:
            ctx.out.append(
                f"Pattern verification failed at offset {offset + pattern_offset}, "
                f"{pattern_count} bytes\n"
            )
    if "q" in flags:
        return
    if "v" in flags:
        ctx.out.append(hexdump(data, offset))
    ctx.out.append(report("read", offset, count, count, elapsed))


def _lengths(texts: list[str]) -> list[int]:
    return [cvtnum(t) for t in texts]


async def cmd_aio_write(ctx: Context, name: str, args: list[str]) -> None:
    opts, operands = getopt(name, args, "CfiqrP:uz")
    flags = {c for c, _ in opts}
    pattern = DEFAULT_PATTERN
    for c, value in opts:
        if c == "P":
            pattern = parse_pattern(value)
    if len(operands) < 2:
        raise Usage("")
    z = "z" in flags
    if z and len(operands) != 2:
        raise Failed("-z supports only a single length parameter\n")
    if "u" in flags and not z:
        raise Failed("-u requires -z to be specified\n")
    if z and "P" in flags:
        raise Failed("-z and -P cannot be specified at the same time\n")
    offset = cvtnum(operands[0])
    total = sum(_lengths(operands[1:]))
    try:
        if z:
            elapsed = await _timed(ctx, ctx.backend.write_zeroes(offset, total, "u" in flags))
        else:
            elapsed = await _timed(ctx, ctx.backend.write(offset, _fill(total, pattern)))
    except BlockIOError as err:
        raise Failed(f"aio_write failed: {err.desc}\n") from None
    if "q" not in flags:
        ctx.out.append(report("wrote", offset, total, total, elapsed))


async def cmd_aio_read(ctx: Context, name: str, args: list[str]) -> None:
    opts, operands = getopt(name, args, "CiqrP:v")
    flags = {c for c, _ in opts}
    pattern = 0
    for c, value in opts:
        if c == "P":
            pattern = parse_pattern(value)
    if len(operands) < 2:
        raise Usage("")
    offset = cvtnum(operands[0])
    total = sum(_lengths(operands[1:]))
    try:
        start = ctx.clock()
        data = await ctx.backend.read(offset, total)
        elapsed = ctx.clock() - start
    except BlockIOError as err:
        raise Failed(f"readv failed: {err.desc}\n") from None
    if "P" in flags and data != bytes([pattern]) * total:
        ctx.out.append(f"Pattern verification failed at offset {offset}, {total} bytes\n")
    if "q" in flags:
        return
    if "v" in flags:
        ctx.out.append(hexdump(data, offset))
    ctx.out.append(report("read", offset, total, total, elapsed))


async def cmd_discard(ctx: Context, name: str, args: list[str]) -> None:
    opts, operands = getopt(name, args, "Cq")
    if len(operands) != 2:
        raise Usage("")
    offset = cvtnum(operands[0])
    count = cvtnum(operands[1])
    if count > REQUEST_MAX_BYTES:
        raise Failed(f"length cannot exceed {REQUEST_MAX_BYTES}, given {operands[1]}\n")
    try:
        elapsed = await _timed(ctx, ctx.backend.discard(offset, count))
    except BlockIOError as err:
        raise _io_error("discard", err) from None
    if ("q", "") not in opts:
        ctx.out.append(report("discard", offset, count, count, elapsed))


async def cmd_flush(ctx: Context, name: str, args: list[str]) -> None:
    try:
        await ctx.backend.flush()
    except BlockIOError as err:
        raise _io_error("flush", err) from None


async def cmd_truncate(ctx: Context, name: str, args: list[str]) -> None:
    opts, operands = getopt(name, args, "m:")
    for _, mode in opts:
        if mode not in PREALLOC_MODES:
            raise Failed(f"Invalid preallocation mode '{mode}'\n")
    if len(operands) != 1:
        raise Usage("")
    size = cvtnum(operands[0])
    try:
        await ctx.backend.truncate(size)
    except BlockIOError as err:
        if err.errno == errno.ENOTSUP:
            raise Failed("Image format driver does not support resize\n") from None
        raise Failed(f"{err.desc}\n") from None


async def cmd_length(ctx: Context, name: str, args: list[str]) -> None:
    ctx.out.append(f"{cvtstr(ctx.backend.node.size)}\n")


async def _allocated(backend: BlockBackend, offset: int, length: int) -> list[tuple[int, bool]]:
    """(length, allocated) runs over the range, neighbours of one kind merged."""
    runs: list[tuple[int, bool]] = []
    for ext in await backend.node.block_status(offset, length):
        if runs and runs[-1][1] == ext.present:
            runs[-1] = (runs[-1][0] + ext.length, ext.present)
        else:
            runs.append((ext.length, ext.present))
    return runs


async def cmd_map(ctx: Context, name: str, args: list[str]) -> None:
    offset = 0
    try:
        runs = await _allocated(ctx.backend, 0, ctx.backend.node.size)
    except BlockIOError as err:
        raise Failed(f"Failed to get allocation status: {err.desc}\n") from None
    for length, allocated in runs:
        state = "    allocated" if allocated else "not allocated"
        ctx.out.append(
            f"{cvtstr(length)} ({length:#x}) bytes {state} at offset "
            f"{cvtstr(offset)} ({offset:#x})\n"
        )
        offset += length


async def cmd_alloc(ctx: Context, name: str, args: list[str]) -> None:
    offset = cvtnum(args[0])
    count = cvtnum(args[1]) if len(args) > 1 else 512
    size = ctx.backend.node.size
    # Past the end the range is cut short, as bdrv_is_allocated stops there.
    count = max(0, min(count, size - offset))
    try:
        runs = await _allocated(ctx.backend, offset, count) if count else []
    except BlockIOError as err:
        raise Failed(f"is_allocated failed: {err.desc}\n") from None
    allocated = sum(length for length, is_alloc in runs if is_alloc)
    ctx.out.append(f"{allocated}/{count} bytes allocated at offset {cvtstr(offset)}\n")


async def cmd_aio_flush(ctx: Context, name: str, args: list[str]) -> None:
    # Requests complete before each command returns: nothing is pending.
    return None


_COMMANDS = (
    Command(
        "read",
        cmd_read,
        2,
        -1,
        "[-abCqrv] [-P pattern [-s off] [-l len]] off len -- "
        "reads a number of bytes at a specified offset",
        alias="r",
    ),
    Command(
        "write",
        cmd_write,
        2,
        -1,
        "[-bcCfnqruz] [-P pattern | -s source_file] off len -- "
        "writes a number of bytes at a specified offset",
        Perm.WRITE,
        alias="w",
    ),
    Command(
        "aio_read",
        cmd_aio_read,
        2,
        -1,
        "[-Ciqrv] [-P pattern] off len [len..] -- asynchronously reads a number of bytes",
    ),
    Command(
        "aio_write",
        cmd_aio_write,
        2,
        -1,
        "[-Cfiqruz] [-P pattern] off len [len..] -- asynchronously writes a number of bytes",
        Perm.WRITE,
    ),
    Command("aio_flush", cmd_aio_flush, 0, 0, "-- completes all outstanding aio requests"),
    Command(
        "discard",
        cmd_discard,
        2,
        -1,
        "[-Cq] off len -- discards a number of bytes at a specified offset",
        Perm.WRITE,
        alias="d",
    ),
    Command("flush", cmd_flush, 0, 0, "-- flush all in-core file state to disk", alias="f"),
    Command(
        "truncate",
        cmd_truncate,
        1,
        3,
        "[-m prealloc_mode] off -- truncates the current file at the given offset",
        Perm.WRITE | Perm.RESIZE,  # qemu-io's truncate asks for both
        alias="t",
    ),
    Command("length", cmd_length, 0, 0, "-- gets the length of the current file", alias="l"),
    Command("map", cmd_map, 0, 0, " -- prints the allocated areas of a file"),
    Command(
        "alloc",
        cmd_alloc,
        1,
        2,
        "offset [count] -- checks if offset is allocated in the file",
        alias="a",
    ),
)
COMMANDS: dict[str, Command] = {}
for _cmd in _COMMANDS:
    COMMANDS[_cmd.name] = _cmd
    if _cmd.alias:
        COMMANDS[_cmd.alias] = _cmd


def _count_error(name: str, cmd: Command, given: int) -> str:
    if cmd.argmax == -1:
        return f"bad argument count {given} to {name}, expected at least {cmd.argmin} arguments\n"
    if cmd.argmin == cmd.argmax:
        return f"bad argument count {given} to {name}, expected {cmd.argmin} arguments\n"
    return (
        f"bad argument count {given} to {name}, expected between "
        f"{cmd.argmin} and {cmd.argmax} arguments\n"
    )


async def run_command(
    graph: BlockGraph,
    backend: BlockBackend,
    line: str,
    clock: Callable[[], float] = time.perf_counter,
) -> str:
    """Run one qemu-io command line on ``backend``; return what qemu-io prints.

    Never raises for the user's mistakes or I/O errors: they are part of
    the text, as qemu-io prints them.
    """
    argv = [word for word in line.split(" ") if word]
    if not argv:
        return ""
    name, args = argv[0], argv[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        return f'command "{name}" not found\n'
    if len(args) < cmd.argmin or (cmd.argmax != -1 and len(args) > cmd.argmax):
        return _count_error(name, cmd, len(args))
    if cmd.perm:
        user = backend.user
        if user.perm & cmd.perm != cmd.perm:
            try:
                backend.set_perm(graph, user.perm | cmd.perm, user.shared)
            except GenericError as err:
                return f"{err.desc}\n"
    ctx = Context(backend, [], clock)
    try:
        await cmd.handler(ctx, name, args)
    except Usage as usage:
        ctx.out.append(f"{usage}{cmd.name} {cmd.usage}\n")
    except Failed as failed:
        ctx.out.append(str(failed))
    return "".join(ctx.out)


__all__ = [
    "COMMANDS",
    "DEFAULT_PATTERN",
    "REQUEST_MAX_BYTES",
    "cvtnum",
    "cvtstr",
    "getopt",
    "hexdump",
    "parse_pattern",
    "report",
    "run_command",
    "timestr",
]
