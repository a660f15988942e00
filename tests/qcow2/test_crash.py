"""Crash safety: a qmpd process killed with SIGKILL mid-session.

Without lazy refcounts (the default) qmpd, like QEMU, never sets the dirty
bit: refcounts reach the file before the L2 and L1 entries that use them,
and entries are unlinked before their clusters are released, so a killed
process leaves at worst leaked clusters.  With lazy refcounts the dirty
bit is set while metadata changes, and the next read-write open repairs
the image and clears it (qmpd at open, as QEMU does).  A clean close or a
flush leaves the image clean; everything flushed survives the kill.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from qmpd.block import BlockGraph
from qmpd.block.qcow2.format import parse_header
from qmpd.errors import GenericError
from tests.support.qemu_tools import why_new_missing

from .conftest import (
    IMGS,
    QEMU_IO,
    QEMU_IO_NEW,
    check_clean,
    check_consistent,
    create_image,
    needs_qemu,
    open_qcow2,
    raw_content,
)

MiB = 1 << 20


def _child(body: str, **options: Any) -> str:
    """A script that opens the image as node ``node`` (qcow2 ``options``
    added), runs ``body`` (async, indented by 4), prints ``ready`` and
    waits to be killed."""
    return f"""
import json, sys, trio
from qmpd.block import BlockGraph, blockdev_add

async def main(path):
    graph = BlockGraph()
    node = blockdev_add(graph, {{"driver": "qcow2", "node-name": "q",
                                "file": {{"driver": "file", "filename": path}},
                                **json.loads({json.dumps(json.dumps(options))})}})
{body}
    print("ready", flush=True)
    await trio.sleep_forever()

trio.run(main, sys.argv[1])
"""


# Write, flush, write more (unflushed metadata changes), then be killed.
CHILD = _child(
    """
    await node.write(0, b"\\x11" * 300_000)
    await node.flush()
    await node.write(2 * 1024 * 1024, b"\\x22" * 100_000)
    await node.write(3 * 1024 * 1024 + 7, b"\\x33" * 70_000)
