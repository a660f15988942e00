"""Small statistics and a plain-text table, shared by the benchmarks."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["median", "percentile", "ratio", "skipped_lines", "table"]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to fit; the first left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def ratio(a: float, b: float) -> str:
    """``a / b`` for a table cell: "=" when both are 0, "inf" when only b is."""
    return f"{a / b:.2f}" if b else ("=" if a == 0 else "inf")


def skipped_lines(skipped: dict[str, str]) -> list[str]:
    """One line per daemon a benchmark could not run, with the reason."""
    return [f"skipped {name}: {why}" for name, why in skipped.items()]
