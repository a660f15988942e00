"""Helpers for the block tests: temp images and the real QEMU tools."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.qemu_tools import system_tool, system_tool_or_skip, why_system_missing

QEMU_IMG = system_tool("qemu-img")
QEMU_IO = system_tool("qemu-io")

needs_qemu_img = pytest.mark.skipif(QEMU_IMG is None, reason=why_system_missing("qemu-img"))
needs_qemu_io = pytest.mark.skipif(QEMU_IO is None, reason=why_system_missing("qemu-io"))


def make_image(path: Path, size: int, data: dict[int, bytes] | None = None) -> Path:
    """A sparse file of ``size`` bytes with ``data`` written at the given offsets."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, chunk in (data or {}).items():
            f.seek(offset)
            f.write(chunk)
    return path


def qemu_img_map(path: Path) -> list[dict[str, Any]]:
    """qemu-img map of a raw file; skips the test without qemu-img."""
    out = subprocess.run(
        [system_tool_or_skip("qemu-img"), "map", "-f", "raw", "--output=json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: list[dict[str, Any]] = json.loads(out)
    return result


def qemu_io(*args: str) -> subprocess.CompletedProcess[str]:
    """qemu-io with ``args``; skips the test without it."""
    return subprocess.run(
        [system_tool_or_skip("qemu-io"), *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A 1 MiB sparse file with 4 KiB of 0x5a at 64 KiB."""
    return make_image(tmp_path / "disk.img", 1 << 20, {65536: b"\x5a" * 4096})
