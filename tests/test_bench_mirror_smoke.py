"""``scripts/bench mirror`` runs end to end on a tiny source, qmpd only.

It checks the benchmark code (cases, rounds, medians, the table), not
qmpd's speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench.mirror import CASES


def test_mirror_subcommand_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mirror.json"
    argv = ["mirror", "--daemons", "qmpd", "--size-gib", "0.0625", "--rounds", "2"]
    status = bench_main.main([*argv, "--json", str(out), "-q"])
    report = json.loads(out.read_text())
    if "qmpd" in report["skipped"]:
        pytest.skip(f"qmpd: {report['skipped']['qmpd']}")
    assert status == 0
    source_data = report["source_data"]
    assert source_data > 0
    for case in CASES:
        rounds = report["daemons"]["qmpd"][case]
        assert len(rounds) == 2
        for result in rounds:
            assert result["ready_s"] > 0
            # Only the source's data reaches the target.
            assert result["x-zero-stats"]["copied"] == report["source_allocated"]
    text = capsys.readouterr().out
    assert "medians of 2 rounds" in text
    assert all(case in text for case in CASES)
