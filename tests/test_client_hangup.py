"""A command's fate is separate from its client's (issue 10, defects 15 and 19).

A client may hang up while its command runs, or before it has read the
reply.  What the command started must then finish (or be undone), never
stop half way: a guest write reaches every image it must reach, a job
started by the command runs, ``quit`` still ends the daemon.  Only the
delivery of the reply depends on the client.

The hanging-up client here sends its requests in one write and closes its
end at once, without reading: the server's next write to it then fails,
which is how the server learns that the client has gone, while the command
is still running (in-process, over memory streams, deterministically).  The
last test hangs up over real sockets, to qmpd and QEMU 11.1's
qemu-storage-daemon as processes, and expects what QEMU does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from qmpd.app import App
from tests.conftest import Connect
from tests.mirror.conftest import MiB, make_image
from tests.mirror.procs import SyncClient
from tests.qcow2.conftest import check_clean, img, raw_content
from tests.support.daemons import RawClient, qmpd_kind, qsd_new_kind, running, why_missing
from tests.support.transcript import Transcript

SIZE = 8 * MiB
#: Generous: a guard against waiting for ever on a broken daemon, not a
#: measure of how fast anything is.
HANG_GUARD = 60


def request(command: str, **arguments: Any) -> bytes:
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
    return json.dumps(message).encode()


async def hang_up_after(connect: Connect, *requests: bytes, negotiate: bool = True) -> None:
    """A client that sends ``requests`` in one write and leaves unread."""
    gone = await connect(negotiate=negotiate)
    if not negotiate:
        # The session is open once its greeting is out: before that the
        # server would find the client gone before reading any request.
        await gone.read_message()
    await gone.send(b"".join(requests))
    await gone.aclose()


async def hang_up_mid_write(connect: Connect, target: str) -> None:
    """A client that has HMP qemu-io write 4 MiB of 0x5a at 0 to ``target``
    (``NAME`` or ``-d QDEV``) and hangs up: the reply to its negotiation is
    queued, not read, and writing it fails while the write runs."""
    await hang_up_after(
        connect,
        request("qmp_capabilities"),
        request("human-monitor-command", command_line=f'qemu-io {target} "write -P 0x5a 0 4M"'),
        negotiate=False,
    )


async def add_files(client: Transcript, tmp_path: Path, data: bool = False) -> tuple[Path, Path]:
    src = make_image(tmp_path / "src.img", SIZE, [(MiB, MiB, 0x11)] if data else [])
    dst = make_image(tmp_path / "dst.img", SIZE)
    for name, path in (("src", src), ("dst", dst)):
        added = await client.cmd("blockdev-add", driver="file", node_name=name, filename=str(path))
        assert added == {}
    return src, dst


async def test_guest_write_of_a_client_that_hangs_up_reaches_the_mirror_target(
    client: Transcript, connect: Connect, tmp_path: Path
) -> None:
    src, dst = await add_files(client, tmp_path)
    assert await client.cmd("device_add", driver="ide-hd", id="disk0", drive="src") == {}
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m",
        copy_mode="write-blocking",
    ) == {}  # fmt: skip
    await client.until("BLOCK_JOB_READY")
    # QEMU 11.1 writes to both images all the same.
    await hang_up_mid_write(connect, "-d disk0")
    # Commands run one at a time: this one waits for the write to end.
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert (await client.cmd("query-block"))[0]["inserted"]["node-name"] == "dst"
    for image in (src, dst):
        with image.open("rb") as f:
            assert f.read(4 * MiB) == b"\x5a" * (4 * MiB), image.name


async def test_qcow2_write_of_a_client_that_hangs_up_lands_whole(
    client: Transcript, connect: Connect, tmp_path: Path
) -> None:
    image = tmp_path / "disk.qcow2"
    # Clusters big enough that their data goes through a worker thread.
    img("create", "-f", "qcow2", "-o", "cluster_size=2M", str(image), str(SIZE))
    assert await client.cmd("blockdev-add", driver="file", node_name="f", filename=str(image)) == {}
    assert await client.cmd("blockdev-add", driver="qcow2", node_name="q", file="f") == {}
    await hang_up_mid_write(connect, "q")
    # Each waits for the write to end; closing writes qcow2's tables out.
    assert await client.cmd("blockdev-del", node_name="q") == {}
    assert await client.cmd("blockdev-del", node_name="f") == {}
    assert raw_content(image, tmp_path)[: 4 * MiB] == b"\x5a" * (4 * MiB)
    check_clean(image)


async def test_mirror_of_a_client_that_hangs_up_before_the_reply_still_copies(
    client: Transcript, connect: Connect, tmp_path: Path
) -> None:
    src, dst = await add_files(client, tmp_path, data=True)
    await hang_up_after(
        connect,
        request("blockdev-mirror", device="src", target="dst", sync="full", job_id="m"),
        request("query-jobs"),
    )
    with trio.fail_after(HANG_GUARD):
        await client.until("BLOCK_JOB_READY")
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert dst.read_bytes() == src.read_bytes()


async def test_quit_of_a_client_that_hangs_up_still_shuts_down(connect: Connect, app: App) -> None:
    await hang_up_after(connect, request("quit"), request("query-version"))
    with trio.fail_after(HANG_GUARD):
        await app.shutdown.wait()


@pytest.mark.qemu
@pytest.mark.parametrize("daemon", ["qmpd", "qsd-new"])
def test_mirror_of_a_client_that_hangs_up_reaches_ready_as_in_qemu(daemon: str) -> None:
    kind = qmpd_kind() if daemon == "qmpd" else qsd_new_kind()
    if kind is None:
        pytest.skip(why_missing(daemon))
    # QEMU's monitor serves one client at a time: one socket each.
    with running(kind, monitors=2) as proc:
        src = make_image(Path(proc.workdir) / "src.img", SIZE, [(MiB, MiB, 0x11)])
        dst = make_image(Path(proc.workdir) / "dst.img", SIZE)
        observer = SyncClient(proc.sockets[0], timeout=HANG_GUARD)
        try:
            for name, path in (("src", src), ("dst", dst)):
                added = observer.execute("blockdev-add", driver="file", node_name=name,
                                         filename=str(path))  # fmt: skip
                assert added == {}
            with RawClient(proc.sockets[1]) as gone:
                gone.negotiate()
                gone.send(
                    request("blockdev-mirror", device="src", target="dst", sync="full", job_id="m")
                    + request("query-jobs")
                )
                # Hang up once the command runs: a daemon that sees the
                # hang-up first may drop it unstarted (QEMU does, by timing).
                observer.wait("JOB_STATUS_CHANGE", "created")
            observer.wait("BLOCK_JOB_READY")
            assert observer.execute("job-complete", id="m") == {}
            observer.wait("JOB_STATUS_CHANGE", "null")
        finally:
            observer.close()
        assert dst.read_bytes() == src.read_bytes()
