"""The dirty bit: a qmpd process killed with SIGKILL mid-session leaves an
image that is repaired on the next read-write open (by qmpd or by QEMU) and
never silently corrupt; a clean close leaves it clean."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

from qmpd.block import BlockGraph
from qmpd.block.qcow2.format import parse_header

from .conftest import (
    QEMU_IO,
    check_clean,
    create_image,
    needs_qemu,
    open_qcow2,
    raw_content,
)

MiB = 1 << 20

# Runs in a child process: open, write, flush, write more (making the image
# dirty again), say so, then wait to be killed.
CHILD = r"""
import sys, trio
from qmpd.block import BlockGraph, blockdev_add

async def main(path):
    graph = BlockGraph()
    node = blockdev_add(graph, {"driver": "qcow2", "node-name": "q",
                                "file": {"driver": "file", "filename": path}})
    await node.write(0, b"\x11" * 300_000)
    await node.flush()
    await node.write(2 * 1024 * 1024, b"\x22" * 100_000)
    await node.write(3 * 1024 * 1024 + 7, b"\x33" * 70_000)
    print("ready", flush=True)
    await trio.sleep_forever()

trio.run(main, sys.argv[1])
"""


def _killed_mid_session(path: Path, script: str = CHILD) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def _qemu_open_rw(path: Path) -> subprocess.CompletedProcess[str]:
    assert QEMU_IO is not None
    return subprocess.run([QEMU_IO, "-c", "read 0 4k", str(path)], capture_output=True, text=True)


def _expected() -> bytes:
    data = bytearray(4 * MiB)
    data[0:300_000] = b"\x11" * 300_000
    data[2 * MiB : 2 * MiB + 100_000] = b"\x22" * 100_000
    data[3 * MiB + 7 : 3 * MiB + 70_007] = b"\x33" * 70_000
    return bytes(data)


def _dirty(path: Path) -> bool:
    return parse_header(path.read_bytes()[:65536]).dirty


def _wipe_refcounts(path: Path) -> None:
    # What a power cut could leave: refcount block updates lost.
    raw = bytearray(path.read_bytes())
    h = parse_header(bytes(raw[:65536]))
    (block,) = struct.unpack_from(">Q", raw, h.refcount_table_offset)
    raw[block + 2 * 8 : block + h.cluster_size] = bytes(h.cluster_size - 16)
    path.write_bytes(raw)


async def test_clean_close_clears_the_dirty_bit(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    graph = BlockGraph()
    node = open_qcow2(graph, path)
    await node.write(0, b"x" * 100_000)
    assert _dirty(path)  # metadata changed since the last flush
    await node.flush()
    assert not _dirty(path)
    await node.write(MiB, b"y" * 100_000)
    assert _dirty(path)
    graph.delete("q")  # blockdev-del closes it cleanly
    assert not _dirty(path)


async def test_killed_then_repaired_by_qmpd(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    _killed_mid_session(path)
    assert _dirty(path)
    _wipe_refcounts(path)
    # Read-only: readable as it is.
    graph = BlockGraph()
    node = open_qcow2(graph, path, read_only=True)
    assert await node.read(0, node.size) == _expected()
    graph.close_all()
    # Read-write: the first change rebuilds the refcounts.
    graph = BlockGraph()
    node = open_qcow2(graph, path)
    await node.write(MiB, b"\x44" * 5000)
    content = await node.read(0, node.size)
    graph.close_all()
    assert not _dirty(path)
    expected = bytearray(_expected())
    expected[MiB : MiB + 5000] = b"\x44" * 5000
    assert content == expected
    if QEMU_IO is not None:
        check_clean(path)
        assert raw_content(path, tmp_path) == expected


@needs_qemu
async def test_killed_then_repaired_by_qemu(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    _killed_mid_session(path)
    _wipe_refcounts(path)
    # QEMU repairs a dirty image when it opens it read-write (and says so).
    result = _qemu_open_rw(path)
    assert result.returncode == 0, result.stderr
    assert "Repairing" in result.stdout + result.stderr
    assert not _dirty(path)
    check_clean(path)
    assert raw_content(path, tmp_path) == _expected()


# Killed after writing into L2 tables made since the last flush: their L1
# entries were never written (they wait for a sync), so those writes are
# lost, as unflushed writes may be; the image is not damaged.
CHILD_NEW_TABLES = r"""
import sys, trio
from qmpd.block import BlockGraph, blockdev_add

async def main(path):
    graph = BlockGraph()
    node = blockdev_add(graph, {"driver": "qcow2", "node-name": "q",
                                "file": {"driver": "file", "filename": path}})
    await node.write(0, b"\x11" * 300_000)
    await node.flush()
    await node.write(5 * 1024 * 1024 + 3, b"\x55" * 200_000)
    print("ready", flush=True)
    await trio.sleep_forever()

trio.run(main, sys.argv[1])
"""


@needs_qemu
async def test_killed_with_unlinked_tables(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=8 * MiB, cluster_size=4096)  # 2 MiB per L2 table
    _killed_mid_session(path, CHILD_NEW_TABLES)
    assert _dirty(path)
    result = _qemu_open_rw(path)
    assert result.returncode == 0, result.stderr
    check_clean(path)
    expected = bytearray(8 * MiB)
    expected[:300_000] = b"\x11" * 300_000
    assert raw_content(path, tmp_path) == expected


# cache.no-flush drops only the sync to disk: a flush still hands every
# table qcow2 holds back to the file, so a killed process loses nothing
# that was flushed.
CHILD_NO_FLUSH = r"""
import sys, trio
from qmpd.block import BlockGraph, blockdev_add

async def main(path):
    graph = BlockGraph()
    node = blockdev_add(graph, {"driver": "qcow2", "node-name": "q",
                                "cache": {"no-flush": True},
                                "file": {"driver": "file", "filename": path}})
    await node.write(1024 * 1024, b"\x11" * (1024 * 1024))
    await node.write(5 * 1024 * 1024, b"\x22" * 65536)
    await node.flush()
    print("ready", flush=True)
    await trio.sleep_forever()

trio.run(main, sys.argv[1])
"""


@needs_qemu
async def test_no_flush_keeps_flushed_writes_when_killed(tmp_path: Path) -> None:
    # Issue 10, defect 6: with cache.no-flush=on, both ranges read as zero
    # after the kill, with leaked clusters and the dirty bit set.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=8 * MiB)
    _killed_mid_session(path, CHILD_NO_FLUSH)
    assert not _dirty(path)
    check_clean(path)
    expected = bytearray(8 * MiB)
    expected[MiB : 2 * MiB] = b"\x11" * MiB
    expected[5 * MiB : 5 * MiB + 65536] = b"\x22" * 65536
    assert raw_content(path, tmp_path) == expected
