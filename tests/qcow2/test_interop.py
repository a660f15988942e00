"""Round trips with QEMU's own tools: qcow2 images made by qemu-img read in
qmpd exactly as QEMU reads them; images qmpd writes pass ``qemu-img check``
(7.2 and 11.1) and read back identically; ``x-blockdev-map`` agrees with
``qemu-img map``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from qmpd.block import BlockGraph
from qmpd.errors import GenericError

from .conftest import (
    check_clean,
    create_image,
    img,
    needs_qemu,
    open_qcow2,
    qemu_map,
    qio,
    raw_content,
)

pytestmark = needs_qemu

MiB = 1 << 20

# Data, zero (kept and unmapped), compressed and partial-cluster writes.
WRITES = (
    "write -P 0x11 0 100k",
    "write -P 0x22 300k 7k",
    "write -z 1M 128k",
    "write -z -u 1152k 64k",
    "write -c -P 0x33 2M 64k",
    "write -P 0x44 3071k 1k",
)


def _maps(
    mine: list[dict[str, object]], theirs: list[dict[str, object]]
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Both maps, comparable: ``compressed`` is kept only where true, and
    not at all when QEMU's map lacks it (7.2 does not report it; 11.1 does)."""
    reported = any("compressed" in e for e in theirs)

    def keep(key: str, value: object) -> bool:
        return key != "compressed" or (reported and bool(value))

    return (
        [{k: v for k, v in e.items() if keep(k, v)} for e in mine],
        [{k: v for k, v in e.items() if keep(k, v)} for e in theirs],
    )


@pytest.mark.parametrize(
    "opts",
    [
        "compat=1.1,cluster_size=65536",
        "compat=0.10,cluster_size=65536",
        "compat=1.1,cluster_size=512",
        "compat=1.1,cluster_size=4096,refcount_bits=1",
        "compat=1.1,cluster_size=2M",
        "compat=1.1,preallocation=metadata",
        "compat=1.1,preallocation=falloc,refcount_bits=64",
        "compat=0.10,preallocation=full,cluster_size=16384",
    ],
)
async def test_qemu_images_read_identically(graph: BlockGraph, tmp_path: Path, opts: str) -> None:
    path = tmp_path / "q.qcow2"
    img("create", "-f", "qcow2", "-o", opts, str(path), "4M")
    writes = [w for w in WRITES if "compat=1.1" in opts or "-z" not in w]
    if "preallocation" in opts:  # QEMU compresses only into free clusters
        writes = [w for w in writes if "-c" not in w]
    if "cluster_size=2M" in opts:  # compressed writes cover whole clusters
        writes = [w.replace("2M 64k", "2M 2M") for w in writes]
    qio(path, *writes)
    # Let writeback settle first: ext4 may fill small holes between written
    # blocks (extent zeroout), and both sides must see the same file.
    os.sync()
    expected = raw_content(path, tmp_path)
    theirs = qemu_map(path)
    node = open_qcow2(graph, path, read_only=True)
    assert node.size == 4 * MiB
    # Map first: reading the holes inside data clusters may make ext4
    # report them as data afterwards (page cache over unwritten extents).
    mine = [e.map_entry() for e in await node.block_status(0, node.size)]
    ours, qemus = _maps(mine, theirs)
    assert ours == qemus
    assert await node.read(0, node.size) == expected
    # Odd ranges straddling clusters and the compressed cluster.
    for start, length in ((1000, 70000), (2 * MiB - 5, 66000), (3071 * 1024 - 3, 2000)):
        assert await node.read(start, length) == expected[start : start + length]


async def test_backing_chain(graph: BlockGraph, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    top = tmp_path / "top.qcow2"
    img("create", "-f", "qcow2", str(base), "1M")
    qio(base, "write -P 0x61 0 192k", "write -P 0x62 512k 64k")
    img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(top), "2M")
    qio(top, "write -P 0x71 64k 64k", "write -z 512k 64k", "write -P 0x72 1000k 48k")
    expected = raw_content(top, tmp_path)
    theirs = qemu_map(top)
    node = open_qcow2(graph, top, read_only=True)
    assert node.children["backing"].driver == "qcow2"
    mine = [e.map_entry() for e in await node.block_status(0, node.size)]
    ours, qemus = _maps(mine, theirs)
    assert ours == qemus
    assert await node.read(0, node.size) == expected
    graph.close_all()
    # backing: null hides the backing file: unallocated clusters read zero.
    g2 = BlockGraph()
    try:
        alone = open_qcow2(g2, top, read_only=True, backing=None)
        data = await alone.read(0, 192 * 1024)
        assert data[: 64 * 1024] == bytes(64 * 1024)
        assert data[64 * 1024 : 128 * 1024] == b"\x71" * 65536
    finally:
        g2.close_all()


