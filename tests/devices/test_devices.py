"""device_add, device_del and query-block over QMP.

Expected texts and shapes are literals observed on qemu-system-x86_64
11.1.2 (Debian 1:11.1.2+ds-3, ``-M pc -accel qtest -nodefaults``) with
the same commands; test_differential.py repeats the comparison live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qmpd.app import App
from tests.support.loopback import QMPPair


def err(reply: Any, cls: str = "GenericError") -> str:
    assert "error" in reply, reply
    assert reply["error"]["class"] == cls, reply
    desc: str = reply["error"]["desc"]
    return desc


async def add_null(qmp: QMPPair, *names: str) -> None:
    for name in names:
        assert await qmp.execute("blockdev-add", {"driver": "null-co", "node-name": name}) == {}


async def test_query_block_shapes(qmp: QMPPair, tmp_path: Path) -> None:
    img = tmp_path / "a.img"
    with img.open("wb") as f:
        f.truncate(1 << 20)
    args = {"driver": "file", "filename": str(img), "node-name": "f0"}
    assert await qmp.execute("blockdev-add", args) == {}
    await add_null(qmp, "n0", "n1")
    assert await qmp.execute("query-block") == []
    assert (
        await qmp.execute("device_add", {"driver": "virtio-blk-pci", "id": "vd0", "drive": "f0"})
        == {}
    )
    assert await qmp.execute("device_add", {"driver": "virtio-blk", "drive": "n0"}) == {}
    assert await qmp.execute("device_add", {"driver": "virtio-scsi-pci", "id": "scsi0"}) == {}
    assert await qmp.execute("device_add", {"driver": "scsi-hd", "id": "sd0", "drive": "n1"}) == {}
    blocks = await qmp.execute("query-block")
    assert [b["qdev"] for b in blocks] == [
        "/machine/peripheral/vd0/virtio-backend",
        "/machine/peripheral-anon/device[0]/virtio-backend",
        "sd0",
    ]
    first = blocks[0]
    assert {k: v for k, v in first.items() if k != "inserted"} == {
        "io-status": "ok",
        "device": "",
        "locked": False,
        "removable": False,
        "qdev": "/machine/peripheral/vd0/virtio-backend",
        "type": "unknown",
    }
    inserted = first["inserted"]
    assert inserted["node-name"] == "f0"
    assert inserted["file"] == str(img)
    assert inserted["cache"] == {"no-flush": False, "direct": False, "writeback": True}
    assert inserted["image"]["virtual-size"] == 1 << 20
    assert blocks[2]["inserted"]["drv"] == "null-co"


async def test_device_errors(qmp: QMPPair) -> None:
    await add_null(qmp, "n0", "n1")
    ok = {"driver": "virtio-blk-pci", "id": "vd0", "drive": "n0"}
    assert await qmp.execute("device_add", ok) == {}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"id": "x"}, "Parameter 'driver' is missing"),
        ({"driver": 5, "drive": "n1"}, "Parameter 'driver' is missing"),
        ({"driver": "bogus"}, "'bogus' is not a valid device model name"),
        ({"driver": "virtio-blk-pci", "id": "vd0", "drive": "n1"}, "Duplicate device ID 'vd0'"),
        ({"driver": "virtio-blk-pci", "id": "1bad", "drive": "n1"}, "Invalid qdev ID '1bad'"),
        ({"driver": "virtio-blk-pci", "id": "v"}, "drive property not set"),
        (
            {"driver": "virtio-blk-pci", "id": "v", "drive": "nope"},
            "Property 'virtio-blk-device.drive' can't find value 'nope'",
        ),
        (
            {"driver": "virtio-blk-pci", "id": "v", "drive": 5},
            "Invalid parameter type for 'drive', expected: string",
        ),
        (
            {"driver": "virtio-blk-pci", "id": "v", "drive": "n1", "bogus": 1},
            "Property 'virtio-blk-pci.bogus' not found",
        ),
        (
            {"driver": "virtio-blk-pci", "id": "v", "drive": "n1", "bus": "nope"},
            "Bus 'nope' not found",
        ),
        (
            {"driver": "scsi-hd", "id": "sd", "drive": "n1"},
            "No 'SCSI' bus found for device 'scsi-hd'",
        ),
        (
            {"driver": "virtio-blk-pci", "id": "vd1", "drive": "n0"},
            "Permission conflict on node 'n0': permissions 'write' are both required by "
            "block device '/machine/peripheral/vd0/virtio-backend' (uses node 'n0' as 'root' "
            "child) and unshared by block device '/machine/peripheral/vd1/virtio-backend' "
            "(uses node 'n0' as 'root' child).",
        ),
        (
            {"driver": "virtio-blk-pci", "id": "vd1", "drive": "n0", "share-rw": True},
            "Permission conflict on node 'n0': permissions 'write' are both required by "
            "block device '/machine/peripheral/vd1/virtio-backend' (uses node 'n0' as 'root' "
            "child) and unshared by block device '/machine/peripheral/vd0/virtio-backend' "
            "(uses node 'n0' as 'root' child).",
        ),
    ]
    for args, desc in cases:
        assert err(await qmp.execute("device_add", args)) == desc, args
    assert err(await qmp.execute("blockdev-del", {"node-name": "n0"})) == "Node n0 is in use"
    assert err(await qmp.execute("device_del", {"id": "nope"}), "DeviceNotFound") == (
        "Device 'nope' not found"
    )
    assert err(await qmp.execute("device_del", {})) == "Parameter 'id' is missing"
    # Nothing above left a device or a user behind.
    assert len(await qmp.execute("query-block")) == 1


async def test_device_del_events(app: App, qmp: QMPPair) -> None:
    await add_null(qmp, "n0", "n1", "n2")
    await qmp.execute("device_add", {"driver": "virtio-blk-pci", "id": "vd0", "drive": "n0"})
    await qmp.execute("device_add", {"driver": "virtio-scsi-pci", "id": "scsi0"})
    await qmp.execute("device_add", {"driver": "scsi-hd", "drive": "n1", "bus": "scsi0.0"})
    await qmp.execute("device_add", {"driver": "ide-hd", "id": "hd0", "drive": "n2"})
    assert await qmp.execute("device_del", {"id": "vd0"}) == {}
    assert [(e["event"], e["data"]) for e in qmp.events] == [
        ("DEVICE_DELETED", {"path": "/machine/peripheral/vd0/virtio-backend"}),
        ("DEVICE_DELETED", {"device": "vd0", "path": "/machine/peripheral/vd0"}),
    ]
    qmp.events.clear()
    # The node is free again.
    assert await qmp.execute("blockdev-del", {"node-name": "n0"}) == {}
    # A controller takes its disks with it.
    assert await qmp.execute("device_del", {"id": "/machine/peripheral/scsi0"}) == {}
    assert [e["data"] for e in qmp.events] == [
        {"path": "/machine/peripheral-anon/device[0]"},
        {"device": "scsi0", "path": "/machine/peripheral/scsi0"},
    ]
    assert [b["qdev"] for b in await qmp.execute("query-block")] == ["hd0"]
    assert await qmp.execute("blockdev-del", {"node-name": "n1"}) == {}
    assert err(await qmp.execute("device_del", {"id": "vd0"}), "DeviceNotFound") == (
        "Device 'vd0' not found"
    )


async def test_read_only_node(qmp: QMPPair) -> None:
    args = {"driver": "null-co", "node-name": "ro", "read-only": True}
    assert await qmp.execute("blockdev-add", args) == {}
    reply = await qmp.execute("device_add", {"driver": "scsi-hd", "drive": "ro"})
    assert err(reply) == "No 'SCSI' bus found for device 'scsi-hd'"
    reply = await qmp.execute("device_add", {"driver": "ide-hd", "drive": "ro"})
    assert err(reply) == "Block node is read-only"
    assert await qmp.execute("blockdev-del", {"node-name": "ro"}) == {}


async def test_introspection_matches_qemu(qmp: QMPPair) -> None:
    schema = await qmp.execute("query-qmp-schema")
    by_name = {e["name"]: e for e in schema}
    cmd = by_name["device_add"]
    assert cmd["features"] == ["json-cli", "json-cli-hotplug"]
    assert by_name[cmd["arg-type"]]["members"] == [
        {"name": "driver", "type": "str"},
        {"name": "bus", "default": None, "type": "str"},
        {"name": "id", "default": None, "type": "str"},
    ]
    hmp = by_name["human-monitor-command"]
    assert hmp["ret-type"] == "str"
    assert by_name[hmp["arg-type"]]["members"] == [
        {"name": "command-line", "type": "str"},
        {"name": "cpu-index", "default": None, "type": "int"},
    ]
    info = by_name[by_name[by_name["query-block"]["ret-type"]]["element-type"]]
    assert [m["name"] for m in info["members"]] == [
        "device",
        "qdev",
        "type",
        "removable",
        "locked",
        "inserted",
        "tray_open",
        "io-status",
    ]
    event = by_name["DEVICE_DELETED"]
    assert by_name[event["arg-type"]]["members"] == [
        {"name": "device", "default": None, "type": "str"},
        {"name": "path", "type": "str"},
    ]
