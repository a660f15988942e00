"""``scripts/bench qmp``: the monitor protocol itself, qmpd against QSD.

Theory of operation: every daemon found (qmpd, Debian's QSD 7.2, QSD 11.1
as found by tests/support/qemu_tools.py) is started twice before anything is
measured: a *single* instance with one monitor, for round-trip latency and
pipelined throughput, and a *many* instance for concurrent sessions.  QSD
serves one client per monitor, so its many instance gets one monitor per
session; qmpd serves every client on ONE socket.  All instances stay up for
the whole run and the rounds are interleaved (the daemon order rotating
each round), so the machine's drift spreads over all daemons instead of
landing on whichever ran last.  Each figure is the median over rounds:
these machines have two cores and are noisy.

The client is ``bench.client``: raw sockets, lines counted, no JSON.  Its
own CPU time is measured in the concurrent test and reported, so a
client-bound result cannot pass unnoticed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.client import (
    BenchError,
    command,
    connect,
    daemon_cpu_seconds,
    pipelined,
    query_version,
    round_trips,
    sessions,
)
from bench.options import (
    DAEMONS,
    add_common_arguments,
    find_kinds,
    progress_log,
    publish,
    selected_daemons,
)
from bench.stats import median, percentile, skipped_lines, table
from tests.support.daemons import (
    REPO,
    Daemon,
    DaemonKind,
    running,
)

__all__ = [
    "Latency",
    "QmpParams",
    "SessionsResult",
    "Target",
    "add_arguments",
    "main",
    "measure_latency",
    "measure_pipelined",
    "measure_sessions",
    "render",
    "run",
    "summarize",
]

RESULTS = REPO / "bench-results" / "qmp.json"

# The goals qmpd is measured against (ratios are qmpd / QSD).
GOAL_PIPELINED = 5.0  # pipelined throughput >= 5x QSD's
GOAL_LATENCY = 0.6  # median round trip <= 0.6x QSD's
GOAL_SCALING = 1.0  # 100 sessions together >= 1 session alone
# Above this share of one core the client may be what limits the figure.
CLIENT_BOUND = 0.9


@dataclass(frozen=True, slots=True)
class QmpParams:
    """Counts and durations; the defaults keep a three-daemon run near 1 minute."""

    rounds: int = 5
    warmup: int = 200
    latency_count: int = 2000
    pipeline_count: int = 2000
    pipeline_reps: int = 3
    sessions: int = 100
    duration: float = 1.0


@dataclass(frozen=True, slots=True)
class Latency:
    median_us: float
    p99_us: float
    client_cpu_us: float  # this process's CPU per round trip: the client's own cost


@dataclass(frozen=True, slots=True)
class SessionsResult:
    sessions: int
    commands: int
    seconds: float
    per_second: float
    client_cpu_share: float  # of one core, over the run
    daemon_cpu_us_per_command: float
    min_per_session: int
    max_per_session: int


def measure_latency(path: str, warmup: int, count: int) -> Latency:
    """Round trips of ``query-version`` (each with its own id) on one session."""
    sock = connect(path)
    try:
        round_trips(sock, [command(i) for i in range(1, warmup + 1)])
        commands = [command(i) for i in range(1, count + 1)]
        cpu0 = time.process_time()
        samples = round_trips(sock, commands)
        cpu = time.process_time() - cpu0
    finally:
        sock.close()
    us = [s / 1000 for s in samples]
    return Latency(median(us), percentile(us, 99), cpu / count * 1e6)


def measure_pipelined(path: str, count: int, reps: int) -> list[float]:
    """Commands per second for ``count`` commands written at once, per repetition."""
    payload = b"".join(command(i) for i in range(1, count + 1))
    sock = connect(path)
    try:
        pipelined(sock, payload, count)  # warm-up: buffers grown, code paths hot
        return [count / pipelined(sock, payload, count) for _ in range(reps)]
    finally:
        sock.close()


def measure_sessions(paths: Sequence[str], n: int, duration: float, pid: int) -> SessionsResult:
    """``n`` sessions doing round trips at once; session i uses ``paths[i % len(paths)]``."""
    socks = []
    try:
        for i in range(n):
            socks.append(connect(paths[i % len(paths)]))
        cpu0 = daemon_cpu_seconds(pid)
        result = sessions(socks, duration)
        daemon_cpu = daemon_cpu_seconds(pid) - cpu0
    finally:
        for s in socks:
            s.close()
    return SessionsResult(
        sessions=n,
        commands=result.commands,
        seconds=result.seconds,
        per_second=result.commands / result.seconds,
        client_cpu_share=result.client_cpu / result.seconds,
        daemon_cpu_us_per_command=daemon_cpu / result.commands * 1e6,
        min_per_session=result.min_per_session,
        max_per_session=result.max_per_session,
    )


@dataclass
class Target:
    """One daemon kind under test: its two running instances and its results."""

    kind: DaemonKind
    single: Daemon
    many: Daemon
    version: str
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def shares_socket(self) -> bool:
        return len(self.many.sockets) == 1


@contextlib.contextmanager
def _targets(
    kinds: Sequence[DaemonKind], params: QmpParams, skipped: dict[str, str]
) -> Iterator[list[Target]]:
    """Start both instances of every kind; a kind that fails to start is skipped."""
    with contextlib.ExitStack() as stack:
        targets = []
        for kind in kinds:
            # qmpd multiplexes clients on one socket; QSD needs a monitor each.
            monitors = 1 if kind.name == "qmpd" else params.sessions
            try:
                single = stack.enter_context(running(kind, monitors=1))
                many = stack.enter_context(running(kind, monitors=monitors))
                sock = connect(single.sockets[0])
                try:
                    version = query_version(sock)
                finally:
                    sock.close()
            except (OSError, RuntimeError, BenchError, ValueError) as e:
                skipped[kind.name] = f"cannot start or query it: {e}"
                continue
            targets.append(Target(kind, single, many, version))
        yield targets


def _round(target: Target, params: QmpParams) -> dict[str, Any]:
    lat = measure_latency(target.single.sockets[0], params.warmup, params.latency_count)
    pipe = measure_pipelined(target.single.sockets[0], params.pipeline_count, params.pipeline_reps)
    pid = target.many.proc.pid
    one = measure_sessions(target.many.sockets[:1], 1, params.duration, pid)
    many = measure_sessions(target.many.sockets, params.sessions, params.duration, pid)
    return {
        "latency": asdict(lat),
        "pipelined_per_second": pipe,
        "one_session": asdict(one),
        "many_sessions": asdict(many),
    }


def summarize(rounds: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Medians over rounds of every figure the table shows."""
    one = [r["one_session"]["per_second"] for r in rounds]
    many = [r["many_sessions"]["per_second"] for r in rounds]
    return {
        "latency_median_us": median([r["latency"]["median_us"] for r in rounds]),
        "latency_p99_us": median([r["latency"]["p99_us"] for r in rounds]),
        "pipelined_per_second": median([x for r in rounds for x in r["pipelined_per_second"]]),
        "one_session_per_second": median(one),
        "many_sessions_per_second": median(many),
        "scaling": median([m / o for m, o in zip(many, one, strict=True)]),
        "daemon_cpu_us_per_command": median(
            [r["many_sessions"]["daemon_cpu_us_per_command"] for r in rounds]
        ),
        "client_cpu_us_per_round_trip": median([r["latency"]["client_cpu_us"] for r in rounds]),
        "client_cpu_share": median([r["many_sessions"]["client_cpu_share"] for r in rounds]),
        "client_cpu_share_max": max(r["many_sessions"]["client_cpu_share"] for r in rounds),
        "min_per_session": min(r["many_sessions"]["min_per_session"] for r in rounds),
    }


