"""The daemon as a process: sockets, pidfile, daemonize, signals, exit status."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.daemons import REPO, RawClient, wait_for_socket

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def start(*args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    # The daemon's log goes to a file: a pipe nobody reads could fill up.
    with open(Path(tempfile.gettempdir()) / "qmpd-test-daemon.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "qmpd", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=ENV,
            cwd=cwd,
        )


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "qmpd", *args], capture_output=True, env=ENV, timeout=60, check=False
    )


def test_bad_option_is_one_line_and_status_1(tmp_path: Path) -> None:
    result = run("--bogus", "--socket", str(tmp_path / "s"))
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == ["qmpd: unrecognized option '--bogus'"]
    assert not (tmp_path / "s").exists()


def test_version_and_help() -> None:
    assert run("-V").stdout.startswith(b"qmpd version")
    assert b"--monitor" in run("--help").stdout


def test_socket_mode_stale_socket_and_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on
    old = os.umask(0)
    try:
        proc = start("--socket", str(path))
    finally:
        os.umask(old)
    try:
        wait_for_socket(str(path), proc)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with RawClient(str(path)) as client:
            client.negotiate()
            client.send(b'{"execute": "query-version"}')
            assert b'"return"' in client.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert not path.exists()
    finally:
        proc.kill()


def test_live_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    first = start("--socket", str(path))
    try:
        wait_for_socket(str(path), first)
        result = run("--socket", str(path))
        assert result.returncode == 1
        assert b"another process is listening" in result.stderr
        assert path.exists()  # the first daemon's socket is untouched
    finally:
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=20) == 0


def test_quit_exits_zero_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    pidfile = tmp_path / "pid"
    proc = start(
        "--chardev", f"socket,id=m,path={path},server=on,wait=off", "--monitor", "chardev=m",
        "--pidfile", str(pidfile),
    )  # fmt: skip
    try:
        wait_for_socket(str(path), proc)
        assert int(pidfile.read_text()) == proc.pid
        with RawClient(str(path)) as client:
            client.negotiate()
            client.send(b'{"execute": "quit", "id": 1}')
            assert client.readline() == b'{"return": {}, "id": 1}'
        assert proc.wait(timeout=20) == 0
        assert not path.exists()
        assert not pidfile.exists()
    finally:
        proc.kill()


def test_daemonize_parent_exits_when_listening(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    pidfile = tmp_path / "pid"
    result = run("--socket", str(path), "--pidfile", str(pidfile), "--daemonize")
    assert result.returncode == 0, result.stderr
    pid = int(pidfile.read_text())
    try:
        with RawClient(str(path)) as client:  # listening already: no waiting
            client.negotiate()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not path.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_pidfile_held_by_another_daemon(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    first = start("--socket", str(tmp_path / "a.sock"), "--pidfile", str(pidfile))
    try:
        wait_for_socket(str(tmp_path / "a.sock"), first)
        result = run("--socket", str(tmp_path / "b.sock"), "--pidfile", str(pidfile))
        assert result.returncode == 1
        assert b"pid file" in result.stderr
        assert not (tmp_path / "b.sock").exists()
    finally:
        first.terminate()
        first.wait(timeout=20)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_exit_zero(tmp_path: Path, sig: signal.Signals) -> None:
    path = tmp_path / "q.sock"
    proc = start("--socket", str(path))
    wait_for_socket(str(path), proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == 0
    assert not path.exists()


@pytest.mark.parametrize("how", ["--trace", "QMPD_TRACE"])
def test_trace_logs_every_message(tmp_path: Path, how: str) -> None:
    path = tmp_path / "q.sock"
    log = tmp_path / "log"
    env = {**ENV, "QMPD_TRACE": "1"} if how == "QMPD_TRACE" else ENV
    args = ["--socket", str(path)] + (["--trace"] if how == "--trace" else [])
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qmpd", *args], stdout=out, stderr=out, env=env
        )
    try:
        wait_for_socket(str(path), proc)
        with RawClient(str(path)) as client:
            client.negotiate()
            client.send(b'{"execute": "query-version", "id": "t1"}')
            client.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log.read_text()
    assert "session opened" in text
    assert "session closed" in text
    assert '<-- {"execute": "query-version", "id": "t1"}' in text
    assert '--> {"return": {"qemu"' in text
