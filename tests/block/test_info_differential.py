"""query-named-block-nodes, member by member and in order, against QEMU
11.1's qemu-storage-daemon.

Each case runs the same blockdev-adds on qmpd and on QEMU and compares
the listing, flat and not, except ``actual-size`` (host allocation) and
the numbers of auto-generated ``#block`` names.  The cases cover what
only qcow2 shows (cluster size, limits, the header's backing file and its
format, BlockDeviceInfo's ``backing_file``, the children newest first)
and where it comes from: the header, an implicit backing chain, a
backing given by name, inline, ``null``, or other than the header's.

The order is QEMU's naming order, newest first: a format node (raw,
qcow2) is named after its ``file`` but before its backing, blkdebug before
the ``image`` it opens itself; a filter shows its filtered child as
``backing-image`` and counts it in ``backing_file_depth``.
"""

from __future__ import annotations

import json
import subprocess
import time
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
from tests.support.qemu_tools import system_tool, why_system_missing

pytestmark = pytest.mark.qemu


def _file(name: str, path: Path) -> dict[str, Any]:
    return {"driver": "file", "node-name": name, "filename": str(path)}


def _qcow2(name: str, path: Path, **extra: Any) -> dict[str, Any]:
    return {"driver": "qcow2", "node-name": name, "file": _file(name + "f", path), **extra}


def cases(work: Path) -> dict[str, list[dict[str, Any]]]:
    base = work / "base.img"
    raw_base = {"driver": "raw", "node-name": "b", "file": _file("bf", base)}
    return {
        "fresh": [_qcow2("t", work / "fresh.qcow2")],
        "compat-0.10": [_qcow2("t", work / "v2.qcow2")],
        "header-chain": [_qcow2("t", work / "top.qcow2")],
        "header-relative": [_qcow2("t", work / "rel.qcow2")],
        "backing-null": [_qcow2("t", work / "top.qcow2", backing=None)],
        "backing-by-name": [raw_base, _qcow2("t", work / "mid.qcow2", backing="b")],
        "backing-not-in-header": [raw_base, _qcow2("t", work / "fresh.qcow2", backing="b")],
        "backing-other-than-header": [
            {"driver": "null-co", "node-name": "n", "size": 1000},
            _qcow2("t", work / "mid.qcow2", backing="n"),
        ],
        "backing-inline": [
            _qcow2(
                "t", work / "top.qcow2", backing=_qcow2("m", work / "mid.qcow2", backing=raw_base)
            )
        ],
        "qmpd-created": [_qcow2("t", work / "created.qcow2")],
        # Trees of one blockdev-add, and nodes added one by one.
        "raw-blkdebug-raw-file": [
            {
                "driver": "raw",
                "node-name": "r",
                "file": {
                    "driver": "blkdebug",
                    "node-name": "d",
                    "image": {"driver": "raw", "node-name": "r2", "file": _file("f", base)},
                },
            }
        ],
        "file-raw-blkdebug-by-name": [
            _file("x", base),
            {"driver": "raw", "node-name": "y", "file": "x"},
            {"driver": "blkdebug", "node-name": "z", "image": "y"},
        ],
        # Not qcow2, but the same rounding: QEMU counts 512-byte sectors.
        "raw-odd-size": [
            {"driver": "raw", "node-name": "r", "file": _file("rf", work / "odd.img")}
        ],
    }


def _call(client: RawClient, command: str, args: dict[str, Any] | None = None) -> Any:
    msg: dict[str, Any] = {"execute": command}
    if args is not None:
        msg["arguments"] = args
    client.send(json.dumps(msg).encode())
    while True:
        reply = json.loads(client.readline())
        if "event" not in reply:
            assert "return" in reply, (command, reply)
            return reply["return"]


def create_with_qmpd(path: Path) -> None:
    """A qcow2 image made by qmpd's blockdev-create (it carries qmpd's
    all-zero autoclear bit and header extension)."""
    path.write_bytes(b"")
    with running(qmpd_kind()) as daemon, RawClient(daemon.sockets[0], timeout=30) as client:
        client.negotiate()
        _call(client, "blockdev-add", _file("c", path))
        options = {"driver": "qcow2", "file": "c", "size": 1 << 20}
        _call(client, "blockdev-create", {"job-id": "j", "options": options})
        deadline = time.monotonic() + 30
        while _call(client, "query-jobs")[0]["status"] != "concluded":
            assert time.monotonic() < deadline, "blockdev-create did not conclude"
            time.sleep(0.01)
        _call(client, "job-dismiss", {"id": "j"})
        _call(client, "blockdev-del", {"node-name": "c"})


def make_images(work: Path) -> None:
    img = system_tool("qemu-img")
    assert img is not None
    (work / "base.img").write_bytes(bytes(1 << 20))
    (work / "odd.img").write_bytes(bytes(1000))
    for name, opts in (
        ("fresh.qcow2", []),
        ("v2.qcow2", ["-o", "compat=0.10"]),
        ("mid.qcow2", ["-b", str(work / "base.img"), "-F", "raw"]),
        ("top.qcow2", ["-b", str(work / "mid.qcow2"), "-F", "qcow2"]),
        ("rel.qcow2", ["-b", "base.img", "-F", "raw"]),
    ):
        subprocess.run(
            [img, "create", "-q", "-f", "qcow2", *opts, str(work / name), "1M"],
            check=True,
            cwd=work,
        )
    create_with_qmpd(work / "created.qcow2")


def _normal(value: Any) -> Any:
    # Auto-generated names differ from run to run: keep only that they are.
    if isinstance(value, dict):
        return {
            key: "#" if key == "node-name" and str(item).startswith("#") else _normal(item)
            for key, item in value.items()
            if key != "actual-size"
        }
    if isinstance(value, list):
        return [_normal(item) for item in value]
    return value


def listings(kind: DaemonKind, adds: list[dict[str, Any]]) -> tuple[Any, Any]:
    with running(kind) as daemon, RawClient(daemon.sockets[0], timeout=30) as client:
        client.negotiate()
        for args in adds:
            _call(client, "blockdev-add", args)
        tree = _call(client, "query-named-block-nodes")
        flat = _call(client, "query-named-block-nodes", {"flat": True})
        return _normal(tree), _normal(flat)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("qcow2info", numbered=True)
    if not str(work).startswith("/tmp/"):
        pytest.skip("QEMU 11.1 runs in a chroot that sees only /tmp")
    if system_tool("qemu-img") is None:
        pytest.skip(why_system_missing("qemu-img"))
    make_images(work)
    return work


@pytest.mark.parametrize(
    "case",
    [
        "fresh",
        "compat-0.10",
        "header-chain",
        "header-relative",
        "backing-null",
        "backing-by-name",
        "backing-not-in-header",
        "backing-other-than-header",
        "backing-inline",
        "qmpd-created",
        "raw-blkdebug-raw-file",
        "file-raw-blkdebug-by-name",
        "raw-odd-size",
    ],
)
def test_named_block_nodes_as_qemu(case: str, work: Path) -> None:
    reference = qsd_new_kind()
    if reference is None:
        pytest.skip(why_missing("qsd-new"))
    adds = cases(work)[case]
    # qmpd first: QEMU clears the autoclear bit it does not know when it
    # opens qmpd's image read-write, and qmpd must see it as created.
    mine, theirs = listings(qmpd_kind(), adds), listings(reference, adds)
    for ours, qemu in zip(mine, theirs, strict=True):
        assert [n["node-name"] for n in ours] == [n["node-name"] for n in qemu]
        for a, b in zip(ours, qemu, strict=True):
            assert a == b, a["node-name"]
