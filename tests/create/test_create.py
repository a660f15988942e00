"""blockdev-create of host files over a QMP session: events, files, errors, zero state."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from qmpd.block.file import F_OFD_SETLK, LOCK_SHARED_BASE, _flock
from tests.support.transcript import Transcript

MiB = 1 << 20
SIZE = 16 * MiB


async def create(client: Transcript, path: Path | str, size: int = SIZE, **extra: Any) -> Any:
    options = {"driver": "file", "filename": str(path), "size": size, **extra}
    return await client.cmd("blockdev-create", job_id="c0", options=options)


async def finish(client: Transcript, job: str = "c0") -> list[dict[str, Any]]:
    """Wait for ``job`` to conclude; return query-jobs."""
    await client.until(lambda m: m["data"] == {"id": job, "status": "concluded"})
    jobs: list[dict[str, Any]] = await client.cmd("query-jobs")
    return jobs


def data_extents(path: Path) -> list[tuple[int, int]]:
    """(start, end) of every data extent, by SEEK_DATA/SEEK_HOLE."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            pos = end
    finally:
        os.close(fd)
    return out


def all_zero(path: Path) -> bool:
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            if chunk.count(0) != len(chunk):
                return False
    return True


# ------------------------------------------------------------ success


@pytest.mark.parametrize("prealloc", ["off", "falloc", "full"])
async def test_create_file(client: Transcript, tmp_path: Path, prealloc: str) -> None:
    path = tmp_path / "img"
    assert await create(client, path, preallocation=prealloc) == {}
    assert client.take() == ["JSC created", "JSC running", "return"]
    jobs = await finish(client)
    assert client.take() == ["JSC waiting", "JSC pending", "JSC concluded", "return"]
    assert jobs == [
        {
            "id": "c0",
            "type": "create",
            "status": "concluded",
            "current-progress": 1,
            "total-progress": 1,
        }
    ]
    # Create jobs are not block jobs.
    assert await client.cmd("query-block-jobs") == []
    client.take()
    st = os.stat(path)
    assert st.st_size == SIZE
    assert st.st_mode & 0o777 == 0o644 & ~_umask()
    # What du shows, as QEMU 11.1 leaves it: the first block for off,
    # everything for falloc and full.
    allocated = st.st_blocks * 512
    if prealloc == "off":
        assert allocated == 4096
        assert data_extents(path) == [(0, 4096)]
    else:
        assert allocated >= SIZE
    if prealloc == "full":
        assert data_extents(path) == [(0, SIZE)]
    if prealloc == "falloc":
        # Unwritten extents read as holes; the first block was written.
        assert data_extents(path)[0] == (0, 4096)
    assert all_zero(path)
    # Stays concluded until dismissed.
    assert await client.cmd("job-dismiss", id="c0") == {}
    assert client.take() == ["JSC null", "return"]
    assert await client.cmd("query-jobs") == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.skipif(shutil.which("du") is None, reason="du not installed")
@pytest.mark.parametrize(("prealloc", "du_kib"), [("off", 4), ("falloc", 16384), ("full", 16384)])
async def test_du_matches_qemu(
    client: Transcript, tmp_path: Path, prealloc: str, du_kib: int
) -> None:
    # The figures QEMU 11.1's qemu-storage-daemon leaves for 16 MiB on ext4.
    path = tmp_path / "img"
    await create(client, path, preallocation=prealloc)
    await finish(client)
    out = await trio.run_process(["du", "-k", str(path)], capture_stdout=True)
    assert int(out.stdout.split()[0]) == du_kib


async def test_existing_file_is_emptied(client: Transcript, tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"\xab" * 100_000)
    await create(client, path, size=50_000)
    await finish(client)
    assert path.stat().st_size == 50_000
    assert all_zero(path)


@pytest.mark.parametrize("size", [0, 1, 511, 4095, 5000])
async def test_small_sizes(client: Transcript, tmp_path: Path, size: int) -> None:
    # QEMU's first-block write would grow a file under 512 bytes to 512;
    # qmpd keeps the size asked for.
    path = tmp_path / "img"
    await create(client, path, size=size)
    jobs = await finish(client)
    assert "error" not in jobs[0]
    assert path.stat().st_size == size
    assert all_zero(path)


async def test_nocow_and_hint_are_best_effort(client: Transcript, tmp_path: Path) -> None:
    # ext4 has neither: creation still succeeds, as in QEMU.
    await create(client, tmp_path / "img", nocow=True, **{"extent-size-hint": 4096})
    jobs = await finish(client)
    assert "error" not in jobs[0]


# ------------------------------------------------------------ zero state


