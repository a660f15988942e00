"""``scripts/bench mirror``: zero-aware blockdev-mirror, qmpd next to QSD 11.1.

The issue's benchmark: a sparse raw source (default 4 GiB, 5% data in
1 MiB extents spread evenly) mirrored with ``sync: full`` to

(a) ``fresh``: a target just made by ``blockdev-create`` (driver file,
    preallocation off);
(b) ``zero-allocated``: a fully allocated target of zeroes
    (``posix_fallocate``), mirrored with ``target-is-zero: true``;
(c) ``unmap``: the same kind of allocated target, opened with
    ``discard: unmap`` and ``detect-zeroes: unmap``.

For each daemon and case (medians over ``--rounds``, daemons alternating):
seconds from sending ``blockdev-mirror`` to ``BLOCK_JOB_READY`` and the
daemon's CPU seconds meanwhile; bytes the daemon wrote (``write_bytes`` of
/proc/PID/io, i.e. what reached the page cache/storage, and ``wchar``,
what went through write system calls and ``copy_file_range``) from the
mirror's start to its completion; the target's
allocation after ``job-complete`` (st_blocks, as ``du``); and for qmpd its
``x-zero-stats``.  Ratios are qmpd / QSD.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.options import add_common_arguments, progress_log, publish, selected_daemons
from bench.stats import median, ratio, skipped_lines, table
from tests.support.daemons import REPO, DaemonKind, qmpd_kind, qsd_new_kind, running, why_missing

__all__ = ["CASES", "add_arguments", "main", "run"]

MiB = 1 << 20
GiB = 1 << 30
CASES = ("fresh", "zero-allocated", "unmap")
RESULTS = REPO / "bench-results" / "mirror.json"
TIMEOUT = 600.0


class Client:
    """A blocking QMP client that keeps the events it reads."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        self.events: list[dict[str, Any]] = []
        self.file.readline()
        self.execute("qmp_capabilities")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise RuntimeError("daemon closed the monitor")
        message: dict[str, Any] = json.loads(line)
        if "event" in message:
            self.events.append(message)
        return message

    def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.file.write(json.dumps(request).encode() + b"\n")
        self.file.flush()
        while True:
            message = self._read()
            if "event" in message:
                continue
            if "error" in message:
                raise RuntimeError(f"{command}: {message['error']['desc']}")
            return message["return"]

    def wait(self, name: str, status: str | None = None) -> None:
        """Wait for event ``name`` (seen already, or still to come)."""

        def hit(e: dict[str, Any]) -> bool:
            return e["event"] == name and (status is None or e["data"].get("status") == status)

        while True:
            for i, event in enumerate(self.events):
                if hit(event):
                    del self.events[: i + 1]
                    return
            self._read()