def _ratios(summaries: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """qmpd / each QSD, for the figures that have a goal."""
    if "qmpd" not in summaries:
        return {}
    q = summaries["qmpd"]
    out = {}
    for name, s in summaries.items():
        if name == "qmpd":
            continue
        out[name] = {
            "latency_median": q["latency_median_us"] / s["latency_median_us"],
            "latency_p99": q["latency_p99_us"] / s["latency_p99_us"],
            "pipelined": q["pipelined_per_second"] / s["pipelined_per_second"],
            "one_session": q["one_session_per_second"] / s["one_session_per_second"],
            "many_sessions": q["many_sessions_per_second"] / s["many_sessions_per_second"],
        }
    return out


def run(
    params: QmpParams,
    daemons: Sequence[str] = DAEMONS,
    *,
    log: Any = None,
) -> dict[str, Any]:
    """Measure every available daemon; the report that ``render`` prints and JSON keeps."""
    kinds, skipped = find_kinds(daemons)
    started = time.time()
    report: dict[str, Any] = {
        "benchmark": "qmp",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        "params": asdict(params),
        "daemons": {},
        "skipped": skipped,
    }
    with _targets(kinds, params, skipped) as targets:
        for i in range(params.rounds):
            # Rotate the order so no daemon always runs first (or last).
            k = i % len(targets) if targets else 0
            for target in targets[k:] + targets[:k]:
                if log:
                    log(f"bench qmp: round {i + 1}/{params.rounds}, {target.name}")
                target.rounds.append(_round(target, params))
        for t in targets:
            report["daemons"][t.name] = {
                "version": t.version,
                "argv": list(t.kind.argv),
                "monitors_for_sessions": len(t.many.sockets),
                "summary": summarize(t.rounds),
                "rounds": t.rounds,
            }
    summaries = {n: d["summary"] for n, d in report["daemons"].items()}
    report["ratios"] = _ratios(summaries)
    report["seconds"] = time.time() - started
    return report


def _fmt(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def render(report: dict[str, Any]) -> str:
    """The human-readable table, goals beside the qmpd/QSD ratios."""
    daemons: dict[str, Any] = report["daemons"]
    names = list(daemons)
    refs = [n for n in names if n != "qmpd"] if "qmpd" in daemons else []
    n = report["params"]["sessions"]
    header = ["median of rounds", *names, *(f"qmpd/{r}" for r in refs), "goal"]
    rows: list[list[str]] = []

    def row(label: str, key: str, ratio: str | None, goal: str, ok: Any = None) -> None:
        cells = [label, *(_fmt(daemons[d]["summary"][key]) for d in names)]
        for r in refs:
            if ratio is None:
                cells.append("")
                continue
            x = report["ratios"][r][ratio]
            cells.append(f"{x:.2f}x" + (f" {_mark(ok(x))}" if ok else ""))
        rows.append([*cells, goal])

    row(
        "round trip median (us)",
        "latency_median_us",
        "latency_median",
        f"<= {GOAL_LATENCY}x",
        lambda x: x <= GOAL_LATENCY,
    )
    row("round trip p99 (us)", "latency_p99_us", "latency_p99", "")
    row(
        "pipelined (cmd/s)",
        "pipelined_per_second",
        "pipelined",
        f">= {GOAL_PIPELINED:g}x",
        lambda x: x >= GOAL_PIPELINED,
    )
    row("1 session (cmd/s)", "one_session_per_second", "one_session", "")
    row(f"{n} sessions (cmd/s)", "many_sessions_per_second", "many_sessions", "")
    row(f"{n} sessions / 1 session", "scaling", None, f">= {GOAL_SCALING:g} (qmpd)")
    if "qmpd" in daemons:
        ok = daemons["qmpd"]["summary"]["scaling"] >= GOAL_SCALING
        rows[-1][1 + names.index("qmpd")] += f" {_mark(ok)}"
    row(f"daemon CPU us/cmd, {n} sess.", "daemon_cpu_us_per_command", None, "")
    row(f"client CPU share, {n} sess.", "client_cpu_share", None, f"< {CLIENT_BOUND}")

    p = report["params"]
    out = [
        f"QMP benchmark: query-version, {p['rounds']} rounds, "
        f"{report['machine']['cpus']} CPUs, {report['seconds']:.0f}s",
        "",
        table(header, rows),
        "",
        f"round trip: {p['latency_count']} per round after {p['warmup']} warm-up; "
        f"pipelined: {p['pipeline_count']} commands in one write, {p['pipeline_reps']} per round; "
        f"sessions: {p['duration']:g}s each, 1 and {n} sessions on the same instance.",
    ]
    for name, d in daemons.items():
        where = (
            f"all {n} sessions on ONE socket"
            if d["monitors_for_sessions"] == 1
            else f"{d['monitors_for_sessions']} monitors, one session each"
        )
        out.append(f"{name}: version {d['version']}; {where}")
    for name, d in daemons.items():
        s = d["summary"]
        out.append(
            f"client cost with {name}: {s['client_cpu_us_per_round_trip']:.0f} us CPU per round "
            f"trip ({s['client_cpu_us_per_round_trip'] / s['latency_median_us']:.0%} of the "
            f"median), {s['client_cpu_share']:.0%} of a core with {n} sessions"
        )
        if s["client_cpu_share_max"] >= CLIENT_BOUND:
            out.append(
                f"warning: {name}: the client used up to {s['client_cpu_share_max']:.0%} of a "
                f"core in the {n}-session test; that figure may measure the client"
            )
        if s["min_per_session"] == 0:
            out.append(f"warning: {name}: some session completed no command (unfair service)")
    out += skipped_lines(report["skipped"])
    if "qmpd" not in daemons:
        out.append("no qmpd figures, so no ratios or goals")
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = QmpParams()
    parser.add_argument("--rounds", type=int, default=d.rounds)
    parser.add_argument("--latency-count", type=int, default=d.latency_count)
    parser.add_argument("--pipeline-count", type=int, default=d.pipeline_count)
    parser.add_argument("--sessions", type=int, default=d.sessions)
    parser.add_argument(
        "--duration",
        type=float,
        default=d.duration,
        help="seconds per concurrent-sessions measurement",
    )
    add_common_arguments(parser, DAEMONS, RESULTS)


def main(args: argparse.Namespace) -> int:
    names = selected_daemons(args, DAEMONS)
    if names is None:
        return 2
    params = QmpParams(
        rounds=args.rounds,
        latency_count=args.latency_count,
        pipeline_count=args.pipeline_count,
        sessions=args.sessions,
        duration=args.duration,
    )

    report = run(params, names, log=progress_log(args))
    publish(args, report, render(report))
    return 0 if report["daemons"] else 1
