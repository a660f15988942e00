"""Helpers for the qcow2 tests: QEMU's tools (Debian's 7.2 and 11.1) and
images opened directly on a block graph."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qmpd.block import BlockGraph, BlockNode, blockdev_add
from qmpd.block.file import FileNode
from qmpd.block.options import common_options
from qmpd.block.qcow2 import create_qcow2
from tests.support.qemu_tools import (
    new_tool,
    system_tool,
    system_tool_or_skip,
    why_system_missing,
)

QEMU_IMG = system_tool("qemu-img")
QEMU_IO = system_tool("qemu-io")
QEMU_IMG_NEW = new_tool("qemu-img")
QEMU_IO_NEW = new_tool("qemu-io")

needs_qemu = pytest.mark.skipif(
    QEMU_IMG is None or QEMU_IO is None,
    reason=why_system_missing("qemu-img" if QEMU_IMG is None else "qemu-io"),
)

#: Every qemu-img there is, for "passes check on both versions".
IMGS = [p for p in (QEMU_IMG, QEMU_IMG_NEW) if p is not None]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check)


def img(*args: str, tool: str | None = None) -> subprocess.CompletedProcess[str]:
    """Debian's qemu-img (or ``tool``) with ``args``; skips the test without it."""
    return run(tool or system_tool_or_skip("qemu-img"), *args)


def qio(path: Path, *commands: str, fmt: str = "qcow2") -> None:
    """Debian's qemu-io running ``commands``; skips the test without it."""
    args = [system_tool_or_skip("qemu-io"), "-f", fmt]
    for command in commands:
        args += ["-c", command]
    result = run(*args, str(path))
    assert "error" not in result.stdout.lower() + result.stderr.lower(), result


def check_clean(path: Path) -> None:
    """``qemu-img check`` on every installed QEMU: no errors, no leaks."""
    for tool in IMGS:
        result = run(tool, "check", "--output=json", str(path), check=False)
        assert result.returncode == 0, (tool, result.stdout, result.stderr)
        report = json.loads(result.stdout)
        assert report.get("check-errors", 0) == 0, report
        assert report.get("leaks", 0) == 0, report
        assert report.get("corruptions", 0) == 0, report


def check_consistent(path: Path) -> None:
    """``qemu-img check`` on every installed QEMU: leaked clusters allowed
    (what an interrupted allocation leaves), errors and corruptions never."""
    for tool in IMGS:
        result = run(tool, "check", "--output=json", str(path), check=False)
        assert result.returncode in (0, 3), (tool, result.stdout, result.stderr)
        report = json.loads(result.stdout)
        assert report.get("check-errors", 0) == 0, report
        assert report.get("corruptions", 0) == 0, report


def raw_content(path: Path, tmp: Path) -> bytes:
    out = tmp / (path.name + ".raw")
    img("convert", "-O", "raw", str(path), str(out))
    return out.read_bytes()


def qemu_map(path: Path) -> list[dict[str, Any]]:
    tool = QEMU_IMG_NEW or system_tool_or_skip("qemu-img")
    result: list[dict[str, Any]] = json.loads(
        img("map", "--output=json", str(path), tool=tool).stdout
    )
    return result


def open_qcow2(graph: BlockGraph, path: Path, **opts: Any) -> BlockNode:
    file = {"driver": "file", "filename": str(path)}
    args = {"driver": "qcow2", "node-name": "q", "file": file, **opts}
    return blockdev_add(graph, {k.replace("_", "-"): v for k, v in args.items()})


@pytest.fixture
def graph() -> Any:
    g = BlockGraph()
    yield g
    g.close_all()


def touch(path: Path) -> None:
    path.touch()


async def create_image(path: Path, **opts: Any) -> None:
    """A qcow2 image made by qmpd (options in Python spelling: cluster_size=...)."""
    touch(path)
    file = FileNode("f", common_options({}), filename=str(path))
    try:
        await create_qcow2(file, {k.replace("_", "-"): v for k, v in opts.items()})
    finally:
        file.close()
