"""Drivers on real temp files: I/O, block status, zero writes, zero state, locks."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest
import trio

from qmpd.block import (
    BACKEND_KIND,
    BlockGraph,
    BlockIOError,
    CommonOptions,
    Extent,
    FileNode,
    NodeUser,
    NullNode,
    Perm,
    RawNode,
    blockdev_add,
    merge_extents,
)
from qmpd.errors import GenericError

from .conftest import QEMU_IO, make_image, needs_qemu_io, qemu_io


def file_node(path: Path, **common: object) -> FileNode:
    return FileNode("f", CommonOptions(**common), filename=str(path))  # type: ignore[arg-type]


async def test_file_read_write_roundtrip(image: Path) -> None:
    node = file_node(image)
    assert node.size == 1 << 20
    assert await node.read(65536, 4) == b"\x5a" * 4
    await node.write(100, b"hello")
    await node.write(200_000, b"\x01" * 200_000)  # large: goes through a worker thread
    assert await node.read(100, 5) == b"hello"
    assert await node.read(200_000, 200_000) == b"\x01" * 200_000
    await node.flush()
    node.close()
    with open(image, "rb") as f:  # noqa: ASYNC230  (a 1 MiB test file)
        assert f.read(105)[100:] == b"hello"


async def test_range_and_read_only_errors(image: Path) -> None:
    node = file_node(image, read_only=True)
    with pytest.raises(BlockIOError) as exc:
        await node.write(0, b"x")
    assert exc.value.errno == errno.EPERM
    assert exc.value.desc == "Operation not permitted"
    with pytest.raises(BlockIOError) as exc:
        await node.read((1 << 20) - 1, 2)
    assert exc.value.errno == errno.EIO
    for call in (node.write_zeroes(0, 512), node.discard(0, 512), node.truncate(0)):
        with pytest.raises(BlockIOError):
            await call
    node.close()


async def test_block_status_is_sparse_aware(image: Path) -> None:
    node = file_node(image)
    extents = await node.block_status(0, node.size)
    assert extents == [
        Extent(0, 65536, data=False, zero=True, offset=0),
        Extent(65536, 4096, data=True, zero=False, offset=65536),
        Extent(69632, (1 << 20) - 69632, data=False, zero=True, offset=69632),
    ]
    # A window inside one extent is clipped to the window.
    assert await node.block_status(66000, 10) == [
        Extent(66000, 10, data=True, zero=False, offset=66000)
    ]
    node.close()


async def test_zero_writes_honour_discard(tmp_path: Path) -> None:
    path = make_image(tmp_path / "z.img", 1 << 20, {0: b"\xff" * (1 << 20)})
    keep = file_node(path)  # discard=ignore: zeroes stay allocated
    method = await keep.write_zeroes(0, 65536, may_unmap=True)
    assert method in ("zero-range", "punch-and-allocate", "written")
    assert await keep.read(0, 65536) == bytes(65536)
    assert (await keep.block_status(0, 65536))[0].data
    keep.close()
    unmap = file_node(path, discard="unmap")
    assert await unmap.write_zeroes(65536, 65536, may_unmap=True) == "punch-hole"
    assert await unmap.block_status(65536, 65536) == [
        Extent(65536, 65536, data=False, zero=True, offset=65536)
    ]
    await unmap.discard(131072, 4096)
    assert (await unmap.block_status(131072, 4096))[0].zero
    unmap.close()


async def test_detect_zeroes(tmp_path: Path) -> None:
    path = make_image(tmp_path / "d.img", 1 << 20, {0: b"\xff" * 65536})
    node = file_node(path, discard="unmap", detect_zeroes="unmap")
    await node.write(0, bytes(65536))  # all zero: becomes a hole
    assert (await node.block_status(0, 65536))[0].zero
    assert (await node.known_zero()).open.value
    node.close()
    on = file_node(path, detect_zeroes="on")  # zero write, but no unmap
    await on.write(0, bytes(4096))
    assert await on.read(0, 4096) == bytes(4096)
    on.close()


async def test_known_zero_and_make_zero(image: Path) -> None:
    node = file_node(image)
    state = await node.known_zero()
    assert (state.create.value, state.create.how) == (True, "driver")
    assert not state.open.value  # 4 KiB of 0x5a
    result = await node.make_zero()
    assert not result.already_zero
    assert result.bytes == 4096
    assert await node.read(65536, 4096) == bytes(4096)
    # discard=ignore kept it allocated, but the small data region is scanned.
    assert (await node.known_zero()).open.how == "scan"
    assert (await node.make_zero()).already_zero
    node.close()
    fresh = file_node(make_image(image.parent / "fresh.img", 1 << 30))
    assert (await fresh.known_zero()).open.how == "hole-probe"
    fresh.close()


async def test_truncate_grows_with_zeroes(image: Path) -> None:
    node = file_node(image)
    await node.truncate(2 << 20)
    assert node.size == 2 << 20
    assert os.fstat(node.fd).st_size == 2 << 20
    assert (await node.block_status(1 << 20, 1 << 20))[0].zero
    await node.truncate(4096)
    assert node.size == 4096
    node.close()


async def test_null_nodes() -> None:
    plain = NullNode("n", CommonOptions())
    assert plain.size == 1 << 30
    assert await plain.block_status(0, 4096) == [
        Extent(0, 4096, data=False, zero=False, present=False)
    ]
    assert not (await plain.known_zero()).open.value
    zeroes = NullNode("z", CommonOptions(), size=4096, read_zeroes=True)
    assert (await zeroes.known_zero()).open.how == "flag"
    assert (await zeroes.block_status(0, 4096))[0].zero
    with pytest.raises(GenericError, match="size is invalid"):
        NullNode("x", CommonOptions(), size=-1)
    with pytest.raises(BlockIOError):
        await plain.truncate(10)


async def test_raw_window(image: Path) -> None:
    base = file_node(image, discard="unmap")
    raw = RawNode("r", CommonOptions(discard="unmap"), file=base, offset=65536, size=8192)
    assert raw.size == 8192
    assert await raw.read(0, 2) == b"\x5a\x5a"
    assert [e.data for e in await raw.block_status(0, 8192)] == [True, False]
    assert (await raw.block_status(0, 8192))[0].offset == 65536
    await raw.write_zeroes(0, 4096, may_unmap=True)
    assert (await raw.known_zero()).open.value
    with pytest.raises(BlockIOError, match="Cannot resize fixed-size raw disks"):
        await raw.truncate(4096)
    base.close()


def test_merge_extents() -> None:
    a = Extent(0, 10, data=True, zero=False, offset=0)
    b = Extent(10, 10, data=True, zero=False, offset=10)
    c = Extent(20, 10, data=True, zero=False, offset=50)
    assert merge_extents([a, b, c]) == [Extent(0, 20, data=True, zero=False, offset=0), c]


async def test_graph_delete_rules(image: Path) -> None:
    graph = BlockGraph()
    blockdev_add(graph, {"driver": "file", "node-name": "f", "filename": str(image)})
    blockdev_add(graph, {"driver": "raw", "node-name": "r", "file": "f"})
    blockdev_add(
        graph,
        {"driver": "raw", "node-name": "r2", "file": {"driver": "file", "filename": str(image)}},
    )
    inline = graph.get("r2").children["file"]  # type: ignore[union-attr]
    assert inline.name.startswith("#block")
    assert inline.options.discard == "unmap"
    with pytest.raises(GenericError, match=r"^Block device f is in use$"):
        graph.delete("f")
    with pytest.raises(
        GenericError, match=re.escape(f"Node {inline.name} is not owned by the monitor")
    ):
        graph.delete(inline.name)
    user = NodeUser("dev0", BACKEND_KIND)  # a BlockBackend (a job's own edge is not)
    graph.attach(graph.find("r"), user)
    with pytest.raises(GenericError, match=r"^Node r is in use$"):
        graph.delete("r")
    graph.detach(graph.find("r"), user)
    graph.delete("r")
    graph.delete("f")
    graph.delete("r2")
    assert len(graph) == 0
    assert inline.closed


async def test_failed_add_leaves_graph_unchanged(tmp_path: Path) -> None:
    graph = BlockGraph()
    with pytest.raises(GenericError, match="No such file"):
        blockdev_add(
            graph,
            {
                "driver": "raw",
                "node-name": "r",
                "file": {"driver": "file", "filename": str(tmp_path / "missing")},
            },
        )
    assert len(graph) == 0
    blockdev_add(graph, {"driver": "null-co", "node-name": "r"})  # the name is free again


@needs_qemu_io
async def test_locks_conflict_with_qemu(image: Path) -> None:
    """Our write permission stops qemu-io writing, and qemu-io's stops ours."""
    graph = BlockGraph()
    blockdev_add(graph, {"driver": "file", "node-name": "f", "filename": str(image)})
    node = graph.find("f")
    assert isinstance(node, FileNode)
    # As a guest device: read and write, share only reads.
    device = NodeUser("dev0", "device", Perm.CONSISTENT_READ | Perm.WRITE, Perm.CONSISTENT_READ)
    graph.attach(node, device)
    assert node.locked_bytes() == {100, 101, 201, 202, 203}
    proc = await trio.to_thread.run_sync(qemu_io, "-f", "raw", "-c", "write 0 512", str(image))
    assert proc.returncode != 0
    assert 'Failed to get "write" lock' in proc.stderr
    shared_read = await trio.to_thread.run_sync(
        qemu_io, "-f", "raw", "-r", "-U", "-c", "read 0 512", str(image)
    )
    assert "read 512/512" in shared_read.stdout
    graph.detach(node, device)
    assert node.locked_bytes() == frozenset()
    again = await trio.to_thread.run_sync(qemu_io, "-f", "raw", "-c", "write 0 512", str(image))
    assert again.returncode == 0
    graph.delete("f")


