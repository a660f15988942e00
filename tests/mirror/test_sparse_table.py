"""iotest mirror-sparse (QEMU 10.1, qmp-facts §5.4), on qmpd and on QSD 11.1.

A 20 MiB raw source with 2 MiB of data at 8 MiB is mirrored (sync full)
to a raw file created three ways (``truncate``; blockdev-create with
preallocation off or full) and opened with each discard/detect-zeroes
combination.  After job-complete the files must be identical and the
target "sparse" (< 4 MiB allocated) or "full" (> 19 MiB) as the iotest's
table says.  qmpd runs as a process over its real socket; the same script
runs on QEMU 11.1's qemu-storage-daemon when it is set up, and both must
give the table and the same job events.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mirror.conftest import QEMU_IMG, MiB, allocated, make_image, needs_qemu_img
from tests.mirror.procs import SyncClient
from tests.support.daemons import DaemonKind, qmpd_kind, qsd_new_kind, running, why_missing

SIZE = 20 * MiB
#: (creation, discard, detect-zeroes, expected) from the iotest's output.
TABLE = [
    ("external", "ignore", "off", "sparse"),
    ("external", "unmap", "off", "sparse"),
    ("external", "unmap", "unmap", "sparse"),
    ("off", "ignore", "off", "sparse"),
    ("off", "unmap", "off", "sparse"),
    ("off", "unmap", "unmap", "sparse"),
    ("full", "ignore", "off", "full"),
    ("full", "unmap", "off", "sparse"),
    ("full", "unmap", "unmap", "sparse"),
]


def classify(path: Path) -> str:
    used = allocated(path)
    if used < 4 * MiB:
        return "sparse"
    if used > 19 * MiB:
        return "full"
    return f"unexpected size ({used})"


def run_table(client: SyncClient, workdir: Path) -> tuple[list[str], list[str]]:
    """Run every case; return the classifications and the job events."""
    results = []
    src = make_image(workdir / "src.img", SIZE, [(8 * MiB, 2 * MiB, 0xCD)])
    for creation, discard, detect, _expected in TABLE:
        dst = workdir / "dst.img"
        if dst.exists():
            dst.unlink()
        if creation == "external":
            make_image(dst, SIZE)
        else:
            options = {"driver": "file", "filename": str(dst), "size": SIZE,
                       "preallocation": creation}  # fmt: skip
            assert client.execute("blockdev-create", job_id="c", options=options) == {}
            client.wait("JOB_STATUS_CHANGE", "concluded")
            assert client.execute("job-dismiss", id="c") == {}
        src_file = {"driver": "file", "filename": str(src)}
        assert client.execute("blockdev-add", driver="raw", node_name="src", file=src_file) == {}
        assert client.execute(
            "blockdev-add", driver="file", node_name="dst", filename=str(dst), aio="threads",
            auto_read_only=True, discard=discard, detect_zeroes=detect,
        ) == {}  # fmt: skip
        client.mirror_and_complete(sync="full", device="src", target="dst", job_id="job2")
        assert client.execute("blockdev-del", node_name="dst") == {}
        assert client.execute("blockdev-del", node_name="src") == {}
        assert QEMU_IMG is not None
        compare = subprocess.run(
            [QEMU_IMG, "compare", "-f", "raw", "-F", "raw", str(src), str(dst)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert compare.stdout.strip() == "Images are identical.", (creation, compare)
        results.append(classify(dst))
    return results, client.event_log()


def kinds() -> Iterator[object]:
    yield pytest.param(qmpd_kind(), id="qmpd")
    new = qsd_new_kind()
    yield pytest.param(
        new,
        id="qsd-11.1",
        marks=pytest.mark.skipif(new is None, reason=why_missing("qsd-new")),
    )


@needs_qemu_img
@pytest.mark.parametrize("kind", list(kinds()))
def test_mirror_sparse_table(kind: DaemonKind, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Under /tmp (not a tmpfs-less pytest dir) so QSD and qmpd see the same files.
    workdir = Path(tmp_path_factory.mktemp(f"sparse-{kind.name}", numbered=True))
    os.chmod(workdir, 0o755)
    with running(kind) as daemon:
        client = SyncClient(daemon.sockets[0])
        try:
            results, events = run_table(client, workdir)
        finally:
            client.close()
    assert results == [row[3] for row in TABLE]
    one = ["JSC created", "JSC running", "JSC waiting", "JSC pending", "JSC concluded"]
    mirror = ["JSC created", "JSC running", "JSC ready", "BLOCK_JOB_READY", "JSC waiting",
              "JSC pending", "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null"]  # fmt: skip
    expected: list[str] = []
    for creation, *_ in TABLE:
        if creation != "external":
            expected += [*one, "JSC null"]
        expected += mirror
    assert events == expected
