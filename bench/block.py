"""``scripts/bench block``: the block graph's bulk cost and guest-style writes.

Two measurements, each a median over rounds:

*nodes*: ``blockdev-add`` of N ``null-co`` nodes (default 10,000), written
in one pipelined burst, then one ``query-named-block-nodes`` listing them
all (timed to the last byte of its reply).  Every daemon found (qmpd, QSD
7.2, QSD 11.1) is started afresh for each round, the daemon order rotating
between rounds, so each round starts from an empty graph on a quiet
process.  Memory per node is the growth of the daemon's resident set
(``VmRSS``) over the burst, divided by N.  Goal: qmpd at least as fast as
each QSD in both timings (ratios are qmpd / QSD, lower is better).

*writes*: M sequential 1 MiB writes (default 128) at increasing offsets
into a fresh sparse file, through qmpd's ``human-monitor-command``
``qemu-io NODE "write -P 0xab OFF 1M"``, then a ``flush``; against the
``qemu-io`` binary writing the same pattern to a fresh file with one
``-c 'write ...'`` per request (qemu-io flushes when it closes the image,
hence qmpd's final flush).  qemu-io's wall time includes its start-up;
that is what a script running ``qemu-io -c`` pays.  Goal: qmpd within 2x.
QSD has no human monitor, so only qmpd runs this part.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.client import BenchError, _readline, connect, pipelined, query_version
from bench.options import (
    DAEMONS,
    add_common_arguments,
    find_kinds,
    progress_log,
    publish,
    selected_daemons,
)
from bench.stats import median, skipped_lines, table
from tests.support.daemons import (
    REPO,
    Daemon,
    running,
)
from tests.support.qemu_tools import new_tool, system_tool

__all__ = [
    "BlockParams",
    "NodesResult",
    "WritesResult",
    "add_arguments",
    "main",
    "measure_nodes",
    "measure_qemu_io",
    "measure_qmpd_writes",
    "render",
    "run",
]

RESULTS = REPO / "bench-results" / "block.json"
MiB = 1 << 20

GOAL_NODES = 1.0  # qmpd time / QSD time <= 1
GOAL_WRITES = 2.0  # qmpd time / qemu-io time <= 2

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BlockParams:
    """Counts; the defaults keep a full run near a minute."""

    rounds: int = 3
    nodes: int = 10_000
    writes: int = 128


@dataclass(frozen=True, slots=True)
class NodesResult:
    add_seconds: float
    query_seconds: float
    query_bytes: int
    rss_before_kib: int
    rss_after_kib: int


@dataclass(frozen=True, slots=True)
class WritesResult:
    seconds: float
    mib: int


def rss_kib(pid: int) -> int:
    """The process's resident set in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def _call(sock: socket.socket, name: str, arguments: dict[str, Any] | None = None) -> Any:
    """One command, waiting for its reply (events skipped); its ``return``."""
    msg: dict[str, Any] = {"execute": name}
    if arguments is not None:
        msg["arguments"] = arguments
    sock.sendall(json.dumps(msg).encode() + b"\n")
    buf = bytearray()
    while True:
        line = _readline(sock, buf)
        if b'"event"' not in line[:40]:
            reply = json.loads(line)
            if "return" not in reply:
                raise BenchError(f"{name} failed: {line[:300]!r}")
            return reply["return"]


def _add_commands(count: int) -> bytes:
    return b"".join(
        b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", '
        b'"node-name": "n%d", "size": 1048576}}\n' % i
        for i in range(count)
    )


def measure_nodes(daemon: Daemon, count: int) -> NodesResult:
    """blockdev-add ``count`` null-co nodes, then list them; see the module docstring."""
    sock = connect(daemon.sockets[0])
    try:
        pid = daemon.proc.pid
        before = rss_kib(pid)
        add = pipelined(sock, _add_commands(count), count)
        after = rss_kib(pid)
        sock.sendall(b'{"execute": "query-named-block-nodes", "arguments": {"flat": true}}\n')
        t0 = time.perf_counter()
        buf = bytearray()
        line = _readline(sock, buf)
        query = time.perf_counter() - t0
        if not line.startswith(b'{"return": [') or line.count(b'"node-name"') != count:
            raise BenchError(f"query-named-block-nodes: unexpected reply {line[:200]!r}")
        return NodesResult(add, query, len(line), before, after)
    finally:
        sock.close()


def _write_cmd(node: str, offset: int) -> dict[str, Any]:
    return {"command-line": f'qemu-io {node} "write -P 0xab {offset} 1M"'}


