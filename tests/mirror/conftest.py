"""Fixtures for mirror tests: a running job manager, a recording client,
sparse image files under a temporary directory, and qemu-img."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qmpd.block.file import FileNode
from tests.support.qemu_tools import system_tool, system_tool_or_skip, why_system_missing

MiB = 1 << 20
QEMU_IMG = system_tool("qemu-img")
needs_qemu_img = pytest.mark.skipif(QEMU_IMG is None, reason=why_system_missing("qemu-img"))


def make_image(path: Path, size: int, data: list[tuple[int, int, int]] = ()) -> Path:  # type: ignore[assignment]
    """A sparse file of ``size`` bytes with ``(offset, length, byte)`` written."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset, length, byte in data:
            f.seek(offset)
            f.write(bytes([byte]) * length)
    return path


def allocated(path: Path) -> int:
    """Bytes the file system allocates for ``path`` (du --block-size=1)."""
    return path.stat().st_blocks * 512


def qemu_img_compare(a: Path, b: Path) -> str:
    """qemu-img compare's verdict on two raw files; skips the test without it."""
    out = subprocess.run(
        [
            system_tool_or_skip("qemu-img"),
            "compare",
            "-U",
            "-f",
            "raw",
            "-F",
            "raw",
            str(a),
            str(b),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or out.stderr.strip()


def qemu_img_map(path: Path) -> list[dict[str, Any]]:
    """qemu-img map of a raw file; skips the test without qemu-img."""
    out = subprocess.run(
        [system_tool_or_skip("qemu-img"), "map", "-U", "--output=json", "-f", "raw", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    value: list[dict[str, Any]] = json.loads(out.stdout)
    return value


def data_ranges(entries: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """``(start, length)`` of the extents qemu-img map calls data."""
    return [(e["start"], e["length"]) for e in entries if e["data"]]


def spy_block_status(
    monkeypatch: pytest.MonkeyPatch, path: Path | None = None
) -> list[tuple[int, int]]:
    """``(offset, length)`` of every block-status query a host file answers
    from now on (only the file at ``path``, when given), in order."""
    asked: list[tuple[int, int]] = []
    real = FileNode._block_status

    async def spy(self: FileNode, offset: int, length: int) -> Any:
        if path is None or self.path == str(path):
            asked.append((offset, length))
        return await real(self, offset, length)

    monkeypatch.setattr(FileNode, "_block_status", spy)
    return asked