"""
)


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


@contextmanager
def _held_by_qemu_io(path: Path) -> Iterator[None]:
    """An interactive qemu-io holding the image open for writing."""
    assert QEMU_IO is not None
    with subprocess.Popen(
        [QEMU_IO, "-f", "raw", str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdin is not None
            assert holder.stdout is not None
            holder.stdin.write("read 0 512\n")
            holder.stdin.flush()
            while "read 512/512" not in holder.stdout.readline():
                pass
            yield
        finally:
            holder.kill()


def _qemu_open_rw(path: Path, tool: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = tool or QEMU_IO
    assert exe is not None
    return subprocess.run([exe, "-c", "read 0 4k", str(path)], capture_output=True, text=True)


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


async def test_writes_without_lazy_refcounts_never_set_the_dirty_bit(tmp_path: Path) -> None:
    # Issue 10, defect 14: QEMU sets the bit only with lazy refcounts.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    graph = BlockGraph()
    node = open_qcow2(graph, path, discard="unmap")
    await node.write(0, b"x" * 100_000)
    await node.discard(0, 65536)
    await node.write_zeroes(65536, 65536)
    await node.truncate(64 * MiB)
    await node.write(40 * MiB, b"y" * 100_000)
    assert not _dirty(path)
    graph.delete("q")
    assert not _dirty(path)
    if IMGS:
        check_clean(path)


async def test_with_lazy_refcounts_a_clean_close_clears_the_dirty_bit(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, lazy_refcounts=True)
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


async def test_killed_without_lazy_refcounts_leaves_only_leaks(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    _killed_mid_session(path)
    assert not _dirty(path)
    if IMGS:
        check_consistent(path)
    graph = BlockGraph()
    node = open_qcow2(graph, path, read_only=True)
    assert await node.read(0, 300_000) == b"\x11" * 300_000  # flushed before the kill
    graph.close_all()


async def test_crash_dirtied_image_is_repaired_at_a_read_write_open(tmp_path: Path) -> None:
    # Issue 10, defect 14: opened read-write and closed again without a
    # write, the image stayed dirty, its leaked clusters with it.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, lazy_refcounts=True)
    _killed_mid_session(path)
    assert _dirty(path)
    _wipe_refcounts(path)
    # Read-only: readable as it is, and left as it is.
    graph = BlockGraph()
    node = open_qcow2(graph, path, read_only=True)
    assert await node.read(0, node.size) == _expected()
    graph.close_all()
    assert _dirty(path)
    # Read-write: repaired at the open.
    graph = BlockGraph()
    node = open_qcow2(graph, path)
    assert not _dirty(path)
    assert await node.read(0, node.size) == _expected()
    graph.delete("q")
    assert not _dirty(path)
    if IMGS:
        check_clean(path)
        assert raw_content(path, tmp_path) == _expected()


@needs_qemu
async def test_a_dirty_image_another_process_writes_is_not_repaired(tmp_path: Path) -> None:
    # The repair writes: only once the image is locked for qmpd.  A QEMU
    # process holding it for writing makes the open fail, image untouched.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, lazy_refcounts=True)
    _killed_mid_session(path)
    before = path.read_bytes()
    with _held_by_qemu_io(path), pytest.raises(GenericError, match="lock"):
        open_qcow2(BlockGraph(), path)
    assert path.read_bytes() == before


@needs_qemu
@pytest.mark.parametrize("version", ["7.2", "11.1"])
async def test_killed_then_repaired_by_qemu(tmp_path: Path, version: str) -> None:
    tool = QEMU_IO if version == "7.2" else QEMU_IO_NEW
    if tool is None:
        pytest.skip(why_new_missing("qemu-io"))
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, lazy_refcounts=True)
    _killed_mid_session(path)
    assert _dirty(path)
    _wipe_refcounts(path)
    # QEMU repairs a dirty image when it opens it read-write (and says so),
    # as qmpd does (test_crash_dirtied_image_is_repaired_at_a_read_write_open).
    result = _qemu_open_rw(path, tool)
    assert result.returncode == 0, result.stderr
    assert "Repairing" in result.stdout + result.stderr
    assert not _dirty(path)
    check_clean(path)
    assert raw_content(path, tmp_path) == _expected()


# Killed after writing into L2 tables made since the last flush: their L1
# entries were never written (they wait for a sync), so those writes are
# lost, as unflushed writes may be; the image is not damaged.
CHILD_NEW_TABLES = _child(
    """
    await node.write(0, b"\\x11" * 300_000)
    await node.flush()
    await node.write(5 * 1024 * 1024 + 3, b"\\x55" * 200_000)
"""
)


@needs_qemu
async def test_killed_with_unlinked_tables(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=8 * MiB, cluster_size=4096)  # 2 MiB per L2 table
    _killed_mid_session(path, CHILD_NEW_TABLES)
    assert not _dirty(path)
    check_consistent(path)
    result = _qemu_open_rw(path)
    assert result.returncode == 0, result.stderr
    expected = bytearray(8 * MiB)
    expected[:300_000] = b"\x11" * 300_000
    assert raw_content(path, tmp_path) == expected


# cache.no-flush drops only the sync to disk: a flush still hands every
# table qcow2 holds back to the file, so a killed process loses nothing
# that was flushed.
CHILD_NO_FLUSH = _child(
    """
    await node.write(1024 * 1024, b"\\x11" * (1024 * 1024))
    await node.write(5 * 1024 * 1024, b"\\x22" * 65536)
    await node.flush()
