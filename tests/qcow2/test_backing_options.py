"""An inline backing on an image whose header names one: QEMU hands the
header's filename to the inline node, which a protocol driver refuses
(texts observed on QEMU 11.1; tests/qcow2/test_info_differential.py
compares the accepted cases)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qmpd.block import BlockGraph, blockdev_add
from qmpd.errors import GenericError

from .conftest import create_image

REFUSED = {
    "file": "Can't specify 'file' and 'filename' options at the same time",
    "blkdebug": "Can't specify 'file' and 'filename' options at the same time",
    "null-co": "The only allowed filename for this driver is 'null-co://'",
    "null-aio": "The only allowed filename for this driver is 'null-aio://'",
}


def inline(driver: str, base: Path) -> dict[str, Any]:
    if driver == "file":
        return {"driver": "file", "filename": str(base)}
    if driver == "blkdebug":
        return {"driver": "blkdebug", "image": {"driver": "file", "filename": str(base)}}
    return {"driver": driver, "size": 1 << 20}


@pytest.mark.parametrize("driver", sorted(REFUSED))
async def test_protocol_backing_refused_on_a_header_backed_image(
    tmp_path: Path, driver: str
) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(bytes(1 << 20))
    top, plain = tmp_path / "top.qcow2", tmp_path / "plain.qcow2"
    await create_image(top, size=1 << 20, backing_file=str(base), backing_fmt="raw")
    await create_image(plain, size=1 << 20)
    graph = BlockGraph()
    args = {"driver": "qcow2", "node-name": "t", "file": {"driver": "file", "filename": str(top)}}
    with pytest.raises(GenericError) as exc:
        blockdev_add(graph, {**args, "backing": inline(driver, base)})
    assert exc.value.desc == f"Could not open backing file: {REFUSED[driver]}"
    assert len(graph) == 0
    # Without a backing file in the header the same node is taken.
    args["file"]["filename"] = str(plain)
    blockdev_add(graph, {**args, "backing": inline(driver, base)})
    graph.close_all()