def measure_qmpd_writes(daemon: Daemon, workdir: str, count: int, tag: str) -> WritesResult:
    """``count`` 1 MiB writes through qemu-io over HMP, then a flush."""
    path = os.path.join(workdir, f"w-{tag}.img")
    with open(path, "wb") as f:
        f.truncate(count * MiB)
    sock = connect(daemon.sockets[0])
    node = f"w{tag}"
    try:
        _call(sock, "blockdev-add", {"driver": "file", "node-name": node, "filename": path})
        t0 = time.perf_counter()
        for i in range(count):
            out = _call(sock, "human-monitor-command", _write_cmd(node, i * MiB))
            if "wrote" not in out:
                raise BenchError(f"qemu-io write failed: {out!r}")
        _call(sock, "human-monitor-command", {"command-line": f'qemu-io {node} "flush"'})
        seconds = time.perf_counter() - t0
        _call(sock, "blockdev-del", {"node-name": node})
    finally:
        sock.close()
        os.unlink(path)
    return WritesResult(seconds, count)


def measure_qemu_io(binary: Sequence[str], workdir: str, count: int) -> WritesResult:
    """The qemu-io binary writing the same requests to a fresh file."""
    path = os.path.join(workdir, "w-qemu-io.img")
    with open(path, "wb") as f:
        f.truncate(count * MiB)
    argv = [*binary, "-f", "raw"]
    for i in range(count):
        argv += ["-c", f"write -P 0xab {i * MiB} 1M"]
    argv.append(path)
    try:
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
    finally:
        os.unlink(path)
    if done.returncode != 0 or done.stdout.count("wrote ") != count:
        raise BenchError(f"{' '.join(binary)} failed: {done.stderr.strip()[:300]}")
    return WritesResult(seconds, count)


def _qemu_io_binaries() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    system = system_tool("qemu-io")
    if system:
        found["qemu-io-7.2"] = [system]
    new = new_tool("qemu-io")
    if new:
        found["qemu-io-new"] = [new]
    return found


