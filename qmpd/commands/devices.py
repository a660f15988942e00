"""Guest devices and what a guest would do with them: device_add,
device_del, query-block, and human-monitor-command's ``qemu-io``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..block.backend import BlockBackend, Device
from ..block.info import block_device_info
from ..block.node import PERM_ALL
from ..block.qemu_io import run_command
from ..errors import GenericError
from .table import CommandTable

if TYPE_CHECKING:
    from ..app import CommandContext

table = CommandTable()


@table.command("device_add")
def device_add(ctx: CommandContext, **props: Any) -> None:
    # 'gen': false: the arguments arrive unchecked; the device set checks
    # them as QEMU's qdev code does.  Put QMP's spelling back first.
    ctx.app.devices.add(ctx.app.graph, {k.replace("_", "-"): v for k, v in props.items()})


@table.command("device_del")
def device_del(ctx: CommandContext, id: str) -> None:
    for data in ctx.app.devices.delete(ctx.app.graph, id):
        ctx.app.events.emit("DEVICE_DELETED", data)


def block_info(dev: Device, *, flat: bool) -> dict[str, Any]:
    """BlockInfo of a disk, as qemu-system 11.1 shows a hot-plugged one."""
    info: dict[str, Any] = {
        "device": "",
        "qdev": dev.qdev,
        "type": "unknown",
        "removable": False,
        "locked": False,
    }
    if dev.backend is not None:
        # QEMU skips filters it inserted itself (a mirror's unnamed
        # mirror_top) in query-block, not in query-named-block-nodes.
        node = dev.backend.node
        while getattr(node, "implicit", False):
            node = node.children["backing"]
        info["inserted"] = block_device_info(node, flat=flat)
    # Disks enable I/O status tracking and default to werror=enospc.
    info["io-status"] = "ok"
    return info


@table.command("query-block")
def query_block(ctx: CommandContext, flat: bool = False) -> list[dict[str, Any]]:
    return [block_info(dev, flat=flat) for dev in ctx.app.devices if dev.backend is not None]


# ------------------------------------------------------------------ HMP


class HMPError(Exception):
    """A human-monitor argument error; the text is what HMP prints."""


def _skip_space(line: str, pos: int) -> int:
    while pos < len(line) and line[pos].isspace():
        pos += 1
    return pos


_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "r": "\r"}


def _word(line: str, pos: int) -> tuple[str, int] | None:
    """HMP's string argument: a quoted string with C escapes, or a word."""
    pos = _skip_space(line, pos)
    if pos >= len(line):
        return None
    if line[pos] != '"':
        end = pos
        while end < len(line) and not line[end].isspace():
            end += 1
        return line[pos:end], end
    out = []
    pos += 1
    while pos < len(line) and line[pos] != '"':
        c = line[pos]
        if c == "\\":
            pos += 1
            if pos >= len(line):
                raise HMPError("unterminated string")
            c = _ESCAPES.get(line[pos], "")
            if not c:
                raise HMPError(f"unsupported escape code: '\\{line[pos]}'")
        out.append(c)
        pos += 1
    if pos >= len(line):
        raise HMPError("unterminated string")
    return "".join(out), pos + 1


def parse_qemu_io(rest: str) -> tuple[bool, str, str]:
    """``[-d] NAME COMMAND`` -> (by qdev, name, command).  Raises HMPError."""
    pos = _skip_space(rest, 0)
    qdev = False
    if rest[pos : pos + 1] == "-":
        flag = rest[pos + 1 : pos + 2]
        if flag != "d":
            raise HMPError(f"unsupported option -{flag}")
        qdev = True
        pos += 2
    name = _word(rest, pos)
    if name is None:
        raise HMPError("block device name expected")
    command = _word(rest, name[1])
    if command is None:
        raise HMPError("string expected")
    if _skip_space(rest, command[1]) < len(rest):
        raise HMPError("extraneous characters at the end of line")
    return qdev, name[0], command[0]


async def hmp_qemu_io(ctx: CommandContext, rest: str) -> str:
    """The ``qemu-io`` HMP command; returns its text with ``\\n`` endings."""
    try:
        qdev, name, command = parse_qemu_io(rest)
    except HMPError as err:
        return f'qemu-io: {err}\nTry "help qemu-io" for more information\n'
    app = ctx.app
    temporary: BlockBackend | None = None
    try:
        if qdev:
            backend = app.devices.find_backend(name)
        else:
            # No BlockBackend has a name in qmpd (devices' are anonymous):
            # go straight to the node, through a temporary backend.
            node = app.graph.get(name)
            if node is None:
                raise GenericError(f"Cannot find device='' nor node-name='{name}'")
            backend = temporary = BlockBackend.attach(app.graph, node, "", 0, PERM_ALL)
    except GenericError as err:
        return f"Error: {err.desc}\n"
    try:
        return await run_command(app.graph, backend, command)
    finally:
        if temporary is not None:
            temporary.detach(app.graph)


@table.command("human-monitor-command")
async def human_monitor_command(
    ctx: CommandContext, command_line: str, cpu_index: int | None = None
) -> str:
    # qmpd models a single CPU, as a machine started with defaults has.
    if cpu_index is not None and cpu_index != 0:
        raise GenericError("Parameter 'cpu-index' expects a CPU number")
    pos = _skip_space(command_line, 0)
    end = pos
    while end < len(command_line) and not command_line[end].isspace():
        end += 1
    name = command_line[pos:end]
    if not name:
        return ""
    if name != "qemu-io":
        text = f"unknown command: '{name}'\n"
    else:
        text = await hmp_qemu_io(ctx, command_line[end:])
    # The human monitor ends its lines with CR LF.
    return text.replace("\n", "\r\n")


__all__ = ["block_info", "parse_qemu_io", "table"]
