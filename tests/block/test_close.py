"""Closing nodes as QEMU does: flushed first, parents before children
(BlockGraph.aclose_all at exit, BlockGraph.arelease for blockdev-del)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpd.block import BlockGraph, BlockNode, blockdev_add
from qmpd.block.file import FileNode
from qmpd.block.qcow2.format import parse_header
from tests.support.loopback import QMPPair

from ..qcow2.conftest import create_image, open_qcow2

MiB = 1 << 20


def _dirty(path: Path) -> bool:
    return parse_header(path.read_bytes()[:65536]).dirty


async def test_aclose_all_closes_parents_first_and_cleans_qcow2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.qcow2"
    await create_image(path, size=4 * MiB, lazy_refcounts=True)
    graph = BlockGraph()
    node = open_qcow2(graph, path)
    await node.write(0, b"x" * 100_000)  # a new L2 table: its L1 entry waits
    assert _dirty(path)
    seen: list[tuple[str, list[bool]]] = []
    real = BlockNode.aclose

    async def spy(self: BlockNode) -> None:
        seen.append((self.name, [p.closed for p, _ in self.parents]))
        await real(self)

    monkeypatch.setattr(BlockNode, "aclose", spy)
    await graph.aclose_all()
    assert len(graph) == 0
    assert seen[0][0] == "q"
    assert all(all(parents) for _, parents in seen)
    assert not _dirty(path)


async def test_close_order_puts_every_parent_first(tmp_path: Path) -> None:
    graph = BlockGraph()
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(bytes(MiB))
    base = blockdev_add(
        graph, {"driver": "file", "node-name": "fa", "filename": str(tmp_path / "a")}
    )
    blockdev_add(graph, {"driver": "raw", "node-name": "r1", "file": "fa"})
    blockdev_add(graph, {"driver": "raw", "node-name": "r2", "file": "r1"})
    blockdev_add(graph, {"driver": "file", "node-name": "fb", "filename": str(tmp_path / "b")})
    order = [node.name for node in graph.close_order()]
    assert order.index("r2") < order.index("r1") < order.index("fa")
    assert sorted(order) == ["fa", "fb", "r1", "r2"]
    assert isinstance(base, FileNode)
    await graph.aclose_all()
    assert base.closed


async def _hmp_write(qmp: QMPPair, node: str) -> None:
    out = await qmp.execute(
        "human-monitor-command", {"command-line": f'qemu-io {node} "write -P 0x55 0 4k"'}
    )
    assert out.startswith("wrote 4096/4096"), out


async def test_blockdev_del_syncs_a_file_node_before_closing_it(
    qmp: QMPPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QEMU's bdrv_close flushes: what was written through a raw node is
    on disk once blockdev-del has answered, not only in the page cache."""
    path = tmp_path / "a.raw"
    path.write_bytes(bytes(MiB))
    seen: list[str] = []
    real_sync, real_close = FileNode.sync, FileNode.close

    def sync(self: FileNode) -> None:
        seen.append("sync")
        real_sync(self)

    def close(self: FileNode) -> None:
        seen.append("close")
        real_close(self)

    monkeypatch.setattr(FileNode, "sync", sync)
    monkeypatch.setattr(FileNode, "close", close)
    args = {"driver": "raw", "node-name": "r", "file": {"driver": "file", "filename": str(path)}}
    assert await qmp.execute("blockdev-add", args) == {}
    await _hmp_write(qmp, "r")
    assert seen == []
    assert await qmp.execute("blockdev-del", {"node-name": "r"}) == {}
    # Synced (once per layer: the raw node's flush reaches the file, then
    # the file's own close flushes it), and only then closed.
    assert seen[-1] == "close"
    assert "sync" in seen[:-1]
    assert await qmp.execute("query-named-block-nodes") == []


async def test_blockdev_del_succeeds_when_its_flush_fails(qmp: QMPPair, tmp_path: Path) -> None:
    """QEMU 11.1 answers ``{}`` and removes the node even though the flush
    made while closing fails (bdrv_close ignores it); the file is closed."""
    path = tmp_path / "a.raw"
    path.write_bytes(bytes(MiB))
    rule = {"event": "write_aio", "iotype": "flush", "errno": 5}
    args = {
        "driver": "raw",
        "node-name": "r",
        "file": {
            "driver": "blkdebug",
            "node-name": "dbg",
            "inject-error": [rule],
            "image": {"driver": "file", "node-name": "f", "filename": str(path)},
        },
    }
    assert await qmp.execute("blockdev-add", args) == {}
    await _hmp_write(qmp, "r")
    flush = await qmp.execute("human-monitor-command", {"command-line": 'qemu-io r "flush"'})
    assert "flush failed: Input/output error" in flush
    assert await qmp.execute("blockdev-del", {"node-name": "r"}) == {}
    assert await qmp.execute("query-named-block-nodes") == []
