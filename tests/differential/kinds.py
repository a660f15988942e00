"""Which daemons take part: the subject under test and the reference QEMUs.

The *subject* is qmpd unless ``QMPD_DIFF_SUBJECT`` names another kind
(``qsd-7.2`` or ``qsd-new``: useful to check the harness against QEMU
itself).  The *references* are the real qemu-storage-daemons; QEMU 11.1
(``qsd-new``) is the one qmpd follows where 7.2 differs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable

import pytest

from tests.support.daemons import DaemonKind, qmpd_kind, qsd72_kind, qsd_new_kind, why_missing

__all__ = ["REFERENCES", "SUBJECT", "find_kind"]

REFERENCES = ("qsd-new", "qsd-7.2")
SUBJECT = os.environ.get("QMPD_DIFF_SUBJECT", "qmpd")

_FINDERS: dict[str, Callable[[], DaemonKind | None]] = {
    "qmpd": lambda: qmpd_kind() if importlib.util.find_spec("qmpd.__main__") else None,
    "qsd-7.2": qsd72_kind,
    "qsd-new": qsd_new_kind,
}


def find_kind(name: str) -> DaemonKind:
    """The daemon called ``name``; skips the calling test, saying why, when absent."""
    kind = _FINDERS[name]()
    if kind is None:
        if name == "qmpd":
            pytest.skip("qmpd is not runnable yet (no qmpd/__main__.py)")
        pytest.skip(why_missing(name))
    return kind
