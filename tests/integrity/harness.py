"""What the integrity tests share: a qmpd process and its client, QEMU's
tools, and a byte model of what an image must hold.

The tests judge qmpd from outside, as a user would: every claim (an
extent said to read as zero, a node said to be all zero, a write
acknowledged) is checked by reading the bytes back, through the daemon
(HMP ``qemu-io``) while it runs and with QEMU's own ``qemu-img`` once it
has stopped or been killed.

:class:`Content` is the model.  A byte is either *known* (the value every
read must return: an acknowledged write put it there, or nothing touched
it) or unknown (a write that failed, or that was in flight when the
daemon died, may or may not have landed).  Checks compare known bytes
only; zero claims are checked against what the image really returns,
known or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.mirror.procs import SyncClient
from tests.support.daemons import Daemon, RawClient, qmpd_kind, running
from tests.support.qemu_tools import new_tool, system_tool, why_system_missing

KiB = 1 << 10
MiB = 1 << 20

def _tool(name: str) -> str | None:
    """The reference QEMU's tool where it is set up (files must be under
    /tmp), else Debian's."""
    return new_tool(name) or system_tool(name)


QEMU_IMG = _tool("qemu-img")
QEMU_IO = _tool("qemu-io")
needs_tools = pytest.mark.skipif(
    QEMU_IMG is None or QEMU_IO is None,
    reason=why_system_missing("qemu-img" if QEMU_IMG is None else "qemu-io"),
)

#: Soak mode (``scripts/soak``): many more examples and kills.
SOAK = bool(os.environ.get("QMPD_SOAK"))


def env_int(name: str, default: int, soak: int) -> int:
    """``$name`` if set, else ``soak`` in soak mode, else ``default``."""
    value = os.environ.get(name)
    if value:
        return int(value)
    return soak if SOAK else default


# ------------------------------------------------------------------ the model