async def test_writes_on_a_backed_image(graph: BlockGraph, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    top = tmp_path / "top.qcow2"
    img("create", "-f", "qcow2", str(base), "1M")
    qio(base, "write -P 0x61 0 1M")
    img("create", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top), "1M")
    node = open_qcow2(graph, top, discard="unmap")
    await node.write(1000, b"\x99" * 100)  # copy-on-write of a partial cluster
    await node.write_zeroes(128 * 1024, 64 * 1024, may_unmap=True)
    await node.discard(256 * 1024, 64 * 1024)
    mine = await node.read(0, node.size)
    await node.flush()
    graph.close_all()
    check_clean(top)
    assert raw_content(top, tmp_path) == mine
    assert mine[:1000] == b"\x61" * 1000
    assert mine[1000:1100] == b"\x99" * 100
    assert mine[128 * 1024 : 192 * 1024] == bytes(64 * 1024)
    assert mine[192 * 1024 : 256 * 1024] == b"\x61" * 65536
    # Discarding with a backing file leaves zero clusters, not the backing.
    assert mine[256 * 1024 : 320 * 1024] == bytes(64 * 1024)


@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"version": "v2"},
        {"cluster_size": 512, "refcount_bits": 64},
        {"cluster_size": 4096, "refcount_bits": 1},
        {"cluster_size": 2 * MiB, "refcount_bits": 8},
        {"preallocation": "metadata", "lazy_refcounts": True},
        {"preallocation": "falloc", "refcount_bits": 4},
        {"preallocation": "full", "version": "v2", "cluster_size": 8192},
    ],
)
async def test_qmpd_images_pass_check(
    graph: BlockGraph, tmp_path: Path, opts: dict[str, object]
) -> None:
    path = tmp_path / "mine.qcow2"
    await create_image(path, size=3 * MiB, **opts)
    check_clean(path)
    info = img("info", "--output=json", str(path)).stdout
    assert '"virtual-size": 3145728' in info
    assert raw_content(path, tmp_path) == bytes(3 * MiB)
    node = open_qcow2(graph, path, discard="unmap")
    await node.write(5000, b"\x12" * 150_000)
    await node.write_zeroes(512 * 1024, 300_000, may_unmap=False)
    await node.write(2 * MiB - 7, b"\x34" * 20)
    await node.discard(0, 64 * 1024)
    await node.write_zeroes(MiB, 512 * 1024, may_unmap=True)
    await node.truncate(5 * MiB)
    await node.write(4 * MiB + 3, b"\x56" * 9000)
    mine = await node.read(0, node.size)
    graph.close_all()
    check_clean(path)
    assert raw_content(path, tmp_path) == mine
    raw = tmp_path / "mine.raw"
    raw.write_bytes(mine)
    assert img("compare", "-f", "qcow2", "-F", "raw", str(path), str(raw)).returncode == 0


async def test_refcount_table_grows(graph: BlockGraph, tmp_path: Path) -> None:
    # 512-byte clusters with 64-bit refcounts: one refcount block covers 64
    # clusters and the first table 64 blocks (2 MiB); 3 MiB of data outgrows it.
    path = tmp_path / "grow.qcow2"
    await create_image(path, size=4 * MiB, cluster_size=512, refcount_bits=64)
    node = open_qcow2(graph, path)
    pattern = bytes(range(256)) * 4096  # 1 MiB
    for i in range(3):
        await node.write(i * MiB, pattern)
    assert node.header.refcount_table_offset != 512  # type: ignore[attr-defined]
    await node.flush()
    graph.close_all()
    check_clean(path)
    assert raw_content(path, tmp_path)[: 3 * MiB] == pattern * 3


async def test_create_errors(tmp_path: Path) -> None:
    path = tmp_path / "e.qcow2"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"size": 1000}, "Image size must be a multiple of 512 bytes"),
        ({"cluster-size": 1000}, "Cluster size must be a power of two between 512 and 2048k"),
        ({"refcount-bits": 3}, "Refcount width must be a power of two and may not exceed 64 bits"),
        (
            {"version": "v2", "refcount-bits": 8},
            "Different refcount widths than 16 bits require compatibility level 1.1 "
            "or above (use version=v3 or greater)",
        ),
        (
            {"version": "v2", "lazy-refcounts": True},
            "Lazy refcounts only supported with compatibility level 1.1 and above "
            "(use version=v3 or greater)",
        ),
        (
            {"preallocation": "metadata", "backing-file": "b.qcow2"},
            "Backing file and preallocation can only be used at the same time if extended_l2 is on",
        ),
        ({"backing-fmt": "qcow2"}, "Backing format cannot be used without backing file"),
        ({"extended-l2": True}, "qmpd does not support qcow2 extended L2 entries (extended-l2)"),
        (
            {"version": "v2", "compression-type": "zstd"},
            "Non-zlib compression type is only supported with compatibility level 1.1 "
            "and above (use version=v3 or greater)",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(GenericError) as info:
            await create_image(path, **{"size": MiB, **extra})
        assert str(info.value) == message
