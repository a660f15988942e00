"""``sync: top`` copies only what the source's top layer allocates.

Issue 10 defect 10: base with data at 0-1 MiB, top (backing: base) with
data at 4-5 MiB, mirrored with ``sync: top`` into a qcow2 target whose
backing is the same base.  The target's own layer must hold only the
top's 4-5 MiB, as QEMU 11.1's does (the base's data is reached through
the target's backing file); qmpd copied the whole chain.  The same
messages go to qmpd and, when set up, to QEMU 11.1's qemu-storage-daemon.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.mirror.conftest import MiB, needs_qemu_img
from tests.mirror.procs import SyncClient
from tests.support.daemons import DaemonKind, qmpd_kind, qsd_new_kind, running, why_missing
from tests.support.qemu_tools import system_tool_or_skip

SIZE = 8 * MiB


def qemu_img(*args: str) -> str:
    qemu_img = system_tool_or_skip("qemu-img")
    out = subprocess.run([qemu_img, *args], capture_output=True, text=True, check=True)
    return out.stdout


def qemu_io(image: str, command: str) -> None:
    qemu_io = system_tool_or_skip("qemu-io")
    subprocess.run([qemu_io, "-c", command, image], capture_output=True, check=True)


def own_layer(image: Path) -> list[tuple[int, int, bool]]:
    """``(start, length, data)`` of what ``image``'s own layer allocates."""
    entries: list[dict[str, Any]] = json.loads(qemu_img("map", "-U", "--output=json", str(image)))
    return [
        (e["start"], e["length"], e["data"]) for e in entries if e["depth"] == 0 and e["present"]
    ]


def mirror_top(
    kind: DaemonKind, discard: str = "ignore"
) -> tuple[list[tuple[int, int, bool]], str]:
    """Run the scenario on a daemon of ``kind``, the target opened with
    ``discard``; the target's own layer and what ``qemu-img compare`` says
    of source and target."""
    with running(kind) as daemon:
        work = Path(daemon.workdir)
        base, top, tgt = (str(work / n) for n in ("base.qcow2", "top.qcow2", "tgt.qcow2"))
        qemu_img("create", "-q", "-f", "qcow2", base, str(SIZE))
        qemu_io(base, "write -P 0x11 0 1M")
        for image in (top, tgt):
            qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", image)
        qemu_io(top, "write -P 0x22 4M 1M")
        client = SyncClient(daemon.sockets[0])
        try:
            for name, image in (("top", top), ("tgt", tgt)):
                node = {"driver": "qcow2", "node-name": name, "discard": discard,
                        "file": {"driver": "file", "filename": image}}  # fmt: skip
                assert client.execute("blockdev-add", **node) == {}
            client.mirror_and_complete(device="top", target="tgt", sync="top", job_id="m")
            for name in ("top", "tgt"):
                assert client.execute("blockdev-del", node_name=name) == {}
        finally:
            client.close()
        compare = subprocess.run(
            [system_tool_or_skip("qemu-img"), "compare", "-U", top, tgt],
            capture_output=True,
            text=True,
            check=False,
        )
        return own_layer(Path(tgt)), compare.stdout.strip()


@needs_qemu_img
@pytest.mark.parametrize("discard", ["ignore", "unmap"])
def test_sync_top_copies_only_the_top_layer(discard: str) -> None:
    # With discard=unmap the target must not be zeroed first either: its
    # unallocated clusters read the base, zero clusters would hide it.
    layer, compare = mirror_top(qmpd_kind(), discard)
    assert layer == [(4 * MiB, MiB, True)]
    assert compare == "Images are identical."


@needs_qemu_img
@pytest.mark.skipif(qsd_new_kind() is None, reason=why_missing("qsd-new"))
def test_sync_top_target_matches_qemu() -> None:
    new = qsd_new_kind()
    assert new is not None
    assert mirror_top(qmpd_kind()) == mirror_top(new)
