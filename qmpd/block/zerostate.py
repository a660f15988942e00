"""What a node knows, cheaply, about reading as zero.

Two different facts, kept apart as QEMU's developers learnt to keep them
apart (the 2020 "known zeroes" RFC named them BDRV_ZERO_CREATE and
BDRV_ZERO_OPEN; QEMU kept only the first, as ``bdrv_has_zero_init``, and
answered the second in 10.1 with the ``bdrv_co_is_all_zeroes`` heuristic):

* ``create``: an image *freshly created* by this driver reads as zero.  A
  property of the driver and its options, not of the current content.
* ``open``: the node reads as all zero *right now*, established without
  reading the whole node.

Each comes with ``how`` it was known, so a client (and a reviewer) can tell
a guarantee from a guess:

``driver``  a property of the driver (a host file starts empty)
``flag``    the node's own options say so (null with read-zeroes)
``hole-probe``  block status (SEEK_DATA/SEEK_HOLE) found no data at all
``scan``    block status left at most :data:`SCAN_LIMIT` bytes of data,
            which were read and found zero (QEMU's 128 KiB head check)
``record``  qmpd created and zero-filled this file itself and nobody
            changed it since (see :mod:`.zerofill`)
``none``    nothing is known (value is then False)

A format node with one child (raw) passes its child's facts on unchanged.

``value=False`` never means "contains data", only "not known to be zero".
"""

from __future__ import annotations

from dataclasses import dataclass

#: Largest amount of data extents a cheap check may read (QEMU's
#: MAX_ZERO_CHECK_BUFFER in bdrv_co_is_all_zeroes is 128 KiB).
SCAN_LIMIT = 128 * 1024

HOW_VALUES = ("driver", "flag", "hole-probe", "scan", "record", "none")


@dataclass(frozen=True, slots=True)
class KnownZero:
    """One fact: ``value`` and how it was established (one of HOW_VALUES)."""

    value: bool
    how: str

    def to_qmp(self) -> dict[str, object]:
        return {"value": self.value, "how": self.how}


UNKNOWN = KnownZero(False, "none")


@dataclass(frozen=True, slots=True)
class ZeroState:
    """Both facts for one node."""

    create: KnownZero
    open: KnownZero


@dataclass(frozen=True, slots=True)
class MakeZeroResult:
    """What :meth:`BlockNode.make_zero` did.

    ``already_zero``: the node was known zero, nothing was done.
    ``requests``/``bytes``: zero-write requests issued and the bytes they
    covered (ranges already known zero are skipped).  ``methods``: how the
    driver at the bottom zeroed them (``punch-hole``, ``zero-range``,
    ``written``, ``none`` for drivers that store nothing).
    """

    already_zero: bool
    requests: int = 0
    bytes: int = 0
    methods: tuple[str, ...] = ()


__all__ = ["HOW_VALUES", "SCAN_LIMIT", "UNKNOWN", "KnownZero", "MakeZeroResult", "ZeroState"]
