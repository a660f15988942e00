"""A failed fdatasync leaves the page cache in an unknown state (defect 7).

As QEMU's file-posix: once an fdatasync of a node's file failed, every later
flush of that node fails with the same errno, so nothing above it (qcow2's
dirty bit, a mirror's ready) is ever cleared on the strength of a later
"successful" sync that says nothing about the lost writes.  The failure is
injected where the kernel reports it, at ``os.fdatasync``; the files, the
qcow2 image and its header on disk are real.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpd.block import BlockGraph, BlockIOError, CommonOptions, FileNode, blockdev_add
from qmpd.block.qcow2.format import parse_header
from qmpd.errors import GenericError

from ..qcow2.conftest import create_image, open_qcow2
from .conftest import make_image

MiB = 1 << 20


@pytest.fixture
def fail_next_sync(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Arm: the next fdatasync of ``fd`` fails with EIO (once, as a lost
    writeback is reported to one sync only); every other one is real."""
    real = os.fdatasync
    armed: set[int] = set()

    def fdatasync(fd: int) -> None:
        if fd in armed:
            armed.discard(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return armed.add


@pytest.mark.parametrize("first", ["flush", "write_behind"])
async def test_failed_fdatasync_fails_every_later_flush(
    tmp_path: Path, fail_next_sync: Callable[[int], None], first: str
) -> None:
    node = FileNode("f", CommonOptions(), filename=str(make_image(tmp_path / "a", MiB)))
    try:
        await node.write(0, b"x" * 4096)
        fail_next_sync(node.fd)
        if first == "write_behind":
            assert not await node.write_behind(0, 4096)  # raises nothing
        for _ in range(3):
            with pytest.raises(BlockIOError) as exc:
                await node.flush()
            assert exc.value.errno == errno.EIO
            # Nor does a write-behind claim durability any more.
            assert not await node.write_behind(0, 4096)
    finally:
        node.close()


async def test_a_new_open_of_the_file_syncs_again(
    tmp_path: Path, fail_next_sync: Callable[[int], None]
) -> None:
    """The state belongs to the open file, as QEMU's does to its node."""
    path = make_image(tmp_path / "a", MiB)
    first = FileNode("f", CommonOptions(), filename=str(path))
    second = FileNode("g", CommonOptions(), filename=str(path))
    try:
        fail_next_sync(first.fd)
        with pytest.raises(BlockIOError):
            await first.flush()
        await second.flush()
    finally:
        first.close()
        second.close()


def _dirty(path: Path) -> bool:
    return parse_header(path.read_bytes()[:65536]).dirty


async def test_failed_fdatasync_keeps_the_qcow2_dirty_bit(
    tmp_path: Path, fail_next_sync: Callable[[int], None]
) -> None:
    """Write, one fdatasync failing with EIO, then flush twice: the image
    stays dirty on disk, through the flushes and through its close."""
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, lazy_refcounts=True)
    graph = BlockGraph()
    node = open_qcow2(graph, path)
    file = node.children["file"]
    assert isinstance(file, FileNode)
    await node.write(0, b"x" * 100_000)
    assert _dirty(path)
    fail_next_sync(file.fd)
    with pytest.raises(BlockIOError):
        await node.flush()
    with pytest.raises(BlockIOError):
        await node.flush()
    assert _dirty(path)
    graph.close_all()
    assert _dirty(path)


async def test_repair_at_open_fails_on_a_file_whose_sync_failed(
    tmp_path: Path, fail_next_sync: Callable[[int], None]
) -> None:
    # The repair of a dirty image at a read-write open syncs without an
    # event loop; it used os.fdatasync itself, so on a file node whose sync
    # had failed it "succeeded" and cleared the dirty bit over writes that
    # may be lost.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, lazy_refcounts=True)
    image = bytearray(path.read_bytes())
    image[72:80] = (1).to_bytes(8, "big")  # mark it dirty: incompatible bit 0
    path.write_bytes(image)
    graph = BlockGraph()
    try:
        file = blockdev_add(graph, {"driver": "file", "node-name": "f", "filename": str(path)})
        assert isinstance(file, FileNode)
        fail_next_sync(file.fd)
        with pytest.raises(BlockIOError):
            file.sync()
        with pytest.raises(GenericError, match="Could not repair dirty image"):
            blockdev_add(graph, {"driver": "qcow2", "node-name": "q", "file": "f"})
    finally:
        graph.close_all()
    assert parse_header(path.read_bytes()[:4096]).dirty
