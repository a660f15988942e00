"""A command's fate is separate from its client's (issue 10, defects 15 and 19).

A client may hang up while its command runs, or before it has read the
reply.  What the command started must then finish (or be undone), never
stop half way: a guest write reaches every image it must reach, a job
started by the command runs, ``quit`` still ends the daemon.  Only the
delivery of the reply depends on the client.

The hanging-up client here sends its requests in one write and closes its
end at once, without reading: the server's next write to it then fails,
which is how the server learns that the client has gone, while the command
is still running (in-process, over memory streams, deterministically).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Connect
from tests.mirror.conftest import MiB, make_image
from tests.support.transcript import Transcript

SIZE = 8 * MiB


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
    # Negotiation's reply is queued, not read: writing it fails while the
    # write runs (QEMU 11.1 writes to both images all the same).
    await hang_up_after(
        connect,
        request("qmp_capabilities"),
        request("human-monitor-command", command_line='qemu-io -d disk0 "write -P 0x5a 0 4M"'),
        negotiate=False,
    )
    # Commands run one at a time: this one waits for the write to end.
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")
    assert (await client.cmd("query-block"))[0]["inserted"]["node-name"] == "dst"
    for image in (src, dst):
        with image.open("rb") as f:
            assert f.read(4 * MiB) == b"\x5a" * (4 * MiB), image.name
