"""``scripts/bench block`` with tiny counts against qmpd only.

These check the benchmark code, not qmpd's speed: the figures only have
to exist and be sane.  When qmpd cannot start, the tests skip and say why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import block
from bench.client import BenchError, connect
from tests.support.daemons import Daemon, qmpd_kind, running
from tests.support.qemu_tools import system_tool, why_system_missing

QEMU_IO = system_tool("qemu-io")


@pytest.fixture(scope="module")
def qmpd() -> Iterator[Daemon]:
    with ExitStack() as stack:
        try:
            daemon = stack.enter_context(running(qmpd_kind(), monitors=1))
            connect(daemon.sockets[0]).close()
        except (OSError, RuntimeError, BenchError) as e:
            pytest.skip(f"qmpd cannot start or negotiate: {e}")
        yield daemon


def test_nodes(qmpd: Daemon) -> None:
    result = block.measure_nodes(qmpd, 50)
    assert result.add_seconds > 0
    assert result.query_seconds > 0
    assert result.query_bytes > 50 * 100
    assert result.rss_after_kib >= result.rss_before_kib > 0


def test_qmpd_writes(qmpd: Daemon, tmp_path: Path) -> None:
    result = block.measure_qmpd_writes(qmpd, str(tmp_path), 3, "t")
    assert result.seconds > 0
    assert result.mib == 3
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(QEMU_IO is None, reason=why_system_missing("qemu-io"))
def test_qemu_io_writes(tmp_path: Path) -> None:
    result = block.measure_qemu_io([str(QEMU_IO)], str(tmp_path), 2)
    assert result.seconds > 0


def test_subcommand_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "block.json"
    argv = ["block", "--daemons", "qmpd", "--rounds", "1", "--nodes", "20", "--writes", "2"]
    status = bench_main.main([*argv, "--json", str(out), "-q"])
    report = json.loads(out.read_text())
    if "qmpd" in report["skipped"]:
        pytest.skip(f"qmpd: {report['skipped']['qmpd']}")
    assert status == 0
    assert report["nodes"]["qmpd"]["summary"]["add_seconds"] > 0
    assert report["writes"]["count"] == 2
    text = capsys.readouterr().out
    assert "20 x blockdev-add" in text
    assert "1 MiB writes" in text
