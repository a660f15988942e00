"""A zero-fill record never certifies someone else's write (defect 13).

``blockdev-create`` remembers that it left a file reading as zero, so that
a node opened on it knows without reading it back (``how: record``).  A
write by another process *while* the file is being created must not end
up certified: here it comes right after the file is allocated, as early
as a process watching the file could send it, from real QEMU tools
(``qemu-io``, which asks for the write lock) or from a process that holds
the write permission the way a QEMU guest disk with ``share-rw`` does.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qmpd.block import create as create_mod
from qmpd.block.file import F_OFD_SETLK, LOCK_PERM_BASE, _flock
from qmpd.block.node import Perm
from tests.support.qemu_tools import system_tool, why_system_missing
from tests.support.transcript import Transcript

MiB = 1 << 20
SIZE = 4 * MiB
QEMU_IO = system_tool("qemu-io")


async def create_full(client: Transcript, path: Path) -> None:
    options = {"driver": "file", "filename": str(path), "size": SIZE, "preallocation": "full"}
    assert await client.cmd("blockdev-create", job_id="c0", options=options) == {}
    await client.until(lambda m: m["data"] == {"id": "c0", "status": "concluded"})
    [job] = await client.cmd("query-jobs")
    assert "error" not in job, job


async def zero_claim(client: Transcript, path: Path) -> dict[str, Any]:
    await client.cmd("blockdev-add", driver="file", node_name="f", filename=str(path))
    [state] = await client.cmd("x-query-zero-state", node_name="f")
    claim: dict[str, Any] = state["open"]
    return claim


def after_allocation(monkeypatch: pytest.MonkeyPatch, action: Any) -> None:
    """Run ``action()`` the moment the create job has allocated the file."""
    real = create_mod._grow

    def grow(fd: int, opts: create_mod.FileCreateOptions) -> None:
        real(fd, opts)
        action()

    monkeypatch.setattr(create_mod, "_grow", grow)


@pytest.mark.skipif(QEMU_IO is None, reason=why_system_missing("qemu-io"))
async def test_a_qemu_io_write_during_create_is_never_certified(
    client: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "img"
    outcome: list[subprocess.CompletedProcess[str]] = []

    def write_the_end() -> None:
        assert QEMU_IO is not None
        command = f"write -P 0x5a {SIZE - 512} 512"
        args = [QEMU_IO, "-f", "raw", "-c", command, str(path)]
        outcome.append(subprocess.run(args, capture_output=True, text=True, check=False))

    after_allocation(monkeypatch, write_the_end)
    await create_full(client, path)
    written = "wrote 512/512 bytes" in outcome[0].stdout
    claim = await zero_claim(client, path)
    if claim["value"]:
        assert path.read_bytes() == bytes(SIZE), (claim, outcome)
    # Either qemu-io was kept out while the file was made zero, or the
    # node does not vouch for its content.
    assert not written or claim["how"] != "record", (claim, outcome)


async def test_a_writer_sharing_write_during_create_is_never_certified(
    client: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process holding the write permission (QEMU's lock byte, sharing
    write as a ``share-rw`` guest disk does) may write while the file is
    created, as with QEMU; then no record can be trusted."""
    path = tmp_path / "img"
    path.write_bytes(b"")
    writer = os.open(path, os.O_RDWR)
    try:
        _flock(writer, F_OFD_SETLK, fcntl.F_RDLCK, LOCK_PERM_BASE + Perm.WRITE.bit_length() - 1)
        after_allocation(monkeypatch, lambda: os.pwrite(writer, b"\x5a" * 512, SIZE - 512))
        await create_full(client, path)
    finally:
        os.close(writer)
    claim = await zero_claim(client, path)
    assert claim["value"] is False, claim
