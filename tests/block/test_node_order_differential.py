"""query-named-block-nodes' order, and what it says of filters, against
QEMU 11.1's qemu-storage-daemon.

QEMU lists nodes newest name first, and names a format node (raw, qcow2)
after it opened its ``file`` child but before its backing, while blkdebug
is named before the ``image`` it opens itself.  One blockdev-add of a tree
must list as QEMU lists it; a filter shows its filtered child as
``backing-image`` and counts it in ``backing_file_depth``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemons import (
    DaemonKind,
    RawClient,
    qmpd_kind,
    qsd_new_kind,
    running,
    why_missing,
)

pytestmark = pytest.mark.qemu


def _file(name: str, path: Path) -> dict[str, Any]:
    return {"driver": "file", "node-name": name, "filename": str(path)}


def trees(work: Path) -> dict[str, list[dict[str, Any]]]:
    base, mid, top = work / "base.img", work / "mid.qcow2", work / "top.qcow2"
    return {
        "raw-blkdebug-raw-file": [{
            "driver": "raw", "node-name": "r",
            "file": {"driver": "blkdebug", "node-name": "d",
                     "image": {"driver": "raw", "node-name": "r2", "file": _file("f", base)}},
        }],
        "qcow2-inline-backing": [{
            "driver": "qcow2", "node-name": "t", "file": _file("tf", top),
            "backing": {"driver": "qcow2", "node-name": "m", "file": _file("mf", mid),
                        "backing": {"driver": "raw", "node-name": "b", "file": _file("bf", base)}},
        }],
        "file-then-raw-by-name": [
            _file("x", base),
            {"driver": "raw", "node-name": "y", "file": "x"},
            {"driver": "blkdebug", "node-name": "z", "image": "y"},
        ],
    }  # fmt: skip


def make_images(work: Path) -> None:
    img = os.environ.get("QEMU_IMG", "qemu-img")
    (work / "base.img").write_bytes(bytes(1 << 20))
    for name, backing, fmt in (
        ("mid.qcow2", "base.img", "raw"),
        ("top.qcow2", "mid.qcow2", "qcow2"),
    ):
        subprocess.run(
            [img, "create", "-q", "-f", "qcow2", "-b", str(work / backing), "-F", fmt,
             str(work / name), "1M"],
            check=True,
        )  # fmt: skip


def listing(kind: DaemonKind, adds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with running(kind) as daemon, RawClient(daemon.sockets[0], timeout=30) as client:
        client.negotiate()
        for args in adds:
            client.send(json.dumps({"execute": "blockdev-add", "arguments": args}).encode())
            reply = json.loads(client.readline())
            assert "return" in reply, reply
        client.send(b'{"execute": "query-named-block-nodes"}')
        nodes: list[dict[str, Any]] = json.loads(client.readline())["return"]
        return nodes


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("order", numbered=True)
    if not str(work).startswith("/tmp/"):
        pytest.skip("QEMU 11.1 runs in a chroot that sees only /tmp")
    if subprocess.run(["which", "qemu-img"], capture_output=True).returncode:
        pytest.skip("qemu-img is not installed")
    make_images(work)
    return work


@pytest.mark.parametrize(
    "tree", ["raw-blkdebug-raw-file", "qcow2-inline-backing", "file-then-raw-by-name"]
)
def test_order_and_filters_as_qemu(tree: str, work: Path) -> None:
    reference = qsd_new_kind()
    if reference is None:
        pytest.skip(why_missing("qsd-new"))
    adds = trees(work)[tree]
    mine, theirs = listing(qmpd_kind(), adds), listing(reference, adds)
    assert [n["node-name"] for n in mine] == [n["node-name"] for n in theirs]
    for a, b in zip(mine, theirs, strict=True):
        if a["drv"] == "blkdebug":
            assert a["backing_file_depth"] == b["backing_file_depth"] == 1
            assert (
                a["image"]["backing-image"]["filename"] == b["image"]["backing-image"]["filename"]
            )
