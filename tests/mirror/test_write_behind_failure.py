"""A write-behind sync of the target that fails must keep the job from
going ready, even when the flush before ready would have succeeded: the
kernel reports a lost writeback to one of two syncs of the file running
at once, so the flush before ready must not run beside a write-behind."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.mirror.conftest import MiB, make_image
from tests.support.transcript import Transcript


async def test_ready_never_follows_a_failed_write_behind(
    client: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 48 * MiB
    src = make_image(tmp_path / "src.img", size, [(0, 40 * MiB, 0x5C)])
    dst = make_image(tmp_path / "dst.img", size)
    real = os.fdatasync
    lock = threading.Lock()
    calls = 0
    first_waiting = threading.Event()
    release_first = threading.Event()

    def fdatasync(fd: int) -> None:
        # The first sync (the write-behind, started after 16 MiB of data)
        # is slow and then loses the writeback.  A sync beside it is the
        # one the kernel tells nothing: it succeeds, then the first fails.
        nonlocal calls
        with lock:
            calls += 1
            first = calls == 1
        if first:
            first_waiting.set()
            release_first.wait(60)  # bounded only so that a broken test ends
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        concurrent = not release_first.is_set()
        real(fd)
        if concurrent:
            release_first.set()

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    assert await client.cmd("blockdev-add", driver="file", node_name="src", filename=str(src)) == {}
    assert await client.cmd("blockdev-add", driver="file", node_name="dst", filename=str(dst)) == {}
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="m",
        on_target_error="report",
    ) == {}  # fmt: skip
    # Wait until every byte is copied and the job's task has nowhere to go:
    # it is either flushing beside the write-behind (a second worker thread)
    # or waiting for the write-behind; only then let the write-behind fail.
    while True:
        jobs = await client.cmd("query-block-jobs")
        if not jobs or (jobs[0]["offset"] == jobs[0]["len"] and first_waiting.is_set()):
            break
    await trio.testing.wait_all_tasks_blocked()
    if trio.to_thread.current_default_thread_limiter().borrowed_tokens < 2:
        release_first.set()
    ends = ("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED")
    if not any(e in client.entries for e in ends):
        await client.until(lambda m: m["event"] in ends)
    release_first.set()
    entries = client.take()
    assert "BLOCK_JOB_READY" not in entries, entries
    assert "BLOCK_JOB_COMPLETED" in entries, entries
    assert client.event("BLOCK_JOB_COMPLETED")["error"] == os.strerror(errno.EIO)
