"""Benchmarks that compare qmpd with QEMU's qemu-storage-daemon in one run.

``scripts/bench SUBCOMMAND`` runs one of them (see ``bench/__main__.py``);
each module measures one concern (``qmp``: the monitor protocol itself).
Daemons are started through ``tests/support/daemons.py`` so the benchmark,
the differential tests and the end-to-end tests launch them the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__: list[str] = []

# tests/support is not an installed package: make the repository root
# importable so ``python -m bench`` works from any directory.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
