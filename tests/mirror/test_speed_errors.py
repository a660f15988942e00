"""Speed limits in virtual time, and I/O errors with the on-*-error policies."""

from __future__ import annotations

import errno
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from qmpd.app import App
from qmpd.block import BlockIOError, CommonOptions, NullNode
from tests.mirror.conftest import MiB
from tests.support.transcript import Transcript


class FailingNode(NullNode):
    """A null-co node whose reads or writes fail with ``err`` while armed."""

    def __init__(self, name: str, size: int) -> None:
        super().__init__(name, CommonOptions(), size=size)
        self.fail_read: int | None = None
        self.fail_write: int | None = None
        self.attempts = 0
        #: Set once three requests have failed.
        self.failed_thrice = trio.Event()

    async def _read(self, offset: int, length: int) -> bytes:
        if self.fail_read is not None:
            self.attempts += 1
            raise BlockIOError(self.fail_read)
        return await super()._read(offset, length)

    async def _write(self, offset: int, data: bytes) -> None:
        if self.fail_write is not None:
            self.attempts += 1
            if self.attempts >= 3:
                self.failed_thrice.set()
            raise BlockIOError(self.fail_write)
        await super()._write(offset, data)


def add_failing(app: App, name: str, size: int) -> FailingNode:
    node = FailingNode(name, size)
    app.graph.insert(node)
    node.monitor_owned = True
    return node


async def mirror(client: Transcript, **args: Any) -> None:
    assert await client.cmd("blockdev-mirror", sync="full", job_id="m", **args) == {}


@pytest.mark.parametrize(("size", "speed"), [(8 * MiB, MiB), (1 << 30, 256 * MiB)])
async def test_speed_in_virtual_time(
    client: Transcript, autojump_clock: MockClock, size: int, speed: int
) -> None:
    for name in ("src", "dst"):
        assert await client.cmd("blockdev-add", driver="null-co", node_name=name, size=size) == {}
    t0 = trio.current_time()
    await mirror(client, device="src", target="dst", speed=speed)
    await client.until("BLOCK_JOB_READY")
    # Every byte is data to null-co without read-zeroes: size / speed.
    assert trio.current_time() - t0 == size / speed
    assert client.event("BLOCK_JOB_READY") == {
        "type": "mirror", "device": "m", "len": size, "offset": size, "speed": speed,
    }  # fmt: skip
    assert await client.cmd("job-cancel", id="m") == {}
    await client.until("JSC null")


async def test_progress_only_moves_forward(client: Transcript, autojump_clock: MockClock) -> None:
    for name in ("src", "dst"):
        assert (
            await client.cmd("blockdev-add", driver="null-co", node_name=name, size=4 * MiB) == {}
        )
    await mirror(client, device="src", target="dst", speed=MiB, buf_size=MiB)
    seen = []
    while True:
        [info] = await client.cmd("query-block-jobs")
        seen.append((info["offset"], info["len"]))
        if info["ready"]:
            break
        await trio.sleep(0.5)
    offsets = [o for o, _ in seen]
    assert offsets == sorted(offsets)
    assert seen[-1] == (4 * MiB, 4 * MiB)
    assert all(o <= n for o, n in seen)
    assert await client.cmd("job-cancel", id="m") == {}
    await client.until("JSC null")


async def test_target_error_report_fails_the_job(client: Transcript, app: App) -> None:
    assert await client.cmd("blockdev-add", driver="null-co", node_name="src", size=MiB) == {}
    add_failing(app, "dst", MiB).fail_write = errno.EIO
    client.take()
    await mirror(client, device="src", target="dst")
    await client.until("JSC null")
    assert client.take() == [
        "JSC created", "JSC running", "return", "BLOCK_JOB_ERROR", "JSC aborting",
        "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null",
    ]  # fmt: skip
    assert client.event("BLOCK_JOB_ERROR") == {
        "device": "m", "operation": "write", "action": "report",
    }  # fmt: skip
    assert client.event("BLOCK_JOB_COMPLETED")["error"] == "Input/output error"


@pytest.mark.parametrize(
    ("side", "policy", "err", "iostatus"),
    [
        ("source", "stop", errno.EIO, "failed"),
        ("target", "enospc", errno.ENOSPC, "nospace"),
        ("target", "auto", errno.ENOSPC, "nospace"),
    ],
)
async def test_stop_then_resume(
    client: Transcript, app: App, side: str, policy: str, err: int, iostatus: str
) -> None:
    src = add_failing(app, "src", MiB)
    dst = add_failing(app, "dst", MiB)
    bad = src if side == "source" else dst
    if side == "source":
        bad.fail_read = err
    else:
        bad.fail_write = err
    client.take()
    await mirror(client, device="src", target="dst", **{f"on_{side}_error": policy})
    await client.until("JSC paused")
    assert client.event("BLOCK_JOB_ERROR") == {
        "device": "m", "operation": "read" if side == "source" else "write", "action": "stop",
    }  # fmt: skip
    [info] = await client.cmd("query-block-jobs")
    assert info["io-status"] == iostatus
    assert info["paused"] is True
    bad.fail_read = bad.fail_write = None
    assert await client.cmd("job-resume", id="m") == {}
    await client.until("BLOCK_JOB_READY")
    [info] = await client.cmd("query-block-jobs")
    assert info["io-status"] == "ok"
    assert info["offset"] == info["len"] == MiB
    assert await client.cmd("job-complete", id="m") == {}
    await client.until("JSC null")


async def test_ignore_retries(client: Transcript, app: App, autojump_clock: MockClock) -> None:
    assert await client.cmd("blockdev-add", driver="null-co", node_name="src", size=MiB) == {}
    dst = add_failing(app, "dst", MiB)
    dst.fail_write = errno.EIO
    await mirror(client, device="src", target="dst", on_target_error="ignore")
    await dst.failed_thrice.wait()
    [info] = await client.cmd("query-block-jobs")
    assert info["status"] == "running"
    assert client.event("BLOCK_JOB_ERROR")["action"] == "ignore"
    dst.fail_write = None
    await client.until("BLOCK_JOB_READY")
    assert await client.cmd("job-cancel", id="m") == {}
    await client.until("JSC null")