@pytest.mark.parametrize("prealloc", ["off", "falloc", "full"])
async def test_known_zero_after_create(client: Transcript, tmp_path: Path, prealloc: str) -> None:
    path = tmp_path / "img"
    await create(client, path, preallocation=prealloc)
    await finish(client)
    await client.cmd("blockdev-add", driver="file", node_name="f", filename=str(path))
    [state] = await client.cmd("x-query-zero-state", node_name="f")
    assert state["create"] == {"value": True, "how": "driver"}
    assert state["open"] == {"value": True, "how": "record"}
    # A raw node on top passes it on.
    await client.cmd("blockdev-add", driver="raw", node_name="r", file="f")
    [state] = await client.cmd("x-query-zero-state", node_name="r")
    assert state["open"] == {"value": True, "how": "record"}
    # Data written through qmpd ends the record at once.
    reply = await client.cmd(
        "human-monitor-command", command_line='qemu-io r "write -P 0xab 1M 4k"'
    )
    assert "wrote 4096/4096 bytes" in reply
    [state] = await client.cmd("x-query-zero-state", node_name="f")
    assert state["open"] == {"value": False, "how": "none"}


async def test_zero_write_keeps_zero_without_the_record(client: Transcript, tmp_path: Path) -> None:
    path = tmp_path / "img"
    await create(client, path, preallocation="full")
    await finish(client)
    await client.cmd(
        "blockdev-add", driver="file", node_name="f", filename=str(path), discard="unmap"
    )
    await client.cmd("human-monitor-command", command_line='qemu-io f "write -z -u 0 1M"')
    # The stamp moved, so the record is gone; the hole probe cannot prove
    # the rest (fully allocated) is zero: not known, never wrongly zero.
    [state] = await client.cmd("x-query-zero-state", node_name="f")
    assert state["open"]["how"] != "record"


@pytest.mark.parametrize("change", ["truncate", "write"])
async def test_outside_change_voids_the_record(
    client: Transcript, tmp_path: Path, change: str
) -> None:
    path = tmp_path / "img"
    await create(client, path, preallocation="full")
    await finish(client)
    before = os.stat(path)
    if change == "truncate":
        os.truncate(path, SIZE + 4096)
    else:
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b"\x01", 12345)
        os.close(fd)
        after = os.stat(path)
        if after.st_mtime_ns == before.st_mtime_ns and after.st_ctime_ns == before.st_ctime_ns:
            pytest.skip("coarse file timestamps (kernel without multigrain ctime)")
    await client.cmd("blockdev-add", driver="file", node_name="f", filename=str(path))
    [state] = await client.cmd("x-query-zero-state", node_name="f")
    assert state["open"]["how"] != "record"
    if change == "write":
        assert state["open"]["value"] is False


# ------------------------------------------------------------ errors in the job


async def test_missing_directory_fails_before_the_reply(client: Transcript) -> None:
    assert await create(client, "/nonexistent/dir/x", size=1) == {}
    # Nothing yields before the open fails: the job concludes first.
    assert client.take() == [
        "JSC created",
        "JSC running",
        "JSC aborting",
        "JSC concluded",
        "return",
    ]
    [job] = await client.cmd("query-jobs")
    assert job == {
        "id": "c0",
        "type": "create",
        "status": "concluded",
        "current-progress": 1,
        "total-progress": 1,
        "error": "Could not create '/nonexistent/dir/x': No such file or directory",
    }
    assert await client.cmd("job-dismiss", id="c0") == {}


async def test_metadata_is_refused_in_the_job(client: Transcript, tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"old")
    await create(client, path, preallocation="metadata")
    assert client.take() == ["JSC created", "JSC running", "return"]
    [job] = await finish(client)
    assert client.take() == ["JSC aborting", "JSC concluded", "return"]
    assert job["error"] == "Unsupported preallocation mode: metadata"
    # As in QEMU, the file was emptied before the mode was looked at.
    assert path.stat().st_size == 0


@pytest.mark.parametrize(
    ("size", "prealloc", "error"),
    [
        (-5, "off", "Could not resize file: Invalid argument"),
        (-5, "falloc", "Could not preallocate new data: Invalid argument"),
        (-5, "full", "Could not resize file: Invalid argument"),
        (1 << 62, "off", "Could not resize file: File too large"),
        (1 << 62, "falloc", "Could not preallocate new data: File too large"),
    ],
)
async def test_bad_sizes(
    client: Transcript, tmp_path: Path, size: int, prealloc: str, error: str
) -> None:
    await create(client, tmp_path / "img", size=size, preallocation=prealloc)
    [job] = await finish(client)
    assert job["error"] == error


