"""x-debug-query-block-graph: QEMU 11.1's vertices, edges, numbering and order.

The expected values were taken from QEMU 11.1 (qemu-system-x86_64 -M pc
-accel qtest for the device case); the differential test asks
qemu-storage-daemon 11.1 live for the same graph without devices.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from qmpd.app import App
from tests.differential.kinds import find_kind
from tests.support.daemons import RawClient, running
from tests.support.loopback import QMPPair

ALL = ["resize", "write-unchanged", "write", "consistent-read"]


def _auto(graph: dict[str, Any]) -> str:
    [name] = [n["name"] for n in graph["nodes"] if n["name"].startswith("#block")]
    return str(name)


async def test_empty(qmp: QMPPair) -> None:
    assert await qmp.execute("x-debug-query-block-graph") == {"nodes": [], "edges": []}


async def test_unstable_feature(app: App) -> None:
    [entry] = [e for e in app.schema.introspect() if e["name"] == "x-debug-query-block-graph"]
    assert entry["features"] == ["unstable"]


async def test_nodes_without_users(qmp: QMPPair, tmp_path: Path) -> None:
    img = tmp_path / "g.img"
    img.write_bytes(bytes(1 << 20))
    file = {"driver": "file", "filename": str(img)}
    await qmp.execute("blockdev-add", {"driver": "raw", "node-name": "r0", "file": file})
    await qmp.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"})
    graph = await qmp.execute("x-debug-query-block-graph")
    auto = _auto(graph)
    # Numbered in creation order (the inline child first), listed newest first.
    assert graph == {
        "nodes": [
            {"id": 3, "type": "block-driver", "name": "n0"},
            {"id": 2, "type": "block-driver", "name": "r0"},
            {"id": 1, "type": "block-driver", "name": auto},
        ],
        "edges": [
            {"parent": 2, "child": 1, "name": "file", "perm": [], "shared-perm": ALL},
        ],
    }


async def test_device(qmp: QMPPair, tmp_path: Path) -> None:
    img = tmp_path / "g.img"
    img.write_bytes(bytes(1 << 20))
    file = {"driver": "file", "filename": str(img)}
    await qmp.execute("blockdev-add", {"driver": "raw", "node-name": "r0", "file": file})
    await qmp.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"})
    args = {"driver": "virtio-blk-pci", "id": "vd0", "drive": "r0"}
    assert await qmp.execute("device_add", args) == {}
    graph = await qmp.execute("x-debug-query-block-graph")
    auto = _auto(graph)
    disk = {
        "perm": ["write", "consistent-read"],
        "shared-perm": ["resize", "write-unchanged", "consistent-read"],
    }
    # As qemu-system 11.1 answers for the same set-up.
    assert graph == {
        "nodes": [
            {"id": 4, "type": "block-driver", "name": "n0"},
            {"id": 2, "type": "block-driver", "name": "r0"},
            {"id": 3, "type": "block-driver", "name": auto},
            {
                "id": 1,
                "type": "block-backend",
                "name": "/machine/peripheral/vd0/virtio-backend",
            },
        ],
        "edges": [
            {"parent": 2, "child": 3, "name": "file", **disk},
            {"parent": 1, "child": 2, "name": "root", **disk},
        ],
    }
    await qmp.execute("device_del", {"id": "vd0"})
    graph = await qmp.execute("x-debug-query-block-graph")
    assert [n["type"] for n in graph["nodes"]] == ["block-driver"] * 3


# ------------------------------------------------------------ against QSD 11.1

_AUTO = re.compile(r"#block\d+")


def _graph_of(kind_name: str, img: str) -> Any:
    kind = find_kind(kind_name)
    with running(kind) as daemon, RawClient(daemon.sockets[0]) as client:
        client.negotiate()
        commands: list[tuple[str, dict[str, Any]]] = [
            (
                "blockdev-add",
                {"driver": "raw", "node-name": "r0", "file": {"driver": "file", "filename": img}},
            ),
            ("blockdev-add", {"driver": "null-co", "node-name": "n0"}),
            (
                "blockdev-add",
                {"driver": "file", "node-name": "f1", "filename": img, "read-only": True},
            ),
            ("blockdev-add", {"driver": "raw", "node-name": "r1", "file": "f1"}),
            ("blockdev-add", {"driver": "raw", "node-name": "r2", "offset": 512, "file": "f1"}),
            ("blockdev-del", {"node-name": "n0"}),
            ("x-debug-query-block-graph", {}),
        ]
        reply: Any = None
        for name, args in commands:
            client.send(json.dumps({"execute": name, "arguments": args}).encode())
            reply = json.loads(client.readline())
            assert "return" in reply, reply
        return json.loads(_AUTO.sub("#auto", json.dumps(reply["return"])))


@pytest.mark.qemu
def test_matches_qsd_11_1(tmp_path: Path) -> None:
    img = tmp_path / "g.img"
    img.write_bytes(bytes(1 << 20))
    reference = _graph_of("qsd-new", str(img))
    assert _graph_of("qmpd", str(img)) == reference
