"""Closing the graph: parents before children, flushed (BlockGraph.aclose_all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpd.block import BlockGraph, BlockNode, blockdev_add
from qmpd.block.file import FileNode
from qmpd.block.qcow2.format import parse_header

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
