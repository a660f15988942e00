"""A metadata write that reports an error may still have reached the file
(a device error after the bytes went out, a partial write, NFS): whatever
it would have made point at a cluster must keep that cluster counted.

Giving such a cluster back would let the next allocation reuse it while
the entry on disk still maps it: two guest clusters on one host cluster,
a corruption.  Leaking it is what QEMU does (``qemu-img check`` allows
leaks).  blkdebug cannot show this, since it fails a request before it is
made; here the real ``os.pwrite`` lands and then the call raises."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpd.block import BlockGraph, BlockIOError

from .conftest import IMGS, check_consistent, create_image, open_qcow2

KiB = 1 << 10
MiB = 1 << 20

pytestmark = pytest.mark.skipif(not IMGS, reason="needs qemu-img to check the image")


def land_then_fail(monkeypatch: pytest.MonkeyPatch, hit: Callable[[bytes, int], bool]) -> None:
    """Make the first ``os.pwrite`` that ``hit`` picks land, then raise EIO."""
    real = os.pwrite
    armed = True

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        nonlocal armed
        done = real(fd, data, offset)
        if armed and hit(bytes(data), offset):
            armed = False
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return done

    monkeypatch.setattr(os, "pwrite", pwrite)


async def test_l2_update_that_landed_but_failed_leaves_no_shared_cluster(
    tmp_path: Path, graph: BlockGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    node = open_qcow2(graph, path)
    await node.write(0, b"\x11" * 65536)  # the L2 table exists from here
    # The 8-byte L2 entry of the next new cluster lands, then "fails".
    land_then_fail(monkeypatch, lambda data, _offset: len(data) == 8)
    with pytest.raises(BlockIOError):
        await node.write(MiB, b"\x22" * 65536)
    monkeypatch.undo()
    await node.write(2 * MiB, b"\x33" * 65536)  # must not reuse that cluster
    await node.flush()
    graph.close_all()
    check_consistent(path)


async def test_l1_move_that_landed_but_failed_leaves_no_shared_cluster(
    tmp_path: Path, graph: BlockGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4 KiB clusters: one L1 cluster maps 1 GiB (512 L2 tables of 2 MiB), so
    # growing past it moves the L1 table and switches the header to it.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, cluster_size=4 * KiB)
    node = open_qcow2(graph, path)
    await node.write(0, b"\x11" * 4096)
    # The header write that switches to the new table lands, then "fails".
    land_then_fail(monkeypatch, lambda data, offset: offset == 0 and data[:4] == b"QFI\xfb")
    with pytest.raises(BlockIOError):
        await node.truncate(2048 * MiB)
    monkeypatch.undo()
    graph.close_all()
    # The file now says the image is 2 GiB with its L1 table in the new
    # clusters: they must still be counted.
    node = open_qcow2(graph, path)
    await node.write(8 * KiB, b"\x33" * 4096)  # allocates: must not take them
    await node.flush()
    graph.close_all()
    check_consistent(path)
