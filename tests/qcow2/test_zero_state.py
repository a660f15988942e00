"""The known-zero answers for qcow2: qmpd's all-zero bit (``flag``), the
L1/L2 scan (``scan``), and what each image kind gets.

The bit is trusted only with qmpd's header extension; QEMU drops the bit
(an autoclear bit it does not know) when it opens the image read-write.
"""

from __future__ import annotations

import struct
from pathlib import Path

import trio
import trio.testing

from qmpd.block import BlockGraph
from qmpd.block.qcow2.format import AUTOCLEAR_QMPD_ALL_ZERO, parse_header
from qmpd.block.zerostate import KnownZero
from tests.support.loopback import QMPPair
from tests.support.transcript import Transcript

from .conftest import create_image, img, needs_qemu, open_qcow2, qio

MiB = 1 << 20
FLAG = KnownZero(True, "flag")
SCAN = KnownZero(True, "scan")
NONE = KnownZero(False, "none")


async def _open_state(path: Path, **opts: object) -> KnownZero:
    graph = BlockGraph()
    try:
        return (await open_qcow2(graph, path, read_only=True, **opts).known_zero()).open
    finally:
        graph.close_all()


def _autoclear(path: Path) -> int:
    return parse_header(path.read_bytes()[:65536]).autoclear


async def test_fresh_and_preallocated_images_by_qmpd(tmp_path: Path) -> None:
    for prealloc in ("off", "metadata", "falloc", "full"):
        path = tmp_path / f"{prealloc}.qcow2"
        await create_image(path, size=4 * MiB, preallocation=prealloc)
        assert await _open_state(path) == FLAG, prealloc
    # Version 2 has no autoclear bits: the scan answers, and for a fully
    # preallocated image (written zeroes) it cannot tell.
    v2 = tmp_path / "v2.qcow2"
    await create_image(v2, size=4 * MiB, version="v2")
    assert await _open_state(v2) == SCAN
    await create_image(v2, size=4 * MiB, version="v2", preallocation="full")
    assert await _open_state(v2) == NONE


async def test_write_clears_the_bit_zero_writes_keep_it(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    graph = BlockGraph()
    node = open_qcow2(graph, path, discard="unmap")
    await node.write_zeroes(0, MiB, may_unmap=True)
    await node.write(MiB, bytes(4096))  # zero data: still all zero
    await node.discard(0, 2 * MiB)
    assert (await node.known_zero()).open == FLAG
    assert _autoclear(path) & AUTOCLEAR_QMPD_ALL_ZERO
    await node.write(5, b"x")
    # The bit went to disk before the data did.
    assert not _autoclear(path) & AUTOCLEAR_QMPD_ALL_ZERO
    assert (await node.known_zero()).open == NONE
    await node.write_zeroes(0, 65536, may_unmap=True)
    assert (await node.known_zero()).open == SCAN  # proven again, by the scan
    graph.close_all()


@needs_qemu
async def test_qemu_clears_the_bit_when_writing(tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB)
    qio(path, "read 0 4k")  # qemu-io opens read-write
    assert not _autoclear(path) & AUTOCLEAR_QMPD_ALL_ZERO
    assert parse_header(path.read_bytes()[:65536]).qmpd_extension is not None
    assert await _open_state(path) == SCAN
    qio(path, "write -P 1 0 4k")
    assert await _open_state(path) == NONE


@needs_qemu
async def test_bit_without_extension_is_ignored(tmp_path: Path) -> None:
    # An image made by QEMU with data, then given the bit by "someone else"
    # (a future QEMU meaning something else by it): no extension, no trust.
    path = tmp_path / "q.qcow2"
    img("create", "-f", "qcow2", str(path), "4M")
    qio(path, "write -P 7 0 64k")
    raw = bytearray(path.read_bytes())
    (autoclear,) = struct.unpack_from(">Q", raw, 88)
    struct.pack_into(">Q", raw, 88, autoclear | AUTOCLEAR_QMPD_ALL_ZERO)
    path.write_bytes(raw)
    assert await _open_state(path) == NONE


@needs_qemu
async def test_images_made_by_qemu(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.qcow2"
    img("create", "-f", "qcow2", str(fresh), "4M")
    assert await _open_state(fresh) == SCAN
    meta = tmp_path / "meta.qcow2"
    img("create", "-f", "qcow2", "-o", "preallocation=metadata", str(meta), "4M")
    assert await _open_state(meta) == SCAN  # the clusters are holes in the file
    full = tmp_path / "full.qcow2"
    img("create", "-f", "qcow2", "-o", "preallocation=full", str(full), "4M")
    assert await _open_state(full) == NONE  # zeroes written: cannot tell cheaply


@needs_qemu
async def test_backed_images(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    await create_image(base, size=4 * MiB)
    top = tmp_path / "top.qcow2"
    await create_image(top, size=4 * MiB, backing_file=str(base), backing_fmt="qcow2")
    # The bit describes the layer: with a zero backing the image is zero...
    assert await _open_state(top) == FLAG
    graph = BlockGraph()
    node = open_qcow2(graph, top, read_only=True)
    assert (await node.known_zero()).create == NONE  # a backed image is not "fresh zero"
    graph.close_all()
    # ...and with data in the backing it is not, though the bit still holds.
    qio(base, "write -P 9 0 4k")
    assert _autoclear(top) & AUTOCLEAR_QMPD_ALL_ZERO
    assert await _open_state(top) == NONE
    # Without the backing (backing: null) the layer alone reads as zero.
    assert await _open_state(top, backing=None) == FLAG


async def test_over_qmp(qmp: QMPPair, tmp_path: Path) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, preallocation="metadata")
    file = {"driver": "file", "filename": str(path)}
    assert (
        await qmp.execute("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": file}) == {}
    )
    state = await qmp.execute("x-query-zero-state", {"node-name": "q"})
    assert state == [
        {
            "node-name": "q",
            "create": {"value": True, "how": "driver"},
            "open": {"value": True, "how": "flag"},
        }
    ]
    entries = await qmp.execute("x-blockdev-map", {"node-name": "q"})
    assert all(e["zero"] for e in entries)
    nodes = await qmp.execute("query-named-block-nodes", {"flat": True})
    assert nodes[0]["drv"] == "qcow2"
    assert nodes[0]["image"]["virtual-size"] == 4 * MiB
    assert nodes[0]["file"] == str(path)
    # What QSD 11.1 reports for a version 3 image.
    assert nodes[0]["image"]["format-specific"] == {
        "type": "qcow2",
        "data": {
            "compat": "1.1",
            "compression-type": "zlib",
            "lazy-refcounts": False,
            "refcount-bits": 16,
            "corrupt": False,
            "extended-l2": False,
        },
    }
    assert await qmp.execute("blockdev-del", {"node-name": "q"}) == {}


async def test_scan_during_a_write_is_not_kept(tmp_path: Path) -> None:
    # Issue 10, defect 3: a scan that ran while a write was in flight saw
    # the layer before the write mapped its clusters; kept as the node's
    # answer, it said "all zero" over the data for ever after.  A version
    # 2 image has no all-zero bit, so the scan answers.
    path = tmp_path / "a.qcow2"
    await create_image(path, size=8 * MiB, version="v2")
    graph = BlockGraph()
    node = open_qcow2(graph, path)
    assert (await node.known_zero()).open == SCAN
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.write, MiB, b"\x55" * (2 * MiB))
        # The write is in flight (its data goes to the file in a thread)
        # while the scan runs.
        await trio.testing.wait_all_tasks_blocked()
        during = (await node.known_zero()).open
    assert await node.read(MiB, 2 * MiB) == b"\x55" * (2 * MiB)
    assert during in (SCAN, NONE)
    assert (await node.known_zero()).open == NONE
    graph.close_all()