""",
    cache={"no-flush": True},
)


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


# -- kills at random points ----------------------------------------------------------

#: Kills per case (``QMPD_QCOW2_CRASH_KILLS`` raises it for a soak; the
#: end-to-end crash test in tests/integrity has its own knob).
KILLS = int(os.environ.get("QMPD_QCOW2_CRASH_KILLS") or "4")
OPS = 120
SIZE = 8 * MiB


def _ops(seed: int) -> list[tuple[str, int, int, int]]:
    """The child's requests, the same for the parent: (kind, offset,
    length, fill byte); a flush after every few."""
    rng = random.Random(seed)
    out = []
    for _ in range(OPS):
        kind = rng.choice(["write", "write", "write", "zero", "discard", "flush"])
        offset = rng.randrange(0, SIZE // 512) * 512 + rng.choice([0, 0, rng.randrange(512)])
        length = min(SIZE - offset, rng.choice([512, 4096, 65536, 300_000, MiB + 7]))
        out.append((kind, offset, length, rng.randrange(1, 256)))
    return out


# Prints "flushed N" once the first N requests are all flushed.
CHILD_RANDOM = _child(
    """
    from tests.qcow2.test_crash import _ops
    for i, (kind, offset, length, fill) in enumerate(_ops(int(sys.argv[2]))):
        if kind == "write":
            await node.write(offset, bytes([fill]) * length)
        elif kind == "zero":
            await node.write_zeroes(offset, length, True)
        elif kind == "discard":
            await node.discard(offset, length)
        else:
            await node.flush()
            print("flushed", i + 1, flush=True)
""",
    discard="unmap",
)


def _kill_at_random(path: Path, seed: int, rng: random.Random) -> int:
    """Run the child until a random flush has been reported, kill it;
    returns how many requests were flushed for certain."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    flushes = sum(1 for op in _ops(seed) if op[0] == "flush")
    target = rng.randrange(0, flushes + 1)
    with subprocess.Popen(
        [sys.executable, "-c", CHILD_RANDOM, str(path), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        done, seen = 0, 0
        try:
            assert proc.stdout is not None
            while seen < target:
                line = proc.stdout.readline().split()
                if not line or line[0] == "ready":
                    break
                done, seen = int(line[1]), seen + 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return done


def _model(seed: int, flushed: int) -> tuple[bytearray, list[tuple[int, int]]]:
    """What the image must hold after the first ``flushed`` requests, and
    the ranges later requests may have changed."""
    data = bytearray(SIZE)
    unknown = []
    for i, (kind, offset, length, fill) in enumerate(_ops(seed)):
        if kind == "flush":
            continue
        if i >= flushed:
            unknown.append((offset, length))
        elif kind == "write":
            data[offset : offset + length] = bytes([fill]) * length
        elif kind == "zero":
            data[offset : offset + length] = bytes(length)
        else:  # discard with discard=unmap: whole clusters read as zero
            first = -(-offset // 65536) * 65536
            end = offset + length
            last = -(-end // 65536) * 65536 if end == SIZE else end // 65536 * 65536
            if last > first:
                data[first:last] = bytes(last - first)
    return data, unknown


@pytest.mark.parametrize("lazy", [False, True])
async def test_killed_at_random_points_loses_nothing_flushed(tmp_path: Path, lazy: bool) -> None:
    rng = random.Random(f"crash-{lazy}")
    for kill in range(KILLS):
        path = tmp_path / f"k{kill}.qcow2"
        await create_image(path, size=SIZE, lazy_refcounts=lazy)
        seed = rng.randrange(1 << 30)
        flushed = _kill_at_random(path, seed, rng)
        if not lazy:
            assert not _dirty(path), (kill, seed)
            if IMGS:
                check_consistent(path)
        expected, unknown = _model(seed, flushed)
        graph = BlockGraph()
        node = open_qcow2(graph, path)  # repairs a dirty (lazy) image
        assert not _dirty(path)
        content = await node.read(0, SIZE)
        zero = (await node.known_zero()).open
        graph.close_all()
        if IMGS:
            check_consistent(path)
        # Requests after the last flush may or may not have landed.
        for offset, length in unknown:
            expected[offset : offset + length] = content[offset : offset + length]
        assert content == expected, (kill, seed, flushed)
        if zero.value:
            assert not any(content), (kill, seed, zero)
