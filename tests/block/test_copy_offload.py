"""BlockNode.copy_to (a copy below the event loop) and write_behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from qmpd.block import BlockIOError, CommonOptions, FileNode, RawNode

from .conftest import make_image

MiB = 1 << 20


def file_node(path: Path, **common: object) -> FileNode:
    return FileNode("f", CommonOptions(**common), filename=str(path))  # type: ignore[arg-type]


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * seed + 7) % 251 for i in range(n))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_image(tmp_path / "src.img", 4 * MiB, {MiB: pattern(MiB)})


async def test_raw_over_file_copies_in_the_kernel(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = RawNode("s", CommonOptions(), file=file_node(source, read_only=True))
    dst_file = file_node(make_image(tmp_path / "dst.img", 4 * MiB))
    dst = RawNode("d", CommonOptions(), file=dst_file)
    calls = []
    real = FileNode._copy_sync

    def spy(self: FileNode, *args: object) -> bool:
        calls.append(args[1:])
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(FileNode, "_copy_sync", spy)
    assert await src.copy_to(MiB + 4096, 65536, dst)
    # (source offset, target offset, length, inspect): no detect-zeroes.
    assert calls == [(MiB + 4096, MiB + 4096, 65536, False)]
    assert await dst.read(MiB + 4096, 65536) == pattern(MiB)[4096 : 4096 + 65536]
    assert await dst.read(MiB, 4096) == bytes(4096)  # nothing around it


async def test_raw_offsets_are_applied_on_both_sides(source: Path, tmp_path: Path) -> None:
    src = RawNode("s", CommonOptions(), file=file_node(source), offset=MiB, size=MiB)
    dst_file = file_node(make_image(tmp_path / "dst.img", 4 * MiB))
    dst = RawNode("d", CommonOptions(), file=dst_file, offset=2 * MiB, size=MiB)
    assert await src.copy_to(0, MiB, dst)
    assert await dst_file.read(2 * MiB, MiB) == pattern(MiB)


async def test_detect_zeroes_target_sees_the_data(source: Path, tmp_path: Path) -> None:
    src = file_node(source)
    dst = file_node(
        make_image(tmp_path / "dst.img", 4 * MiB, {0: b"\xff" * MiB}),
        detect_zeroes="unmap",
        discard="unmap",
    )
    # Data: written by the worker thread, not handed back.
    assert await src.copy_to(MiB, 65536, dst)
    assert await dst.read(MiB, 65536) == pattern(MiB)[:65536]
    # All-zero data goes back to the caller, whose write then applies
    # detect-zeroes (here: a hole).
    assert not await src.copy_to(0, 65536, dst)
    assert await dst.read(0, 65536) == b"\xff" * 65536


async def test_refused_where_a_node_cannot(source: Path, tmp_path: Path) -> None:
    src = file_node(source)
    ro = file_node(make_image(tmp_path / "ro.img", 4 * MiB), read_only=True)
    with pytest.raises(BlockIOError) as exc:
        await src.copy_to(0, 4096, ro)
    assert exc.value.errno == errno.EPERM
    small = file_node(make_image(tmp_path / "small.img", MiB))
    with pytest.raises(BlockIOError) as exc:
        await src.copy_to(MiB, 4096, small)
    assert exc.value.errno == errno.EIO
    assert await src.copy_to(0, 0, small)
    # O_DIRECT files keep to their aligned paths: not offloaded.
    direct = file_node(make_image(tmp_path / "direct.img", 4 * MiB), cache_direct=True)
    assert not await src.copy_to(MiB, 4096, direct)


async def test_failure_falls_back(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object) -> int:
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(os, "copy_file_range", fail)
    src = file_node(source)
    dst = file_node(make_image(tmp_path / "dst.img", 4 * MiB))
    assert not await src.copy_to(MiB, 4096, dst)


async def test_past_the_source_end_reads_as_zero(source: Path, tmp_path: Path) -> None:
    src = file_node(source)
    dst = file_node(make_image(tmp_path / "dst.img", 4 * MiB, {3 * MiB: b"\xff" * MiB}))
    os.truncate(source, 3 * MiB)  # the source shrank under us
    assert src.size == 4 * MiB  # as opened
    assert await src.copy_to(3 * MiB - 65536, MiB + 65536, dst)
    assert await dst.read(3 * MiB - 65536, MiB + 65536) == bytes(MiB + 65536)


async def test_write_behind_syncs(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    base = file_node(source)
    raw = RawNode("r", CommonOptions(), file=base, offset=MiB)
    await raw.write(0, b"x" * 4096)
    assert await raw.write_behind(0, 4096)
    assert not await raw.write_behind(0, 0)
    assert synced == [base.fd]
    # cache.no-flush: nothing to sync, and as durable as flush makes it.
    lazy = file_node(source, cache_no_flush=True)
    assert await lazy.write_behind(0, 4096)
    assert synced == [base.fd]
    # A read-only node has nothing to make durable.
    assert not await file_node(source, read_only=True).write_behind(0, 4096)


async def test_change_count_covers_the_nodes_below(source: Path, tmp_path: Path) -> None:
    base = file_node(source)
    raw = RawNode("r", CommonOptions(discard="unmap"), file=base)
    dst = file_node(make_image(tmp_path / "dst.img", 4 * MiB))
    changes = [
        raw.write(0, b"x"),
        base.write(0, b"y"),  # below the raw node: still its content
        raw.write_zeroes(0, 4096),
        raw.discard(0, 4096),
        raw.copy_to(MiB, 4096, raw),
    ]
    for request in changes:
        before = raw.change_count()
        await request
        assert raw.change_count() > before
    before = raw.change_count()
    await raw.read(0, 4096)
    await raw.write_behind(0, 4096)
    await raw.block_status(0, MiB)
    assert raw.change_count() == before
    assert dst.change_count() == 0
    assert await raw.copy_to(MiB, 4096, dst)
    assert dst.change_count() == 1