async def test_copy_on_write_from_backing_clears_the_bit(tmp_path: Path) -> None:
    # Issue 10, defect 4: a zero write to part of a cluster copies the
    # backing file's bytes around it into the overlay; the layer then
    # holds data although the guest wrote only zeroes.
    base = tmp_path / "base.raw"
    base.write_bytes(b"\x44" * (4 * MiB))
    top = tmp_path / "top.qcow2"
    await create_image(top, size=4 * MiB, backing_file=str(base), backing_fmt="raw")
    assert _autoclear(top) & AUTOCLEAR_QMPD_ALL_ZERO
    graph = BlockGraph()
    node = open_qcow2(graph, top)
    await node.write(0, bytes(4096))
    # Durably withdrawn before the backing's bytes landed, not at close.
    assert not _autoclear(top) & AUTOCLEAR_QMPD_ALL_ZERO
    graph.close_all()
    assert await _open_state(top, backing=None) == NONE
    graph = BlockGraph()
    layer = open_qcow2(graph, top, read_only=True, backing=None)
    assert await layer.read(4096, 4096) == b"\x44" * 4096
    graph.close_all()


async def test_mirror_target_polled_for_zero_state_never_keeps_a_stale_scan(
    client: Transcript, tmp_path: Path
) -> None:
    # Issue 10, defect 3, as reported: a mirror into an empty qcow2 image
    # while x-query-zero-state is polled; after ready the target still
    # said "open: true, how: scan" though the data read back.
    src = tmp_path / "src.raw"
    src.write_bytes(bytes(3 * MiB) + b"\x5c" * (2 * MiB) + bytes(3 * MiB))
    dst = tmp_path / "dst.qcow2"
    await create_image(dst, size=8 * MiB, version="v2")  # no all-zero bit: the scan answers
    for name, driver, path in (("src", "raw", src), ("dst", "qcow2", dst)):
        file = {"driver": "file", "filename": str(path)}
        assert await client.cmd("blockdev-add", driver=driver, node_name=name, file=file) == {}
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="j"
    ) == {}
    while "BLOCK_JOB_READY" not in client.entries:
        await client.cmd("x-query-zero-state", node_name="dst")
    (state,) = await client.cmd("x-query-zero-state", node_name="dst")
    assert state["open"] == {"value": False, "how": "none"}
    assert await client.cmd("job-cancel", id="j") == {}
    await client.until("JSC null")
