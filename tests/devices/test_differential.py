"""query-block and DEVICE_DELETED against QEMU 11.1's system emulator.

The same set-up (a file node, a null-co node, disks of each kind) is
made in qemu-system-x86_64 (``-M pc -accel qtest``, no guest) and in
qmpd; query-block must agree member by member.  QEMU needs a guest's
acknowledgement to unplug a PCI device; the test gives it through the
qtest protocol (a write to the PIIX4 ACPI eject register), so the order
of the DEVICE_DELETED events can be compared too.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.loopback import QMPPair
from tests.support.qemu_tools import new_tool, why_new_missing

# The PIIX4 ACPI PCI hotplug eject register of the pc machine.
PCI_EJECT_PORT = 0xAE08


class SyncQMP:
    """A minimal blocking QMP client for the reference process."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.file = self.sock.makefile("rwb")
        self.events: list[dict[str, Any]] = []
        self.read()
        self.execute("qmp_capabilities")

    def read(self) -> dict[str, Any]:
        line = self.file.readline()
        assert line, "QEMU closed the monitor"
        value: dict[str, Any] = json.loads(line)
        return value

    def execute(self, name: str, args: dict[str, Any] | None = None) -> Any:
        msg: dict[str, Any] = {"execute": name}
        if args is not None:
            msg["arguments"] = args
        self.file.write(json.dumps(msg).encode())
        self.file.flush()
        while True:
            reply = self.read()
            if "event" in reply:
                self.events.append(reply)
                continue
            return reply.get("return", reply)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


SETUP: list[tuple[str, dict[str, Any]]] = [
    ("blockdev-add", {"driver": "null-co", "node-name": "n0"}),
    ("blockdev-add", {"driver": "null-co", "node-name": "n1", "read-zeroes": True}),
    ("device_add", {"driver": "virtio-blk-pci", "id": "vd0", "drive": "f0"}),
    ("device_add", {"driver": "virtio-blk-pci", "drive": "n0"}),
    ("device_add", {"driver": "virtio-scsi-pci", "id": "scsi0"}),
    ("device_add", {"driver": "scsi-hd", "id": "sd0", "drive": "n1"}),
]


def file_setup(path: Path) -> list[tuple[str, dict[str, Any]]]:
    add = {"driver": "file", "filename": str(path), "node-name": "f0"}
    return [("blockdev-add", add), *SETUP]


@pytest.fixture
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the set-up in qemu-system; yield its query-block and the events
    of unplugging vd0.  Skips the test when QEMU 11.1 is absent."""
    qemu_system = new_tool("qemu-system")
    if qemu_system is None:
        pytest.skip(why_new_missing("qemu-system"))
    work = Path("/tmp") / f"qmpd-devices-{time.monotonic_ns()}"
    work.mkdir()
    image = work / "a.img"
    with image.open("wb") as f:
        f.truncate(1 << 20)
    qmp_path, qtest_path = str(work / "qmp.sock"), str(work / "qtest.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(qtest_path)
    listener.listen(1)
    proc = subprocess.Popen(
        [
            qemu_system,
            "-M",
            "pc",
            "-accel",
            "qtest",
            "-display",
            "none",
            "-nodefaults",
            "-qtest",
            f"unix:{qtest_path}",
            "-qmp",
            f"unix:{qmp_path},server=on,wait=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    qtest = None
    qmp = None
    try:
        listener.settimeout(20)
        qtest, _ = listener.accept()
        qmp = SyncQMP(qmp_path)
        for command, args in file_setup(image):
            assert qmp.execute(command, args) == {}, (command, args)
        blocks = qmp.execute("query-block")
        slot = next(
            d["slot"] for d in qmp.execute("query-pci")[0]["devices"] if d.get("qdev_id") == "vd0"
        )
        assert qmp.execute("device_del", {"id": "vd0"}) == {}
        qtest.sendall(f"outl {PCI_EJECT_PORT:#x} {1 << slot:#x}\n".encode())
        assert qtest.recv(100).startswith(b"OK")
        while len(qmp.events) < 2:
            qmp.events.append(qmp.read())
        yield {"image": image, "query-block": blocks, "events": qmp.events}
        qmp.execute("quit")
        proc.wait(timeout=20)
    finally:
        if qmp is not None:
            qmp.close()
        if qtest is not None:
            qtest.close()
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in work.iterdir():
            child.unlink()
        work.rmdir()


async def test_query_block_and_unplug_match_qemu(qmp: QMPPair, reference: dict[str, Any]) -> None:
    for command, args in file_setup(reference["image"]):
        assert await qmp.execute(command, args) == {}, (command, args)
    ours = await qmp.execute("query-block")
    theirs = reference["query-block"]
    assert len(ours) == len(theirs) == 3
    for mine, qemu in zip(ours, theirs, strict=True):
        assert mine == qemu
    assert await qmp.execute("device_del", {"id": "vd0"}) == {}
    assert [(e["event"], e["data"]) for e in qmp.events] == [
        (e["event"], e["data"]) for e in reference["events"]
    ]