def proc_io(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = int(value)
    return out


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_source(path: Path, size: int, percent: float) -> int:
    """A sparse file with ``percent`` % of ``size`` as 1 MiB data extents,
    evenly spread; returns the data bytes."""
    extents = int(size * percent / 100) // MiB
    stride = size // max(extents, 1)
    block = bytes(range(256)) * (MiB // 256)
    with path.open("wb") as f:
        f.truncate(size)
        for i in range(extents):
            f.seek(i * stride)
            f.write(block)
    return extents * MiB


def make_allocated(path: Path, size: int) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def one_case(
    client: Client, pid: int, work: Path, src: Path, size: int, case: str
) -> dict[str, Any]:
    dst = work / f"dst-{case}.img"
    if dst.exists():
        dst.unlink()
    target: dict[str, Any] = {"driver": "file", "node-name": "dst", "filename": str(dst)}
    mirror: dict[str, Any] = {}
    if case == "fresh":
        options = {"driver": "file", "filename": str(dst), "size": size}
        client.execute("blockdev-create", **{"job-id": "create", "options": options})
        client.wait("JOB_STATUS_CHANGE", "concluded")
        client.execute("job-dismiss", id="create")
    else:
        make_allocated(dst, size)
        if case == "zero-allocated":
            mirror["target-is-zero"] = True
        else:
            target.update({"discard": "unmap", "detect-zeroes": "unmap"})
    client.execute(
        "blockdev-add", driver="raw", **{"node-name": "src"},
        file={"driver": "file", "filename": str(src)},
    )  # fmt: skip
    client.execute("blockdev-add", **target)
    before = proc_io(pid)
    cpu0 = proc_cpu(pid)
    t0 = time.perf_counter()
    client.execute(
        "blockdev-mirror", device="src", target="dst", sync="full", **{"job-id": "m"}, **mirror
    )
    client.wait("BLOCK_JOB_READY")
    ready = time.perf_counter() - t0
    cpu = proc_cpu(pid) - cpu0
    stats = None
    for job in client.execute("query-block-jobs"):
        stats = job.get("x-zero-stats")
    client.execute("job-complete", id="m")
    client.wait("JOB_STATUS_CHANGE", "null")
    after = proc_io(pid)
    client.execute("blockdev-del", **{"node-name": "dst"})
    client.execute("blockdev-del", **{"node-name": "src"})
    result = {
        "ready_s": ready,
        "cpu_s": cpu,
        "write_bytes": after["write_bytes"] - before["write_bytes"],
        "wchar": after["wchar"] - before["wchar"],
        "allocated": dst.stat().st_blocks * 512,
        "x-zero-stats": stats,
    }
    dst.unlink()
    return result


def run(
    names: Sequence[str], size: int, percent: float, rounds: int = 3, log: Any = None
) -> dict[str, Any]:
    """``rounds`` rounds; in each, every daemon runs every case.  Daemons
    alternate round by round, so a burst of load elsewhere on the machine
    hits both rather than one."""
    found: dict[str, DaemonKind | None] = {"qmpd": qmpd_kind(), "qsd-new": qsd_new_kind()}
    report: dict[str, Any] = {
        "size": size, "percent": percent, "rounds": rounds, "daemons": {}, "skipped": {},
    }  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="qmpd-bench-mirror-", dir="/tmp"))
    try:
        src = work / "src.img"
        report["source_data"] = make_source(src, size, percent)
        report["source_allocated"] = src.stat().st_blocks * 512
        for name in names:
            if found[name] is None:
                report["skipped"][name] = why_missing(name)
        present = [n for n in names if found[n] is not None]
        for r in range(rounds):
            for name in present if r % 2 == 0 else reversed(present):
                kind = found[name]
                assert kind is not None
                with running(kind) as daemon:
                    client = Client(daemon.sockets[0])
                    try:
                        for case in CASES:
                            if log:
                                log(f"round {r + 1}/{rounds} {name}: {case}")
                            result = one_case(client, daemon.proc.pid, work, src, size, case)
                            by_case = report["daemons"].setdefault(name, {})
                            by_case.setdefault(case, []).append(result)
                    finally:
                        client.close()
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    return report


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds."""
    out: dict[str, Any] = {}
    for key in ("ready_s", "cpu_s", "write_bytes", "wchar", "allocated"):
        out[key] = median([r[key] for r in results])
    out["x-zero-stats"] = results[-1]["x-zero-stats"]
    return out


def _mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MiB:.1f}"


def render(report: dict[str, Any]) -> str:
    daemons = report["daemons"]
    lines = [
        f"source: {report['size'] / GiB:.1f} GiB raw, {report['percent']}% data in 1 MiB "
        f"extents ({_mib(report['source_data'])} MiB data, "
        f"{_mib(report['source_allocated'])} MiB allocated); medians of "
        f"{report['rounds']} rounds",
    ]
    rows = []
    medians = {n: {c: summary(rs) for c, rs in by_case.items()} for n, by_case in daemons.items()}
    for case in CASES:
        for name, results in medians.items():
            r = results[case]
            zs = r["x-zero-stats"]
            spread = sorted(x["ready_s"] for x in daemons[name][case])
            rows.append([
                case, name, f"{r['ready_s']:.3f}", f"{spread[0]:.3f}-{spread[-1]:.3f}",
                f"{r['cpu_s']:.2f}",
                _mib(r["write_bytes"]), _mib(r["wchar"]),
                _mib(r["allocated"]),
                "-" if zs is None else f"{_mib(zs['copied'])}/{_mib(zs['zeroed'])}/"
                f"{_mib(zs['skipped'])}",
            ])  # fmt: skip
        if {"qmpd", "qsd-new"} <= set(daemons):
            a, b = medians["qmpd"][case], medians["qsd-new"][case]
            keys = ("ready_s", "cpu_s", "write_bytes", "wchar", "allocated")
            ratios = [ratio(a[k], b[k]) for k in keys]
            rows.append([case, "qmpd/qsd", ratios[0], "", *ratios[1:], ""])
    header = ["case", "daemon", "ready s", "min-max", "cpu s", "write_bytes MiB", "wchar MiB",
              "allocated MiB", "copied/zeroed/skipped MiB"]  # fmt: skip
    lines.append(table(header, rows))
    lines += skipped_lines(report["skipped"])
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-gib", type=float, default=4.0, help="source size (GiB)")
    parser.add_argument("--percent", type=float, default=5.0, help="data share of the source")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, daemons alternating")
    add_common_arguments(parser, ("qmpd", "qsd-new"), RESULTS)


def main(args: argparse.Namespace) -> int:
    names = selected_daemons(args, ("qmpd", "qsd-new"))
    if names is None:
        return 2

    size = int(args.size_gib * GiB) // MiB * MiB
    report = run(names, size, args.percent, max(1, args.rounds), log=progress_log(args))
    publish(args, report, render(report))
    return 0 if report["daemons"] else 1