@pytest.mark.parametrize("hint", [-1, 1 << 32])
async def test_extent_size_hint_too_large(client: Transcript, tmp_path: Path, hint: int) -> None:
    await create(client, tmp_path / "img", **{"extent-size-hint": hint})
    assert client.take()[-3:] == ["JSC aborting", "JSC concluded", "return"]
    [job] = await client.cmd("query-jobs")
    assert job["error"] == "Extent size hint is too large"
    assert not (tmp_path / "img").exists()


async def test_directory(client: Transcript, tmp_path: Path) -> None:
    await create(client, tmp_path)
    [job] = await client.cmd("query-jobs")
    assert job["error"] == f"Could not create '{tmp_path}': Is a directory"


@pytest.mark.parametrize(
    ("byte", "error"),
    [
        (LOCK_SHARED_BASE + 1, 'Failed to get "write" lock'),
        (LOCK_SHARED_BASE + 3, 'Failed to get "resize" lock'),
        (103, 'Failed to get shared "resize" lock'),
    ],
)
async def test_locked_by_another_process(
    client: Transcript, tmp_path: Path, byte: int, error: str
) -> None:
    path = tmp_path / "img"
    path.write_bytes(b"keep")
    fd = os.open(path, os.O_RDWR)
    try:
        _flock(fd, F_OFD_SETLK, fcntl.F_RDLCK, byte)
        await create(client, path)
        [job] = await client.cmd("query-jobs")
    finally:
        os.close(fd)
    assert job["error"] == error
    assert path.read_bytes() == b"keep"


async def test_image_in_use_by_a_device(client: Transcript, tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(bytes(MiB))
    await client.cmd("blockdev-add", driver="file", node_name="f", filename=str(path))
    await client.cmd("device_add", driver="virtio-blk-pci", id="vd0", drive="f")
    await create(client, path)
    [job] = await client.cmd("query-jobs")
    assert job["error"] == 'Failed to get "write" lock'
    # Without a user the node holds no locks and does not stop it (as QEMU).
    await client.cmd("device_del", id="vd0")
    await client.cmd("job-dismiss", id="c0")
    await create(client, path, size=8192)
    [job] = await finish(client)
    assert "error" not in job
    assert path.stat().st_size == 8192


async def test_cancel_after_the_work_reports_canceled(client: Transcript, tmp_path: Path) -> None:
    await create(client, tmp_path / "img", preallocation="full")
    assert await client.cmd("job-cancel", id="c0") == {}
    [job] = await finish(client)
    # Like QEMU, the driver's work is not interrupted; the job still fails.
    assert job["error"] == "Operation canceled"
    assert "JSC aborting" in client.take()


# ------------------------------------------------------------ command errors


async def test_invalid_job_id(client: Transcript, tmp_path: Path) -> None:
    reply = await client.cmd(
        "blockdev-create",
        job_id="1c",
        options={"driver": "file", "filename": str(tmp_path / "x"), "size": 1},
    )
    assert reply["error"] == {"class": "GenericError", "desc": "Invalid job ID '1c'"}
    assert client.take() == ["error: Invalid job ID '1c'"]


async def test_job_id_in_use(client: Transcript, tmp_path: Path) -> None:
    await create(client, tmp_path / "a")
    await finish(client)
    reply = await create(client, tmp_path / "b")
    assert reply["error"]["desc"] == "Job ID 'c0' already in use"
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("driver", ["raw", "null-co", "null-aio", "vdi", "nbd"])
async def test_driver_without_create(client: Transcript, driver: str) -> None:
    client.take()
    reply = await client.cmd("blockdev-create", job_id="c0", options={"driver": driver})
    assert reply["error"] == {
        "class": "GenericError",
        "desc": "Driver does not support blockdev-create",
    }
    assert client.take() == ["error: Driver does not support blockdev-create"]


async def test_driver_checked_before_job_id(client: Transcript) -> None:
    reply = await client.cmd("blockdev-create", job_id="1c", options={"driver": "raw"})
    assert reply["error"]["desc"] == "Driver does not support blockdev-create"


@pytest.mark.parametrize(
    ("options", "desc"),
    [
        ({"driver": "file", "size": 1}, "Parameter 'options.filename' is missing"),
        ({"driver": "file", "filename": "x"}, "Parameter 'options.size' is missing"),
        (
            {"driver": "file", "filename": "x", "size": 1, "preallocation": "x"},
            "Parameter 'preallocation' does not accept value 'x'",
        ),
    ],
)
async def test_argument_errors(client: Transcript, options: dict[str, Any], desc: str) -> None:
    reply = await client.cmd("blockdev-create", job_id="c0", options=options)
    assert reply["error"]["desc"] == desc
