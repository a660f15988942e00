"""blockdev-add/-del, query-named-block-nodes and the x- zero commands over QMP.

Expected error texts are literals observed on qemu-storage-daemon 11.1.2
(Debian 1:11.1.2+ds-3) unless marked 7.2 (Debian 7.2.22); where the two
differ both are noted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.loopback import QMPPair

from .conftest import QEMU_IMG, make_image, needs_qemu_img, needs_qemu_io, qemu_img_map, qemu_io


def err(reply: Any) -> str:
    assert "error" in reply, reply
    assert reply["error"]["class"] == "GenericError"
    desc: str = reply["error"]["desc"]
    return desc


async def add(qmp: QMPPair, **args: Any) -> Any:
    return await qmp.execute("blockdev-add", {k.replace("_", "-"): v for k, v in args.items()})


async def test_add_query_del(qmp: QMPPair, image: Path) -> None:
    f = str(image)
    assert await add(qmp, driver="file", node_name="f1", filename=f) == {}
    assert await add(qmp, driver="raw", node_name="r1", file="f1") == {}
    assert await add(qmp, driver="null-co", node_name="n1") == {}
    assert await add(qmp, driver="null-aio", node_name="n2", size=4096, read_zeroes=True) == {}
    inline = {"driver": "file", "filename": f}
    assert await add(qmp, driver="raw", node_name="r2", file=inline, offset=512, size=1024) == {}
    nodes = await qmp.execute("query-named-block-nodes", {"flat": True})
    names = [n["node-name"] for n in nodes]
    assert names[0] == "r2"
    assert names[1].startswith("#block")
    assert names[2:] == ["n2", "n1", "r1", "f1"]
    by = {n["node-name"]: n for n in nodes}
    # The filenames QSD 11.1 reports for the same nodes.
    assert by["r2"]["file"] == (
        'json:{"offset": 512, "driver": "raw", "size": 1024, '
        f'"file": {{"driver": "file", "filename": "{f}"}}}}'
    )
    assert by["n2"]["file"] == 'json:{"read-zeroes": true, "driver": "null-aio", "size": 4096}'
    assert by["n1"]["file"] == "null-co://"
    assert by["r1"]["file"] == f
    assert by["r1"]["children"] == [{"child": "file", "node-name": "f1"}]
    assert by["f1"]["image"]["format-specific"] == {"type": "file", "data": {}}
    assert by["n1"]["image"]["limits"]["min-mem-alignment"] == 512
    assert by["r2"]["image"]["virtual-size"] == 1024
    assert err(await qmp.execute("blockdev-del", {"node-name": "f1"})) == (
        "Block device f1 is in use"
    )
    assert err(await qmp.execute("blockdev-del", {"node-name": names[1]})) == (
        f"Node {names[1]} is not owned by the monitor"
    )
    assert err(await qmp.execute("blockdev-del", {"node-name": "nope"})) == (
        "Failed to find node with node-name='nope'"
    )
    for name in ("r2", "r1", "f1", "n1", "n2"):
        assert await qmp.execute("blockdev-del", {"node-name": name}) == {}
    assert await qmp.execute("query-named-block-nodes") == []


@pytest.mark.parametrize(
    ("args", "desc"),
    [
        ({"driver": "vdi", "node-name": "x"}, "Unknown driver 'vdi'"),
        ({"driver": "nope", "node-name": "x"}, "Parameter 'driver' does not accept value 'nope'"),
        ({"driver": "null-co"}, "'node-name' must be specified for the root node"),
        ({"driver": "null-co", "node-name": "1bad"}, "Invalid node-name: '1bad'"),
        ({"driver": "null-co", "node-name": ""}, "Invalid node-name: ''"),
        ({"driver": "null-co", "node-name": "#block1"}, "Invalid node-name: '#block1'"),
        ({"driver": "null-co", "node-name": "a" * 32}, "Node name too long"),
        ({"driver": "null-co", "node-name": "x", "bogus": 1}, "Parameter 'bogus' is unexpected"),
        (
            {"driver": "null-co", "node-name": "x", "size": "5"},
            "Invalid parameter type for 'size', expected: integer",
        ),
        ({"driver": "raw", "node-name": "x"}, "Parameter 'file' is missing"),
        (
            {"driver": "raw", "node-name": "x", "file": 5},
            "Invalid parameter type for 'file', expected: BlockdevRef",
        ),
        (
            {"driver": "raw", "node-name": "x", "file": "nonode"},
            "Cannot find device='nonode' nor node-name='nonode'",
        ),
        (
            {"driver": "null-co", "node-name": "x", "force-share": True},
            "force-share=on can only be used with read-only images",
        ),
        (
            {"driver": "null-co", "node-name": "x", "detect-zeroes": "unmap"},
            "setting detect-zeroes to unmap is not allowed without setting discard "
            "operation to unmap",
        ),
        ({"driver": "null-co", "node-name": "x", "latency-ns": -1}, "latency-ns is invalid"),
        # QEMU 7.2 and 11.1 abort the whole daemon here; qmpd refuses.
        ({"driver": "null-co", "node-name": "x", "size": -1}, "size is invalid"),
        (
            {"driver": "file", "node-name": "x", "filename": ""},
            "The 'file' block driver requires a file name",
        ),
        (
            {"driver": "file", "node-name": "x", "filename": "/nonexistent/x"},
            "Could not open '/nonexistent/x': No such file or directory",
        ),
        (
            {"driver": "file", "node-name": "x", "filename": "/tmp"},
            "Could not open '/tmp': Is a directory",
        ),
    ],
)
async def test_add_errors(qmp: QMPPair, args: dict[str, Any], desc: str) -> None:
    assert err(await qmp.execute("blockdev-add", args)) == desc
    assert await qmp.execute("query-named-block-nodes") == []


async def test_add_errors_needing_files(qmp: QMPPair, image: Path) -> None:
    f = str(image)
    inline = {"driver": "file", "filename": f}
    assert err(await add(qmp, driver="file", node_name="x", filename=f, pr_manager="p")) == (
        "No persistent reservation manager with id 'p'"
    )
    assert err(await add(qmp, driver="file", node_name="x", filename=f, aio="native")) == (
        "aio=native was specified, but it requires cache.direct=on, which was not specified."
    )
    assert err(await add(qmp, driver="raw", node_name="x", file=inline, offset=2000000)) == (
        "Offset (2000000) cannot be greater than size of the containing file (1048576)"
    )
    assert err(
        await add(qmp, driver="raw", node_name="x", file=inline, offset=1000, size=1048000)
    ) == (
        "The sum of offset (1000) and size (1048000) has to be smaller or equal to the  "
        "actual size of the containing file (1048576)"
    )
    # 11.1; QEMU 7.2: "Parameter 'offset' expects a non-negative number below 2^64".
    assert err(await add(qmp, driver="raw", node_name="x", file=inline, offset=-1)) == (
        "Value '-1' is out of range for parameter 'offset'"
    )
    assert err(await add(qmp, driver="raw", node_name="x", file=inline, size=1000)) == (
        "Specified size is not multiple of 512"
    )
    assert await add(qmp, driver="null-co", node_name="dup") == {}
    assert err(await add(qmp, driver="null-co", node_name="dup")) == (
        "Duplicate nodes with node-name='dup'"
    )
    assert err(
        await add(qmp, driver="raw", node_name="r9", file={**inline, "node-name": "dup"})
    ) == ("Duplicate nodes with node-name='dup'")
    assert [n["node-name"] for n in await qmp.execute("query-named-block-nodes")] == ["dup"]


async def test_zero_state_and_map(qmp: QMPPair, image: Path) -> None:
    assert await add(qmp, driver="file", node_name="f", filename=str(image)) == {}
    assert await add(qmp, driver="null-co", node_name="z", size=65536, read_zeroes=True) == {}
    state = await qmp.execute("x-query-zero-state")
    assert state == [
        {
            "node-name": "z",
            "create": {"value": False, "how": "driver"},
            "open": {"value": True, "how": "flag"},
        },
        {
            "node-name": "f",
            "create": {"value": True, "how": "driver"},
            "open": {"value": False, "how": "none"},
        },
    ]
    assert await qmp.execute(
        "x-blockdev-map", {"node-name": "f", "offset": 60000, "length": 10000}
    ) == [
        {
            "start": 60000,
            "length": 5536,
            "depth": 0,
            "present": True,
            "zero": True,
            "data": False,
            "compressed": False,
            "offset": 60000,
        },
        {
            "start": 65536,
            "length": 4096,
            "depth": 0,
            "present": True,
            "zero": False,
            "data": True,
            "compressed": False,
            "offset": 65536,
        },
        {
            "start": 69632,
            "length": 368,
            "depth": 0,
            "present": True,
            "zero": True,
            "data": False,
            "compressed": False,
            "offset": 69632,
        },
    ]
    assert err(await qmp.execute("x-blockdev-map", {"node-name": "nope"})) == (
        "Failed to find node with node-name='nope'"
    )
    assert err(await qmp.execute("x-query-zero-state", {"node-name": "nope"})) == (
        "Failed to find node with node-name='nope'"
    )
    assert "error" in await qmp.execute("x-blockdev-map", {"node-name": "f", "offset": 1 << 21})


async def test_x_commands_are_unstable(qmp: QMPPair) -> None:
    schema = await qmp.execute("query-qmp-schema")
    by = {e["name"]: e for e in schema}
    assert by["x-query-zero-state"]["features"] == ["unstable"]
    assert by["x-blockdev-map"]["features"] == ["unstable"]


@needs_qemu_img
@needs_qemu_io
async def test_written_data_reads_back_with_qemu_tools(
    qmp: QMPPair, app: Any, tmp_path: Path
) -> None:
    path = make_image(tmp_path / "out.img", 4 << 20)
    ref = make_image(tmp_path / "ref.img", 4 << 20)
    assert (
        await add(
            qmp,
            driver="raw",
            node_name="r",
            discard="unmap",
            file={"driver": "file", "filename": str(path)},
        )
        == {}
    )
    node = app.graph.find("r")
    await node.write(1 << 20, b"\xab" * 65536)
    await node.write(3 << 20, b"\xcd" * 512)
    await node.write_zeroes(1 << 20, 4096, may_unmap=True)
    await node.flush()
    make_image(ref, 4 << 20, {1 << 20: bytes(4096) + b"\xab" * 61440, 3 << 20: b"\xcd" * 512})
    assert QEMU_IMG is not None
    cmp = await trio.run_process(
        [QEMU_IMG, "compare", "-U", "-f", "raw", "-F", "raw", str(path), str(ref)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert b"Images are identical." in cmp.stdout
    reads = ["read -P 0xab 1052672 61440", "read -P 0 1048576 4096", "read -P 0xcd 3145728 512"]
    args = ["-U", "-r", "-f", "raw"] + [a for r in reads for a in ("-c", r)] + [str(path)]
    io = await trio.to_thread.run_sync(lambda: qemu_io(*args))
    assert io.returncode == 0, io.stderr
    assert "Pattern verification failed" not in io.stdout, io.stdout
    ours = await qmp.execute("x-blockdev-map", {"node-name": "r"})
    theirs = await trio.to_thread.run_sync(qemu_img_map, path)
    assert [{k: v for k, v in e.items() if k != "compressed"} for e in ours] == theirs
