"""Command-line options every benchmark shares: which daemons, where the
raw results go, and whether to print progress."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support.daemons import DaemonKind, qmpd_kind, qsd72_kind, qsd_new_kind, why_missing

Log = Callable[[str], None] | None


def add_common_arguments(
    parser: argparse.ArgumentParser, daemons: Sequence[str], results: Path
) -> None:
    parser.add_argument(
        "--daemons",
        default=",".join(daemons),
        help=f"comma-separated subset of {','.join(daemons)}",
    )
    parser.add_argument("--json", type=Path, default=results, help="where the raw results go")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def selected_daemons(args: argparse.Namespace, daemons: Sequence[str]) -> list[str] | None:
    """The daemons asked for, or None (after saying why) when one is unknown."""
    names = [n for n in args.daemons.split(",") if n]
    unknown = set(names) - set(daemons)
    if unknown:
        print(f"unknown daemon(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return None
    return names


def progress_log(args: argparse.Namespace) -> Log:
    """Progress lines on stderr, unless --quiet."""
    if args.quiet:
        return None

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    return log


def publish(args: argparse.Namespace, report: dict[str, Any], text: str) -> None:
    """Write the raw results where --json says and print the table."""
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(text)
    print(f"raw results: {args.json}")


#: Every daemon a benchmark can compare, by the names --daemons takes.
DAEMONS = ("qmpd", "qsd-7.2", "qsd-new")


def find_kinds(names: Sequence[str]) -> tuple[list[DaemonKind], dict[str, str]]:
    """The daemons named that are present, and why each missing one is."""
    finders = {"qmpd": qmpd_kind, "qsd-7.2": qsd72_kind, "qsd-new": qsd_new_kind}
    kinds: list[DaemonKind] = []
    skipped: dict[str, str] = {}
    for name in names:
        kind = finders[name]()
        if kind is None:
            skipped[name] = why_missing(name)
        else:
            kinds.append(kind)
    return kinds, skipped


__all__ = [
    "DAEMONS",
    "Log",
    "add_common_arguments",
    "find_kinds",
    "progress_log",
    "publish",
    "selected_daemons",
]
