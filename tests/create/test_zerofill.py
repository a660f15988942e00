"""The zero-fill record table on its own: identity, staleness, bounds."""

from __future__ import annotations

import os
import time
from pathlib import Path

from qmpd.block.zerofill import CLOCK_REALTIME_COARSE, ZeroFillRecords, file_key


def _open(path: Path, data: bytes = b"") -> int:
    path.write_bytes(data)
    return os.open(path, os.O_RDWR)


def test_remember_then_holds(tmp_path: Path) -> None:
    table = ZeroFillRecords()
    fd = _open(tmp_path / "a", bytes(4096))
    try:
        assert not table.holds(fd)
        table.remember(fd)
        assert table.holds(fd)
        # Another open file of the same inode finds it too.
        fd2 = os.open(tmp_path / "a", os.O_RDONLY)
        assert table.holds(fd2)
        os.close(fd2)
    finally:
        os.close(fd)


def test_a_change_of_size_voids_and_drops_it(tmp_path: Path) -> None:
    table = ZeroFillRecords()
    fd = _open(tmp_path / "a", bytes(4096))
    try:
        table.remember(fd)
        os.ftruncate(fd, 8192)
        assert not table.holds(fd)
        assert len(table) == 0
    finally:
        os.close(fd)


def test_forget(tmp_path: Path) -> None:
    table = ZeroFillRecords()
    fd = _open(tmp_path / "a")
    try:
        table.remember(fd)
        table.forget(file_key(os.fstat(fd)))
        assert not table.holds(fd)
    finally:
        os.close(fd)


def test_bounded_oldest_first(tmp_path: Path) -> None:
    table = ZeroFillRecords(limit=2)
    fds = [_open(tmp_path / f"f{i}") for i in range(3)]
    try:
        for fd in fds:
            table.remember(fd)
        assert len(table) == 2
        assert [table.holds(fd) for fd in fds] == [False, True, True]
    finally:
        for fd in fds:
            os.close(fd)


def test_another_file_is_not_mistaken(tmp_path: Path) -> None:
    table = ZeroFillRecords()
    a, b = _open(tmp_path / "a"), _open(tmp_path / "b")
    try:
        table.remember(a)
        assert not table.holds(b)
    finally:
        os.close(a)
        os.close(b)


def test_remember_returns_once_a_later_change_must_show(tmp_path: Path) -> None:
    """Without multigrain timestamps a change is stamped with the coarse
    clock: once it is past the record's ctime, any later write moves it."""
    table = ZeroFillRecords()
    fd = _open(tmp_path / "a", bytes(4096))
    try:
        table.remember(fd)
        assert table.holds(fd)
        assert time.clock_gettime_ns(CLOCK_REALTIME_COARSE) > os.fstat(fd).st_ctime_ns
    finally:
        os.close(fd)
