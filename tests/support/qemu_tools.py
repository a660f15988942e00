"""Where the real QEMU binaries are: the one place tests and benchmarks ask.

Two QEMUs serve as references, and either may be missing on a given
machine; every caller gets ``None`` (and :func:`why_missing` says why) so
that it can skip, never crash:

- Debian's QEMU 7.2, found on ``PATH`` (``qemu-img``, ``qemu-io``,
  ``qemu-nbd``, ``qemu-storage-daemon``); a ``PATH`` without them is a
  machine without them.
- A QEMU >= 10.1 (11.1 today), the one qmpd follows, run out of a Debian
  testing chroot by small wrappers named ``qsd``, ``qemu-img``,
  ``qemu-io``, ``qemu-nbd``, ``qemu-system``, ``nbdinfo``, ``nbdcopy``.
  ``QMPD_QEMU_NEW`` chooses: ``none`` hides it; a directory holding such
  wrappers uses those.  Unset, the first set-up one of these wins:
  ``../shared/tools/qemu-new`` beside the repository (its chroot in
  ``$QEMU_NEW_ROOT``, default ``/opt/qemu-new``), then the repository's
  own ``scripts/qemu-reference`` (its chroot in ``$QMPD_QEMU_REF_ROOT``,
  default ``/opt/qmpd-qemu-ref``, made by ``scripts/install-qemu-reference``).
  The wrappers chroot, so they need root; files they open must lie under
  ``/tmp`` (or ``/var/tmp``, ``/root``, ``/home``, the current directory).

The answers are computed on each call (cheap ``stat``s), so a test that
changes the environment sees the change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "NEW_TOOLS",
    "SYSTEM_TOOLS",
    "NewQemu",
    "new_qemu",
    "new_tool",
    "system_tool",
    "system_tool_or_skip",
    "why_new_missing",
    "why_system_missing",
]

REPO = Path(__file__).resolve().parents[2]

#: Debian 7.2's tools, and the package that brings each.
SYSTEM_TOOLS = {
    "qemu-img": "qemu-utils",
    "qemu-io": "qemu-utils",
    "qemu-nbd": "qemu-utils",
    "qemu-storage-daemon": "qemu-system-common",
}

#: The newer QEMU's wrappers, and the binary each runs inside the chroot.
NEW_TOOLS = {
    "qsd": "/usr/bin/qemu-storage-daemon",
    "qemu-img": "/usr/bin/qemu-img",
    "qemu-io": "/usr/bin/qemu-io",
    "qemu-nbd": "/usr/bin/qemu-nbd",
    "qemu-system": "/usr/bin/qemu-system-x86_64",
    "nbdinfo": "/usr/bin/nbdinfo",
    "nbdcopy": "/usr/bin/nbdcopy",
}

INSTALL_HINT = "run scripts/install-qemu-reference as root"


@dataclass(frozen=True, slots=True)
class NewQemu:
    """A place the newer QEMU may be: its wrappers and the chroot they run
    (``root`` None when the wrappers are someone else's and trusted as is)."""

    wrappers: Path
    root: Path | None

    def tool(self, name: str) -> str | None:
        """The wrapper for ``name``, when it and its binary are there (and,
        for a chroot, when we are root: the wrappers chroot)."""
        wrapper = self.wrappers / name
        if not os.access(wrapper, os.X_OK):
            return None
        if self.root is not None and (
            os.geteuid() != 0 or not (self.root / NEW_TOOLS[name].lstrip("/")).is_file()
        ):
            return None
        return str(wrapper)


def _candidates() -> list[NewQemu]:
    chosen = os.environ.get("QMPD_QEMU_NEW", "")
    if chosen == "none":
        return []
    if chosen:
        return [NewQemu(Path(chosen), None)]
    return [
        NewQemu(
            REPO.parent / "shared" / "tools" / "qemu-new",
            Path(os.environ.get("QEMU_NEW_ROOT") or "/opt/qemu-new"),
        ),
        NewQemu(
            REPO / "scripts" / "qemu-reference",
            Path(os.environ.get("QMPD_QEMU_REF_ROOT") or "/opt/qmpd-qemu-ref"),
        ),
    ]


#: Places whose daemon was asked for its version: None when it answered,
#: else the reason it did not (asked once per process).
_TRIED: dict[NewQemu, str | None] = {}


def _fails_to_run(place: NewQemu, qsd: str) -> str | None:
    """Why ``place``'s daemon does not run (a container may refuse the
    chroot's mounts, say), or None when it does."""
    if place not in _TRIED:
        try:
            done = subprocess.run(
                [qsd, "--version"], capture_output=True, text=True, timeout=60, check=False
            )
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            _TRIED[place] = None if done.returncode == 0 else f"{qsd} --version: {last}"
        except (OSError, subprocess.TimeoutExpired) as e:
            _TRIED[place] = f"{qsd} --version: {e}"
    return _TRIED[place]


def _places() -> Iterator[tuple[NewQemu, str | None]]:
    """The set-up places of the newer QEMU in order, each with why it does
    not run (None when it does)."""
    for place in _candidates():
        qsd = place.tool("qsd")
        if qsd is not None:
            yield place, _fails_to_run(place, qsd)


def new_qemu() -> NewQemu | None:
    """The first set-up place of the newer QEMU whose daemon runs, or None."""
    return next((place for place, failure in _places() if failure is None), None)


def new_tool(name: str) -> str | None:
    """The wrapper running the newer QEMU's ``name`` (a key of
    :data:`NEW_TOOLS`), or None when it is not set up."""
    place = new_qemu()
    return place.tool(name) if place is not None else None


def system_tool(name: str) -> str | None:
    """Debian's ``name`` (a key of :data:`SYSTEM_TOOLS`) on PATH, or None."""
    return shutil.which(name)


def system_tool_or_skip(name: str) -> str:
    """:func:`system_tool`, or skip the calling test saying why it is absent:
    for helpers, so that a test using one skips without a mark of its own."""
    path = system_tool(name)
    if path is None:
        pytest.skip(why_system_missing(name))
    return path


def why_new_missing(name: str = "qsd") -> str:
    """Why :func:`new_tool` gives None for ``name``: a skip reason."""
    what = f"QEMU >= 10.1 reference ({name})"
    if os.environ.get("QMPD_QEMU_NEW") == "none":
        return f"{what} hidden by QMPD_QEMU_NEW=none"
    if os.geteuid() != 0 and not os.environ.get("QMPD_QEMU_NEW"):
        return f"{what} runs in a chroot and needs root"
    failures = [failure for _, failure in _places() if failure]
    if failures:
        return f"{what} is installed but does not run: {failures[0]}"
    return f"{what} not installed: {INSTALL_HINT}"


def why_system_missing(name: str) -> str:
    """Why :func:`system_tool` gives None for ``name``: a skip reason."""
    package = SYSTEM_TOOLS.get(name, "qemu-utils")
    return f"{name} not on PATH (Debian: apt-get install {package})"