class Content:
    """What an image of ``size`` bytes must read as; see the module docstring."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self.known = bytearray(b"\x01") * size

    @property
    def size(self) -> int:
        return len(self.data)

    def copy(self) -> Content:
        other = Content(0)
        other.data = bytearray(self.data)
        other.known = bytearray(self.known)
        return other

    def write(self, offset: int, length: int, byte: int) -> None:
        """An acknowledged write of ``length`` bytes of ``byte``."""
        end = min(offset + length, self.size)
        self.data[offset:end] = bytes([byte]) * (end - offset)
        self.known[offset:end] = b"\x01" * (end - offset)

    def forget(self, offset: int = 0, length: int | None = None) -> None:
        """The range may hold anything now (a failed or unacknowledged write)."""
        end = self.size if length is None else min(offset + length, self.size)
        self.known[offset:end] = bytes(end - offset)

    def maybe_zero(self) -> int:
        """An int whose byte i is 1 where the image may read 0 (a known
        zero, or an unknown byte); use with :func:`count_ones`."""
        zero = int.from_bytes(self.data.translate(_IS_ZERO), "big")
        unknown = int.from_bytes(self.known.translate(_IS_ZERO), "big")
        return zero | unknown

    def runs(self) -> Iterator[tuple[int, int, int]]:
        """``(offset, length, byte)`` for each run of known, equal bytes."""
        # Where byte i differs from byte i + 1, found in C (big-int XOR).
        data = bytes(self.data)
        shifted = int.from_bytes(data[:-1], "big") ^ int.from_bytes(data[1:], "big")
        changes = [m.start() + 1 for m in _CHANGE.finditer(shifted.to_bytes(self.size - 1, "big"))]
        for known in _ONES.finditer(self.known):
            start, end = known.start(), known.end()
            cuts = [c for c in changes if start < c < end]
            for lo, hi in zip([start, *cuts], [*cuts, end], strict=True):
                yield lo, hi - lo, data[lo]

    def mismatches(self, actual: bytes) -> list[tuple[int, int, int]]:
        """Known bytes ``actual`` gets wrong: ``(offset, expected, found)``,
        the first of each differing run (at most 8)."""
        assert len(actual) >= self.size, (len(actual), self.size)
        # Per byte: (actual XOR expected) AND (0xff where known), as big ints.
        diff = int.from_bytes(actual[: self.size], "big") ^ int.from_bytes(self.data, "big")
        diff &= int.from_bytes(self.known, "big") * 0xFF
        if not diff:
            return []
        text = diff.to_bytes(self.size, "big")
        bad = []
        for run in _NONZERO.finditer(text):
            pos = run.start()
            bad.append((pos, self.data[pos], actual[pos]))
            if len(bad) >= 8:
                break
        return bad


_IS_ZERO = bytes([1] + [0] * 255)


def count_ones(mask: int, size: int) -> int:
    """How many bytes of a :meth:`Content.maybe_zero` mask are 1."""
    return mask.to_bytes(size, "big").count(1)


_ONES = re.compile(b"\x01+")
_CHANGE = re.compile(b"[^\\x00]")
_NONZERO = re.compile(b"[^\x00]+")


# ------------------------------------------------------------------ QEMU's tools


def tool(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def img_create(path: Path, fmt: str, size: int, *options: str) -> None:
    assert QEMU_IMG is not None
    opts = ["-o", ",".join(options)] if options else []
    tool(QEMU_IMG, "create", "-q", "-f", fmt, *opts, str(path), str(size))


def outside_io(path: Path, fmt: str, *commands: str) -> subprocess.CompletedProcess[str]:
    """Run ``qemu-io`` on ``path`` in a process of its own (not checked)."""
    assert QEMU_IO is not None
    args = [QEMU_IO, "-f", fmt]
    for command in commands:
        args += ["-c", command]
    return tool(*args, str(path), check=False)


def lock_refused(result: subprocess.CompletedProcess[str]) -> bool:
    """Whether ``qemu-io`` was refused its image lock (another process has it)."""
    refused = re.search(r'Failed to get "[a-z -]+" lock', result.stderr)
    return result.returncode != 0 and refused is not None


def image_bytes(path: Path, fmt: str, scratch: Path, *, force_share: bool = False) -> bytes:
    """The guest-visible content of an image, as ``qemu-img convert`` reads it."""
    assert QEMU_IMG is not None
    out = scratch / f"{path.name}.content"
    share = ["-U"] if force_share else []
    tool(QEMU_IMG, "convert", *share, "-f", fmt, "-O", "raw", str(path), str(out))
    data = out.read_bytes()
    out.unlink()
    return data


def img_check(path: Path) -> dict[str, Any]:
    """``qemu-img check`` of a qcow2 image: its JSON report, with
    ``returncode`` added (``{"unreadable": text}`` when it cannot open it)."""
    assert QEMU_IMG is not None
    result = tool(QEMU_IMG, "check", "--output=json", "-f", "qcow2", str(path), check=False)
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        text = (result.stdout + result.stderr).strip()
        return {"unreadable": text, "returncode": result.returncode}
    report["returncode"] = result.returncode
    return report


def img_dirty(path: Path) -> bool:
    """Whether a qcow2 image's dirty bit is set (``qemu-img info``)."""
    assert QEMU_IMG is not None
    result = tool(QEMU_IMG, "info", "-U", "--output=json", "-f", "qcow2", str(path))
    return bool(json.loads(result.stdout).get("dirty-flag"))


def corrupted(report: dict[str, Any]) -> bool:
    """Corruptions or check errors (leaked clusters are allowed)."""
    return bool(report.get("corruptions", 0) or report.get("check-errors", 0))


def img_compare(a: Path, a_fmt: str, b: Path, b_fmt: str) -> str:
    assert QEMU_IMG is not None
    result = tool(
        QEMU_IMG, "compare", "-U", "-f", a_fmt, "-F", b_fmt, str(a), str(b), check=False
    )
    return (result.stdout + result.stderr).strip()


# ------------------------------------------------------------------ the daemon


class QmpdError(AssertionError):
    """A command the test expected to succeed was refused."""


