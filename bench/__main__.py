"""``python -m bench [SUBCOMMAND] [OPTIONS]``; ``scripts/bench`` runs this.

Each subcommand is one module with ``add_arguments(parser)`` and
``main(args) -> exit status``; a new benchmark (``mirror``, ``block``...)
is one more entry in ``SUBCOMMANDS``.  With no subcommand, ``qmp`` runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from bench import block, mirror, qcow2, qmp

__all__ = ["SUBCOMMANDS", "main"]

SUBCOMMANDS: dict[str, tuple[ModuleType, str]] = {
    "qmp": (qmp, "QMP round trips, pipelining and concurrent sessions (default)"),
    "block": (block, "10,000 null-co nodes added and listed; 1 MiB writes via qemu-io"),
    "mirror": (mirror, "zero-aware blockdev-mirror of a sparse 4 GiB image, three targets"),
    "qcow2": (qcow2, "1 TiB qcow2 create, its known-zero answer, mirror into a fresh qcow2"),
}
DEFAULT = "qmp"


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] not in {*SUBCOMMANDS, "-h", "--help"}:
        args_in.insert(0, DEFAULT)
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Compare qmpd with qemu-storage-daemon. With no subcommand, qmp runs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        entry: Callable[[argparse.Namespace], int] = module.main
        p.set_defaults(entry=entry)
    args = parser.parse_args(args_in)
    status: int = args.entry(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
