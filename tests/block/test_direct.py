"""The file driver with ``cache.direct=on``: O_DIRECT, probed alignment, RMW.

The files live under pytest's temp directory (/tmp); a file system that
refuses O_DIRECT skips the tests that need it.  The limits are compared
with QEMU 11.1's for the same files when its storage daemon is set up.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmpd.block import BlockGraph, CommonOptions, FileNode, NodeUser, Perm, blockdev_add
from qmpd.block.aligned import MAX_ALIGN, PROBE_ALIGNMENTS, RangeGate, probe_alignment
from qmpd.errors import GenericError
from tests.support.daemons import RawClient, qsd_new_kind, running, why_missing

from .conftest import make_image, needs_qemu_io, qemu_io

O_DIRECT_FLAG = 0o40000  # x86-64 / aarch64 Linux, as printed in fdinfo


def direct_node(path: Path, **common: Any) -> FileNode:
    """A cache.direct=on file node; skips the test where O_DIRECT is refused."""
    try:
        return FileNode(
            "d", CommonOptions(cache_direct=True, **common), filename=str(path), aio="native"
        )
    except GenericError as exc:
        if "does not support O_DIRECT" in exc.desc:
            pytest.skip(f"{path.parent} refuses O_DIRECT")
        raise


def data_image(path: Path, size: int) -> Path:
    """A file with (non-zero) data at offset 0, so that the probe sees real blocks."""
    return make_image(path, size, {0: bytes(range(1, 256)) * 16})


def fd_flags(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise AssertionError("no flags in fdinfo")


def test_opened_with_o_direct(tmp_path: Path) -> None:
    node = direct_node(make_image(tmp_path / "a.img", 1 << 20))
    assert fd_flags(node.fd) & O_DIRECT_FLAG
    node.close()
    buffered = FileNode("b", CommonOptions(), filename=str(tmp_path / "a.img"))
    assert not fd_flags(buffered.fd) & O_DIRECT_FLAG
    assert buffered.limits()["request-alignment"] == 1
    buffered.close()


def test_limits_show_the_probe(tmp_path: Path) -> None:
    sparse = direct_node(make_image(tmp_path / "sparse.img", 1 << 20))
    full = direct_node(data_image(tmp_path / "full.img", 1 << 20))
    for node in (sparse, full):
        limits = node.limits()
        assert node.alignment == probe_alignment(node.fd)
        assert limits["request-alignment"] in (*PROBE_ALIGNMENTS[1:], MAX_ALIGN)
        assert limits["min-mem-alignment"] in (*PROBE_ALIGNMENTS[1:], MAX_ALIGN)
        assert limits["opt-mem-alignment"] == max(limits["min-mem-alignment"], MAX_ALIGN)
        assert limits["max-iov"] == 1024
        node.close()
    # Reading a hole is never refused, so a sparse file gets the safe fallback.
    assert sparse.limits()["request-alignment"] == MAX_ALIGN


def test_refused_o_direct_is_qemus_error() -> None:
    # procfs has no O_DIRECT; the error is QEMU 11.1's, observed on this machine.
    with pytest.raises(GenericError) as exc:
        FileNode("p", CommonOptions(read_only=True, cache_direct=True), filename="/proc/version")
    assert exc.value.desc == "Could not open '/proc/version': filesystem does not support O_DIRECT"
    with pytest.raises(GenericError) as exc:
        FileNode("p", CommonOptions(read_only=True), filename="/proc/version")
    assert exc.value.desc == "Could not refresh total sector count: Invalid argument"
    # A missing file stays a plain open error.
    with pytest.raises(GenericError, match=r"No such file or directory$"):
        FileNode("p", CommonOptions(cache_direct=True), filename="/nonexistent/x")


def test_aio_native_still_needs_direct(tmp_path: Path) -> None:
    path = make_image(tmp_path / "a.img", 65536)
    with pytest.raises(GenericError, match="aio=native was specified, but it requires"):
        FileNode("n", CommonOptions(), filename=str(path), aio="native")


async def test_unaligned_io_round_trips(tmp_path: Path) -> None:
    node = direct_node(make_image(tmp_path / "a.img", 1 << 20), discard="unmap")
    await node.write(1, b"abc")
    await node.write(4095, b"XY")  # straddles two blocks
    await node.write(10_000, b"\x11" * 70_000)  # head, aligned middle, tail
    assert await node.read(0, 5) == b"\0abc\0"
    assert await node.read(4094, 4) == b"\0XY\0"
    assert await node.read(9_999, 70_002) == b"\0" + b"\x11" * 70_000 + b"\0"
    assert await node.write_zeroes(10_001, 69_998, may_unmap=True) == "punch-hole"
    assert await node.read(9_999, 70_002) == b"\0\x11" + bytes(69_998) + b"\x11\0"
    assert await node.read(500_000, 3) == bytes(3)  # a hole
    # The aligned middle of the zeroed range is a hole again.
    extents = await node.block_status(16384, 4096 * 10)
    assert [(e.zero, e.data) for e in extents] == [(True, False)]
    node.close()


async def test_concurrent_rmw_in_one_block_loses_nothing(tmp_path: Path) -> None:
    node = direct_node(make_image(tmp_path / "a.img", 65536))
    align = node.limits()["request-alignment"]
    for round_ in range(5):
        pieces = {i * 37 + 3: bytes([round_ * 16 + i + 1]) * 30 for i in range(align // 40)}
        async with trio.open_nursery() as nursery:
            for offset, data in pieces.items():
                nursery.start_soon(node.write, offset, data)
        block = await node.read(0, align)
        for offset, data in pieces.items():
            assert block[offset : offset + len(data)] == data
    node.close()


async def test_range_gate_orders_only_conflicts(autojump_clock: trio.abc.Clock) -> None:
    gate = RangeGate()
    order: list[str] = []

    async def hold(name: str, start: int, end: int, serialising: bool) -> None:
        async with gate.hold(start, end, serialising):
            order.append(f"+{name}")
            await trio.sleep(1)
            order.append(f"-{name}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, "a", 0, 4096, False)
        await trio.sleep(0.1)
        nursery.start_soon(hold, "b", 0, 4096, False)  # both plain: no wait
        await trio.sleep(0.1)
        nursery.start_soon(hold, "c", 0, 4096, True)  # RMW: waits for a and b
        await trio.sleep(0.1)
        nursery.start_soon(hold, "d", 8192, 12288, True)  # elsewhere: no wait
    assert order.index("+b") < order.index("-a")
    assert order.index("+c") > max(order.index("-a"), order.index("-b"))
    assert order.index("+d") < order.index("-a")
    assert trio.current_time() == pytest.approx(2.1)  # c ran after b, d beside a
    assert gate.busy() == 0


async def test_write_needs_resize_when_size_is_unaligned(tmp_path: Path) -> None:
    # QEMU 11.1's qemu-io -t none on such a file says the same.
    graph = BlockGraph()
    path = make_image(tmp_path / "odd.img", (1 << 20) + 512)
    blockdev_add(
        graph,
        {"driver": "file", "node-name": "f", "filename": str(path), "cache": {"direct": True}},
    )
    node = graph.find("f")
    assert node.limits()["request-alignment"] == MAX_ALIGN
    writer = NodeUser("dev0", "device", Perm.CONSISTENT_READ | Perm.WRITE)
    with pytest.raises(GenericError) as exc:
        graph.attach(node, writer)
    assert exc.value.desc == (
        "Cannot get 'write' permission without 'resize': "
        "Image size is not a multiple of request alignment"
    )
    resizer = NodeUser("dev1", "device", Perm.WRITE | Perm.RESIZE)
    graph.attach(node, resizer)
    graph.detach(node, resizer)
    graph.delete("f")
    assert node.closed


# ------------------------------------------------------------ property test

_BASE = Path(tempfile.mkdtemp(prefix="qmpd-direct-"))
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["write", "zero", "discard", "read"]),
        st.integers(0, 48 * 1024),
        st.one_of(st.integers(1, 600), st.integers(1, 20_000)),
        st.integers(1, 255),
    ),
    max_size=12,
)


async def _run_ops(
    path: Path, model: bytearray, ops: list[tuple[str, int, int, int]], discard: str
) -> bytearray:
    node = direct_node(path, discard=discard)
    align = node.limits()["request-alignment"]
    size = node.size
    try:
        for op, offset, length, byte in ops:
            offset = min(offset, size)
            length = min(length, size - offset)
            if op == "write":
                data = bytes([byte]) * length
                await node.write(offset, data)
                model[offset : offset + length] = data
            elif op == "zero":
                await node.write_zeroes(offset, length, may_unmap=bool(byte & 1))
                model[offset : offset + length] = bytes(length)
            elif op == "discard":
                await node.discard(offset, length)
                if discard == "unmap":  # only the aligned inside is punched
                    lo = -(-offset // align) * align
                    hi = (offset + length) // align * align
                    if lo < hi:
                        model[lo:hi] = bytes(hi - lo)
            else:
                assert await node.read(offset, length) == model[offset : offset + length]
        assert node.size == size
        assert await node.read(0, size) == model
        for ext in await node.block_status(0, size):
            if ext.zero:
                assert not any(model[ext.start : ext.start + ext.length])
    finally:
        node.close()
    return model


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=_OPS,
    layout=st.sampled_from(["sparse", "data"]),
    blocks=st.integers(1, 16),
    discard=st.sampled_from(["ignore", "unmap"]),
)
def test_random_io_matches_a_bytes_model(
    ops: list[tuple[str, int, int, int]], layout: str, blocks: int, discard: str
) -> None:
    path = _BASE / "model.img"
    size = blocks * 4096
    if layout == "sparse":
        make_image(path, size)
    else:
        make_image(path, size, {0: os.urandom(size // 2 + 1)})
    model = trio.run(_run_ops, path, bytearray(path.read_bytes()), ops, discard)
    assert path.read_bytes() == model  # what a buffered reader sees


# ------------------------------------------------------------ real QEMU


@needs_qemu_io
async def test_qemu_io_reads_what_we_wrote(tmp_path: Path) -> None:
    path = make_image(tmp_path / "a.img", 1 << 20)
    node = direct_node(path)
    writes = {1: 0x11, 4095: 0x22, 7000: 0x33, 100_001: 0x44}
    for offset, byte in writes.items():
        await node.write(offset, bytes([byte]) * 999)
    await node.flush()
    node.close()
    for cache in ("writeback", "none"):
        for offset, byte in writes.items():
            proc = await trio.to_thread.run_sync(
                qemu_io, "-f", "raw", "-t", cache, "-r", "-c",
                f"read -P {byte:#x} {offset} 999", str(path),
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert "Pattern verification failed" not in proc.stdout
            assert "read 999/999 bytes" in proc.stdout


def _qemu_limits(files: dict[str, Path]) -> dict[str, Any]:
    kind = qsd_new_kind()
    assert kind is not None
    out: dict[str, Any] = {}
    with running(kind) as daemon, RawClient(daemon.sockets[0]) as client:
        client.negotiate()

        def execute(cmd: str, **args: Any) -> dict[str, Any]:
            client.send(json.dumps({"execute": cmd, "arguments": args}).encode())
            while True:
                reply: dict[str, Any] = json.loads(client.readline())
                if "event" not in reply:
                    return reply

        for name, path in files.items():
            opts = {"driver": "file", "node-name": name, "filename": str(path)}
            reply = execute("blockdev-add", **opts, cache={"direct": True}, aio="native")
            if "error" in reply:
                out[name] = reply["error"]["desc"]
                continue
        for info in execute("query-named-block-nodes")["return"]:
            out[info["node-name"]] = info["image"]["limits"]
    return out


async def test_limits_match_qemu(tmp_path: Path) -> None:
    if qsd_new_kind() is None:
        pytest.skip(why_missing("qsd-new"))
    files = {
        "sparse": make_image(tmp_path / "sparse.img", 1 << 20),
        "full": data_image(tmp_path / "full.img", 1 << 20),
        "empty": make_image(tmp_path / "empty.img", 0),
    }
    theirs = await trio.to_thread.run_sync(_qemu_limits, files)
    for name, path in files.items():
        node = direct_node(path)
        assert node.limits() == theirs[name], name
        node.close()