class Client(SyncClient):
    """SyncClient plus the calls these tests repeat."""

    def ok(self, command: str, **arguments: Any) -> Any:
        """The command's return; an error reply raises :class:`QmpdError`."""
        result = self.execute(command, **arguments)
        if isinstance(result, dict) and "class" in result and "desc" in result:
            raise QmpdError(f"{command} {arguments}: {result['desc']}")
        return result

    def try_(self, command: str, **arguments: Any) -> tuple[Any, str | None]:
        """``(return, None)`` or ``(None, error text)``."""
        result = self.execute(command, **arguments)
        if isinstance(result, dict) and "class" in result and "desc" in result:
            return None, str(result["desc"])
        return result, None

    def io(self, target: str, command: str, *, device: bool = False) -> str:
        """HMP ``qemu-io [-d] TARGET "COMMAND"``: qemu-io's output."""
        flag = "-d " if device else ""
        out = self.ok("human-monitor-command", command_line=f'qemu-io {flag}{target} "{command}"')
        return str(out).replace("\r\n", "\n")

    def reply(self) -> Any:
        """Read on (keeping events) to the next reply: its return or error."""
        while True:
            message = self._read()
            if "event" not in message:
                return message.get("return", message.get("error"))

    def burst(self, *requests: tuple[str, dict[str, Any]]) -> list[Any]:
        """Send the commands in one write (the daemon reads them together);
        each one's return or error object, in order."""
        data = b""
        for n, (command, arguments) in enumerate(requests):
            data += request(command, msg_id=f"burst-{n}", **arguments)
        self.raw.send(data)
        replies: dict[str, Any] = {}
        while len(replies) < len(requests):
            message = self._read()
            if "event" not in message:
                replies[message["id"]] = message.get("return", message.get("error"))
        return [replies[f"burst-{n}"] for n in range(len(requests))]

    def job_event(self, job: str, *names: str) -> dict[str, Any]:
        """Take the first unread one of the events ``names`` for job ``job``
        (BLOCK_JOB_* name it ``device``, JOB_STATUS_CHANGE ``id``); other
        events stay for later calls."""
        pos = 0
        while True:
            while pos < len(self.events):
                message = self.events[pos]
                data = message["data"]
                if message["event"] in names and job in (data.get("device"), data.get("id")):
                    del self.events[pos]
                    return message
                pos += 1
            self._read()

    def create(self, job: str, options: dict[str, Any]) -> str | None:
        """blockdev-create to its end; None, or the job's error."""
        _, err = self.try_("blockdev-create", job_id=job, options=options)
        if err is not None:
            return err
        while True:
            event = self.job_event(job, "JOB_STATUS_CHANGE")
            if event["data"]["status"] == "concluded":
                break
        (info,) = [j for j in self.ok("query-jobs") if j["id"] == job]
        self.ok("job-dismiss", id=job)
        return info.get("error")


def request(command: str, *, msg_id: str | None = None, **arguments: Any) -> bytes:
    """One QMP command as bytes (``_`` in argument names becomes ``-``)."""
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
    if msg_id is not None:
        message["id"] = msg_id
    return json.dumps(message).encode()


def hang_up_after(socket_path: str, command: str, **arguments: Any) -> None:
    """A second client that negotiates and sends ``command`` in one write,
    then closes its socket without reading a reply."""
    with RawClient(socket_path) as gone:
        gone.greeting()
        gone.send(request("qmp_capabilities") + request(command, **arguments))


@dataclass
class Qmpd:
    """One qmpd process and a client on its socket."""

    daemon: Daemon
    client: Client
    stack: ExitStack = field(repr=False)

    @classmethod
    def start(cls, timeout: float = 20.0) -> Qmpd:
        """Start one; a reply or event taking longer than ``timeout`` seconds
        fails the test (socket.timeout) rather than hanging it."""
        stack = ExitStack()
        try:
            daemon = stack.enter_context(running(qmpd_kind()))
            client = Client(daemon.sockets[0], timeout=timeout)
            stack.callback(client.close)
        except BaseException:
            stack.close()
            raise
        return cls(daemon, client, stack)

    @property
    def pid(self) -> int:
        return self.daemon.proc.pid

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.daemon.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.daemon.proc.wait()

    def quit(self) -> int:
        """``quit``, and the exit status."""
        with contextlib.suppress(EOFError, OSError):  # it may hang up before the reply
            self.client.execute("quit")
        return self.daemon.proc.wait(timeout=60)

    def terminate(self) -> int:
        """SIGTERM, and the exit status."""
        os.kill(self.pid, signal.SIGTERM)
        return self.daemon.proc.wait(timeout=60)

    def close(self) -> None:
        self.stack.close()


