"""qmpd and QEMU 11.1 side by side: qcow2 over blkdebug with an injected
metadata or data write failure, and cache.no-flush with a SIGKILL after a
flush.  The same QMP and HMP ``qemu-io`` commands go to both daemons; the
images they leave are then judged with ``qemu-img``."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.mirror.procs import SyncClient
from tests.support.daemons import qmpd_kind, running, wait_for_socket
from tests.support.qemu_tools import new_tool, why_new_missing

from .conftest import IMGS, QEMU_IO, check_clean, check_consistent, img, needs_qemu, run

MiB = 1 << 20


@contextmanager
def _daemon(kind: str, work: Path) -> Iterator[tuple[SyncClient, subprocess.Popen[bytes]]]:
    """qmpd, or QEMU 11.1's emulator (HMP needs it), and a client on it."""
    if kind == "qmpd":
        with running(qmpd_kind()) as daemon:
            client = SyncClient(daemon.sockets[0])
            try:
                yield client, daemon.proc
            finally:
                client.close()
        return
    path = new_tool("qemu-system")
    if path is None:
        pytest.skip(why_new_missing("qemu-system"))
    sock = str(work / "qmp.sock")
    argv = [str(path), "-M", "pc", "-accel", "qtest", "-display", "none", "-nodefaults",
            "-qtest", "null", "-qmp", f"unix:{sock},server=on,wait=off"]  # fmt: skip
    # QEMU prints qemu-io's output on its standard output (once it exits:
    # the stream is buffered), where qmpd returns it in the reply.
    with open(work / "stdout", "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL)
    try:
        wait_for_socket(sock, proc)
        client = SyncClient(sock)
        try:
            yield client, proc
            if proc.poll() is None:
                client.execute("quit")
                proc.wait()
        finally:
            client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _hmp(client: SyncClient, command: str) -> str:
    """qemu-io's output as qmpd returns it ("" from QEMU: see _daemon)."""
    reply = client.execute("human-monitor-command", command_line=f'qemu-io q "{command}"')
    assert isinstance(reply, str), reply
    return reply


def _image(work: Path) -> Path:
    path = work / "a.qcow2"
    img("create", "-f", "qcow2", str(path), "8M")
    return path


def _reads(path: Path, pattern: int, offset: int, length: int) -> bool:
    assert QEMU_IO is not None
    result = run(QEMU_IO, "-c", f"read -P {pattern} {offset} {length}", str(path), check=False)
    return result.returncode == 0 and "Pattern verification failed" not in result.stdout


@needs_qemu
@pytest.mark.parametrize("kind", ["qmpd", "qemu-11.1"])
@pytest.mark.parametrize(
    "event",
    [
        "cluster_alloc",
        "refblock_alloc",
        "refblock_update_part",
        "l2_alloc_write",
        "l2_update",
        "write_aio",
    ],
)
def test_injected_write_failure_leaves_a_valid_image(kind: str, event: str, tmp_path: Path) -> None:
    path = _image(tmp_path)
    with _daemon(kind, tmp_path) as (client, _):
        debug = {
            "driver": "blkdebug",
            "image": {"driver": "file", "filename": str(path)},
            "inject-error": [{"event": event, "iotype": "write", "errno": 28, "once": True}],
        }
        reply = client.execute("blockdev-add", driver="qcow2", node_name="q", file=debug)
        assert reply == {}, reply
        said = _hmp(client, f"write -P 0x11 {MiB} 8k")
        said += _hmp(client, f"write -P 0x22 {MiB} 8k")
        said += _hmp(client, "flush")
        assert client.execute("blockdev-del", node_name="q") == {}
    if kind != "qmpd":
        said = (tmp_path / "stdout").read_text()
    assert said.count("write failed: No space left on device") == 1, said
    check_clean(path)
    assert _reads(path, 0x22, MiB, 8192)


@needs_qemu
@pytest.mark.parametrize("kind", ["qmpd", "qemu-11.1"])
def test_no_flush_keeps_flushed_data_through_sigkill(kind: str, tmp_path: Path) -> None:
    # Issue 10, defect 6, as reported: QEMU 11.1 keeps the data and a clean
    # image; qmpd lost both ranges and left leaks and the dirty bit.
    path = _image(tmp_path)
    with _daemon(kind, tmp_path) as (client, proc):
        file: dict[str, Any] = {"driver": "file", "filename": str(path)}
        reply = client.execute(
            "blockdev-add", driver="qcow2", node_name="q", file=file, cache={"no-flush": True}
        )
        assert reply == {}, reply
        _hmp(client, f"write -P 0x11 {MiB} {MiB}")
        _hmp(client, f"write -P 0x22 {5 * MiB} 64k")
        _hmp(client, "flush")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if IMGS:
        check_clean(path)
    assert _reads(path, 0x11, MiB, MiB)
    assert _reads(path, 0x22, 5 * MiB, 65536)


@needs_qemu
@pytest.mark.parametrize("kind", ["qmpd", "qemu-11.1"])
@pytest.mark.parametrize("once", [False, True], ids=["failing", "once"])
def test_close_after_failed_flush_leaves_the_image_dirty(
    kind: str, once: bool, tmp_path: Path
) -> None:
    # QEMU's close flushes, then writes back and marks the image clean
    # again (qcow2_inactivate), only if that second flush succeeds: a rule
    # that keeps failing flushes leaves the dirty bit set, one used up by
    # the first flush does not.
    path = tmp_path / "a.qcow2"
    img("create", "-f", "qcow2", "-o", "lazy_refcounts=on", str(path), "8M")
    with _daemon(kind, tmp_path) as (client, _):
        rule = {"event": "flush_to_disk", "iotype": "flush", "errno": 5, "once": once}
        debug = {
            "driver": "blkdebug",
            "image": {"driver": "file", "filename": str(path)},
            "inject-error": [rule],
        }
        reply = client.execute("blockdev-add", driver="qcow2", node_name="q", file=debug)
        assert reply == {}, reply
        _hmp(client, "write -P 0x11 0 100k")
        assert client.execute("blockdev-del", node_name="q") == {}
    assert _dirty(path) is not once
    check_consistent(path)
    if once:
        assert _reads(path, 0x11, 0, 100 * 1024)


def _dirty(path: Path) -> bool:
    """Whether the header's dirty bit is set (qemu-img info does not repair)."""
    return bool(json.loads(img("info", "--output=json", str(path)).stdout)["dirty-flag"])
