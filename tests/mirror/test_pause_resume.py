"""``job-pause`` and ``job-resume`` in one write, over a real socket, to
qmpd and (when set up) QEMU 11.1's qemu-storage-daemon.

Issue 10 defect 17: a rate-limited mirror, sleeping on its limiter, got
the pause and the resume before its task ran again; the resume found a
timer "still pending", did nothing, and the job stayed paused for ever.
The virtual-time version is in tests/jobs/test_speed.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mirror.conftest import MiB, make_image
from tests.mirror.procs import SyncClient
from tests.support.daemons import DaemonKind, qmpd_kind, qsd_new_kind, running, why_missing


def kinds() -> list[object]:
    new = qsd_new_kind()
    return [
        pytest.param(qmpd_kind(), id="qmpd"),
        pytest.param(
            new,
            id="qsd-new",
            marks=pytest.mark.skipif(new is None, reason=why_missing("qsd-new")),
        ),
    ]


@pytest.mark.parametrize("kind", kinds())
def test_pause_and_resume_in_one_write_keep_the_job_running(kind: DaemonKind | None) -> None:
    assert kind is not None
    with running(kind) as daemon:
        work = Path(daemon.workdir)
        src = make_image(work / "src.img", 16 * MiB, [(0, 16 * MiB, 0x5A)])
        dst = make_image(work / "dst.img", 16 * MiB)
        client = SyncClient(daemon.sockets[0])
        try:
            for name, path in (("src", src), ("dst", dst)):
                assert client.execute(
                    "blockdev-add", driver="file", node_name=name, filename=str(path)
                ) == {}  # fmt: skip
            # 1 byte/s: after its first request the job sleeps on the limiter.
            assert client.execute(
                "blockdev-mirror", device="src", target="dst", sync="full", job_id="m",
                speed=1, buf_size=MiB,
            ) == {}  # fmt: skip
            while True:
                [info] = client.execute("query-block-jobs")
                if info["offset"] > 0 and not info["busy"]:
                    break
            client.raw.send(
                b'{"execute": "job-pause", "arguments": {"id": "m"}}'
                b'{"execute": "job-resume", "arguments": {"id": "m"}}'
            )
            replies = []
            while len(replies) < 2:
                message = json.loads(client.raw.readline())
                if "event" not in message:
                    replies.append(message)
            assert replies == [{"return": {}}, {"return": {}}]
            [info] = client.execute("query-block-jobs")
            assert (info["status"], info["paused"]) == ("running", False)
            # Lifting the limit lets a running job finish the copy; a job
            # stuck paused never gets there (the client's read times out).
            assert client.execute("block-job-set-speed", device="m", speed=0) == {}
            client.wait("BLOCK_JOB_READY")
            assert client.execute("job-cancel", id="m") == {}
            client.wait("JOB_STATUS_CHANGE", "null")
        finally:
            client.close()