# ------------------------------------------------------------------ claims


_FAILED = re.compile(r"(read|write|flush) failed|Pattern verification failed|Error:")


def io_failed(out: str) -> bool:
    return bool(_FAILED.search(out))


def read_matches(client: Client, node: str, offset: int, length: int, byte: int) -> str | None:
    """None if ``node`` reads ``byte`` over the range; else qemu-io's text."""
    out = client.io(node, f"read -q -P {byte:#x} {offset} {length}")
    return out if out.strip() else None


def zero_claims(
    client: Client, node: str, *, faults: bool = False
) -> list[tuple[int, int, str]]:
    """``(offset, length, why)`` for every range qmpd says reads as zero:
    the whole node when x-query-zero-state says ``open: true``, and each
    x-blockdev-map extent with ``zero: true``.  With ``faults`` (blkdebug
    fails requests below the node) a query may fail instead: no claim."""
    extents, err = client.try_("x-blockdev-map", node_name=node)
    if err is not None:
        assert faults, (node, err)
        return []
    claims = [(e["start"], e["length"], f"x-blockdev-map {e}") for e in extents if e["zero"]]
    states, err = client.try_("x-query-zero-state", node_name=node)
    if err is not None:
        assert faults, (node, err)
        return claims
    (state,) = states
    if state["open"]["value"]:
        size = sum(e["length"] for e in extents)
        claims.append((0, size, f"x-query-zero-state open ({state['open']['how']})"))
    return claims


def false_zero_claims(
    client: Client,
    node: str,
    read_node: str | None = None,
    *,
    data: list[tuple[int, int]] | None = None,
    faults: bool = False,
) -> list[str]:
    """The claims of :func:`zero_claims` on ``node`` that a read (of
    ``read_node``, which holds the same bytes, by default ``node``)
    disproves.  A claim longer than :data:`READ_LIMIT` is read where
    ``data`` (QEMU's map of the image: the ranges that may hold non-zero
    bytes) says, and at its head and tail."""
    wrong = []
    for offset, length, why in zero_claims(client, node, faults=faults):
        for start, count in _pieces(offset, length, data):
            out = read_matches(client, read_node or node, start, count, 0)
            if out is not None and "Pattern verification failed" in out:
                wrong.append(f"{node} [{offset}, +{length}) claimed zero by {why}: {out.strip()}")
                break
    return wrong


#: Zero claims up to this long are read whole.
READ_LIMIT = 64 * MiB


def _pieces(
    offset: int, length: int, data: list[tuple[int, int]] | None
) -> Iterator[tuple[int, int]]:
    end = offset + length
    if length <= READ_LIMIT or data is None:
        if length:
            yield offset, length
        return
    yield offset, MiB
    yield end - MiB, MiB
    for start, count in data:
        lo, hi = max(start, offset), min(start + count, end)
        while lo < hi:
            piece = min(hi - lo, READ_LIMIT)
            yield lo, piece
            lo += piece


def qemu_data(path: Path, fmt: str = "qcow2") -> list[tuple[int, int]]:
    """The ranges of an image that ``qemu-img map`` says may not read as zero."""
    assert QEMU_IMG is not None
    result = tool(QEMU_IMG, "map", "-U", "--output=json", "-f", fmt, str(path))
    return [(e["start"], e["length"]) for e in json.loads(result.stdout) if not e["zero"]]


def content_errors(client: Client, node: str, content: Content) -> list[str]:
    """Known runs of ``content`` that ``node`` does not read back (reads
    that fail, e.g. by an injected error, are not counted)."""
    wrong = []
    for offset, length, byte in content.runs():
        out = read_matches(client, node, offset, length, byte)
        if out is not None and "Pattern verification failed" in out:
            wrong.append(f"{node} [{offset}, +{length}) should read {byte:#x}: {out.strip()}")
            if len(wrong) >= 4:
                break
    return wrong
