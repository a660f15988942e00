"""``scripts/bench`` runs: its functions with tiny counts, against qmpd only.

These check the benchmark code, not qmpd's speed: every figure only has to
exist and be sane.  qmpd is started as a real process; when it cannot
start (yet), the daemon-backed tests skip and say why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import qmp
from bench.client import BenchError, _Lines, command, connect, pipelined, sessions
from tests.support.daemons import Daemon, qmpd_kind, running


@pytest.fixture(scope="module")
def qmpd_process() -> Iterator[Daemon]:
    with ExitStack() as stack:
        try:
            daemon = stack.enter_context(running(qmpd_kind(), monitors=1))
            connect(daemon.sockets[0]).close()
        except (OSError, RuntimeError, BenchError) as e:
            pytest.skip(f"qmpd cannot start or negotiate: {e}")
        yield daemon


@pytest.fixture
def qmpd(qmpd_process: Daemon) -> Daemon:
    # One daemon serves the module; if a test (or the start-up probe) killed
    # it, say so instead of failing later on a missing socket.
    if qmpd_process.proc.poll() is not None:
        tail = qmpd_process.stderr().strip().splitlines()[-4:]
        pytest.fail(f"qmpd exited with {qmpd_process.proc.returncode}: {' | '.join(tail)}")
    return qmpd_process


def test_lines_counts_replies_across_any_split() -> None:
    stream = (
        b'{"return": {}, "id": 1}\r\n'
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "X"}\r\n'
        b'{"error": {"class": "GenericError", "desc": "no"}, "id": 2}\r\n'
        b'{"return": {}, "id": 3}\r\n'
    )
    for size in (1, 2, 7, len(stream)):
        lines = _Lines()
        got = sum(lines.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        assert (got, lines.errors) == (3, 1)
        assert lines.first_error.startswith(b'{"error"')


def test_latency(qmpd: Daemon) -> None:
    lat = qmp.measure_latency(qmpd.sockets[0], warmup=5, count=50)
    assert 0 < lat.median_us <= lat.p99_us
    assert lat.client_cpu_us > 0


def test_pipelined(qmpd: Daemon) -> None:
    rates = qmp.measure_pipelined(qmpd.sockets[0], count=200, reps=2)
    assert len(rates) == 2
    assert all(r > 0 for r in rates)


def test_pipelined_error_replies_are_not_counted_as_speed(qmpd: Daemon) -> None:
    sock = connect(qmpd.sockets[0])
    try:
        payload = b"".join(command(i, "no-such-command") for i in range(10))
        with pytest.raises(BenchError, match="10 error replies"):
            pipelined(sock, payload, 10)
    finally:
        sock.close()


def test_sessions_share_one_socket(qmpd: Daemon) -> None:
    result = qmp.measure_sessions(qmpd.sockets, 10, 0.2, qmpd.proc.pid)
    assert result.sessions == 10
    assert result.min_per_session >= 1  # every session was served
    assert result.commands >= 10
    assert result.per_second > 0


def test_sessions_finish_the_command_in_flight(qmpd: Daemon) -> None:
    socks = [connect(qmpd.sockets[0]) for _ in range(3)]
    try:
        sessions(socks, 0.0)
        # Nothing may be left unread: a fresh round trip gets its own reply.
        for s in socks:
            s.sendall(command(99))
            assert s.recv(65536).endswith(b"\n")
    finally:
        for s in socks:
            s.close()


def test_whole_run_writes_json_and_table(
    qmpd: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qmp.json"
    argv = ["qmp", "--daemons", "qmpd", "--rounds", "1", "--latency-count", "20",
            "--pipeline-count", "50", "--sessions", "5", "--duration", "0.1",
            "--json", str(out), "-q"]  # fmt: skip
    assert bench_main.main(argv) == 0
    report = json.loads(out.read_text())
    summary = report["daemons"]["qmpd"]["summary"]
    assert summary["pipelined_per_second"] > 0
    assert report["daemons"]["qmpd"]["monitors_for_sessions"] == 1
    printed = capsys.readouterr().out
    assert "all 5 sessions on ONE socket" in printed
    assert "no qmpd figures" not in printed