@contextlib.contextmanager
def _workdir() -> Iterator[str]:
    # Under /tmp: QSD 11.1 runs chrooted and sees /tmp only.
    path = tempfile.mkdtemp(prefix="bench-block-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def summarize_nodes(rounds: Sequence[dict[str, Any]], count: int) -> dict[str, float]:
    growth = [(r["rss_after_kib"] - r["rss_before_kib"]) * 1024 / count for r in rounds]
    return {
        "add_seconds": median([r["add_seconds"] for r in rounds]),
        "query_seconds": median([r["query_seconds"] for r in rounds]),
        "adds_per_second": count / median([r["add_seconds"] for r in rounds]),
        "bytes_per_node": median(growth),
        "query_bytes": median([r["query_bytes"] for r in rounds]),
    }


def run(params: BlockParams, names: Sequence[str], log: Log | None = None) -> dict[str, Any]:
    """Both measurements; the report as a JSON-able dict."""
    started = time.perf_counter()
    say = log or (lambda _msg: None)
    kinds, skipped = find_kinds(names)
    nodes: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        nodes[kind.name] = {"rounds": []}
    for rnd in range(params.rounds):
        order = kinds[rnd % len(kinds) :] + kinds[: rnd % len(kinds)] if kinds else []
        for kind in order:
            if kind.name in skipped:
                continue
            say(f"round {rnd + 1}/{params.rounds}: {kind.name}: {params.nodes} blockdev-add")
            try:
                with running(kind) as daemon:
                    if "version" not in nodes[kind.name]:
                        sock = connect(daemon.sockets[0])
                        try:
                            nodes[kind.name]["version"] = query_version(sock)
                        finally:
                            sock.close()
                    result = measure_nodes(daemon, params.nodes)
            except (OSError, RuntimeError, BenchError, ValueError) as e:
                skipped[kind.name] = f"failed: {e}"
                continue
            nodes[kind.name]["rounds"].append(asdict(result))
    for name in list(nodes):
        if not nodes[name]["rounds"] or name in skipped:
            del nodes[name]
            continue
        nodes[name]["summary"] = summarize_nodes(nodes[name]["rounds"], params.nodes)
    ratios: dict[str, dict[str, float]] = {}
    if "qmpd" in nodes:
        mine = nodes["qmpd"]["summary"]
        for ref, data in nodes.items():
            if ref != "qmpd":
                theirs = data["summary"]
                ratios[ref] = {
                    "add": mine["add_seconds"] / theirs["add_seconds"],
                    "query": mine["query_seconds"] / theirs["query_seconds"],
                    "memory": mine["bytes_per_node"] / max(theirs["bytes_per_node"], 1.0),
                }

    writes: dict[str, Any] = {}
    qmpd = next((k for k in kinds if k.name == "qmpd"), None)
    binaries = _qemu_io_binaries()
    if qmpd is not None and "qmpd" not in skipped:
        with _workdir() as work, running(qmpd) as daemon:
            samples: dict[str, list[float]] = {"qmpd": [], **{b: [] for b in binaries}}
            for rnd in range(params.rounds):
                say(f"round {rnd + 1}/{params.rounds}: {params.writes} x 1 MiB writes")
                res = measure_qmpd_writes(daemon, work, params.writes, str(rnd))
                samples["qmpd"].append(res.seconds)
                for name, argv in binaries.items():
                    samples[name].append(measure_qemu_io(argv, work, params.writes).seconds)
        writes = {
            "count": params.writes,
            "samples": samples,
            "median_seconds": {k: median(v) for k, v in samples.items()},
        }
        writes["ratios"] = {
            name: writes["median_seconds"]["qmpd"] / writes["median_seconds"][name]
            for name in binaries
        }
    return {
        "params": asdict(params),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seconds": time.perf_counter() - started,
        "nodes": nodes,
        "node_ratios": ratios,
        "writes": writes,
        "skipped": skipped,
    }


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def render(report: dict[str, Any]) -> str:
    """The human-readable tables, goals beside the ratios."""
    p = report["params"]
    out = [f"block benchmark: {p['rounds']} rounds, {report['machine']['cpus']} CPUs"]
    nodes: dict[str, Any] = report["nodes"]
    names = list(nodes)
    refs = list(report["node_ratios"])
    header = ["median of rounds", *names, *(f"qmpd/{r}" for r in refs), "goal"]
    rows: list[list[str]] = []

    def row(label: str, key: str, fmt: str, ratio: str | None, goal: str) -> None:
        cells = [label, *(format(nodes[n]["summary"][key], fmt) for n in names)]
        for r in refs:
            if ratio is None:
                cells.append("")
                continue
            x = report["node_ratios"][r][ratio]
            cells.append(f"{x:.2f}x" + (f" {_mark(x <= GOAL_NODES)}" if goal else ""))
        rows.append([*cells, goal])

    n = p["nodes"]
    row(f"{n} x blockdev-add (s)", "add_seconds", ".3f", "add", f"<= {GOAL_NODES:g}x")
    row("query-named-block-nodes (s)", "query_seconds", ".3f", "query", f"<= {GOAL_NODES:g}x")
    row("blockdev-add per second", "adds_per_second", ".0f", None, "")
    row("RSS growth per node (bytes)", "bytes_per_node", ".0f", "memory", "")
    row("query reply (bytes)", "query_bytes", ".0f", None, "")
    out += ["", table(header, rows)]
    for name, data in nodes.items():
        out.append(f"{name}: version {data.get('version', '?')}")
    writes = report["writes"]
    if writes:
        med = writes["median_seconds"]
        wnames = list(med)
        header = ["median of rounds", *wnames, *(f"qmpd/{b}" for b in writes["ratios"]), "goal"]
        count = writes["count"]
        cells = [f"{count} x 1 MiB writes + flush (s)", *(f"{med[w]:.3f}" for w in wnames)]
        cells += [f"{x:.2f}x {_mark(x <= GOAL_WRITES)}" for x in writes["ratios"].values()]
        mib_s = ["MiB/s", *(f"{count / med[w]:.0f}" for w in wnames), *[""] * len(writes["ratios"])]
        out += ["", table(header, [[*cells, f"<= {GOAL_WRITES:g}x"], [*mib_s, ""]])]
        out.append(
            "qmpd: human-monitor-command qemu-io, one round trip per write; "
            "qemu-io: one process, one -c per write (start-up and close included)"
        )
    out += skipped_lines(report["skipped"])
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BlockParams()
    parser.add_argument("--rounds", type=int, default=d.rounds)
    parser.add_argument("--nodes", type=int, default=d.nodes, help="null-co nodes per round")
    parser.add_argument("--writes", type=int, default=d.writes, help="1 MiB writes per round")
    add_common_arguments(parser, DAEMONS, RESULTS)


def main(args: argparse.Namespace) -> int:
    names = selected_daemons(args, DAEMONS)
    if names is None:
        return 2
    params = BlockParams(rounds=args.rounds, nodes=args.nodes, writes=args.writes)

    report = run(params, names, log=progress_log(args))
    publish(args, report, render(report))
    return 0 if report["nodes"] else 1