@needs_qemu_io
def test_lock_refused_while_qemu_writes(image: Path) -> None:
    assert QEMU_IO is not None
    # qemu-io in interactive mode keeps the image open (write permission).
    proc = subprocess.Popen(
        [QEMU_IO, "-f", "raw", str(image)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(b"write 0 512\n")
        proc.stdin.flush()
        assert b"wrote 512/512" in proc.stdout.readline().replace(b"qemu-io> ", b"")
        graph = BlockGraph()
        blockdev_add(graph, {"driver": "file", "node-name": "f", "filename": str(image)})
        node = graph.find("f")
        device = NodeUser("dev0", "device", Perm.CONSISTENT_READ | Perm.WRITE, Perm.CONSISTENT_READ)
        with pytest.raises(GenericError, match=r'^Failed to get shared "write" lock$'):
            graph.attach(node, device)
        assert node.users == []
        graph.delete("f")
    finally:
        proc.communicate(b"quit\n", timeout=10)


async def test_lengths_are_whole_sectors(tmp_path: Path) -> None:
    """QEMU keeps a node's length in 512-byte sectors: a 1000-byte file is a
    1024-byte node whose tail reads as zero, is a zero extent, and can be
    written (the file grows)."""
    path = tmp_path / "odd.img"
    path.write_bytes(b"\x11" * 1000)
    node = file_node(path)
    raw = RawNode("r", CommonOptions(), file=node)
    assert node.size == raw.size == 1024
    assert await raw.read(996, 28) == b"\x11" * 4 + bytes(24)
    [*_, tail] = await node.block_status(0, 1024)
    assert tail.zero
    assert tail.end == 1024
    with pytest.raises(BlockIOError):
        await raw.read(1024, 1)
    await raw.write(1020, b"\x22" * 4)
    assert path.stat().st_size == 1024
    assert await raw.read(1000, 24) == bytes(20) + b"\x22" * 4
    assert NullNode("n", CommonOptions(), size=1000).size == 1024
    node.close()
