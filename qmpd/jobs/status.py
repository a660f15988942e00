"""The job state machine as data: statuses, verbs and QEMU's two tables.

QEMU's job engine (job.c) is driven by two boolean tables.  The transition
table says which status may follow which; a move it forbids is a bug in the
engine (QEMU asserts), never a client error.  The verb table says which
client commands a job accepts in each status; a refused verb is a QMP
``GenericError`` naming the job, the status and the verb in QAPI spelling.

Both tables are copied here as sets per row, in the order of QEMU's enums
(``JobStatus`` order matters to nobody on the wire, but keeps the tables easy
to compare with QEMU's).  ``tests/jobs/test_tables.py`` checks every cell
against a literal copy of QEMU's matrices.
"""

from __future__ import annotations

import enum
import re

from ..errors import GenericError


class JobStatus(enum.Enum):
    """``JobStatus``: where a job is in its life (values are the QAPI names)."""

    UNDEFINED = "undefined"
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    READY = "ready"
    STANDBY = "standby"
    WAITING = "waiting"
    PENDING = "pending"
    ABORTING = "aborting"
    CONCLUDED = "concluded"
    NULL = "null"


class JobVerb(enum.Enum):
    """``JobVerb``: what a client may ask of a job."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    SET_SPEED = "set-speed"
    COMPLETE = "complete"
    DISMISS = "dismiss"
    FINALIZE = "finalize"
    CHANGE = "change"


class JobType(enum.Enum):
    """``JobType``: the kind of work (QEMU 11.1's list, in its order)."""

    COMMIT = "commit"
    STREAM = "stream"
    MIRROR = "mirror"
    BACKUP = "backup"
    CREATE = "create"
    AMEND = "amend"
    SNAPSHOT_LOAD = "snapshot-load"
    SNAPSHOT_SAVE = "snapshot-save"
    SNAPSHOT_DELETE = "snapshot-delete"


S = JobStatus

#: QEMU's ``JobSTT``: the statuses each status may move to.  ``aborting``
#: may "move" to itself (the failure path re-checks it), which emits nothing.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.UNDEFINED: frozenset({S.CREATED}),
    S.CREATED: frozenset({S.RUNNING, S.ABORTING, S.NULL}),
    S.RUNNING: frozenset({S.PAUSED, S.READY, S.WAITING, S.ABORTING}),
    S.PAUSED: frozenset({S.RUNNING}),
    S.READY: frozenset({S.STANDBY, S.WAITING, S.ABORTING}),
    S.STANDBY: frozenset({S.READY}),
    S.WAITING: frozenset({S.PENDING, S.ABORTING}),
    S.PENDING: frozenset({S.ABORTING, S.CONCLUDED}),
    S.ABORTING: frozenset({S.ABORTING, S.CONCLUDED}),
    S.CONCLUDED: frozenset({S.NULL}),
    S.NULL: frozenset(),
}

_ACTIVE = frozenset({S.CREATED, S.RUNNING, S.PAUSED, S.READY, S.STANDBY})

#: QEMU's ``JobVerbTable`` (10.2/11.1: ``complete`` is also accepted in
#: standby and takes effect once the job is resumed; ``change`` is 8.2+).
VERBS: dict[JobVerb, frozenset[JobStatus]] = {
    JobVerb.CANCEL: _ACTIVE | {S.WAITING, S.PENDING},
    JobVerb.PAUSE: _ACTIVE,
    JobVerb.RESUME: _ACTIVE,
    JobVerb.SET_SPEED: _ACTIVE,
    JobVerb.COMPLETE: frozenset({S.READY, S.STANDBY}),
    JobVerb.DISMISS: frozenset({S.CONCLUDED}),
    JobVerb.FINALIZE: frozenset({S.PENDING}),
    JobVerb.CHANGE: _ACTIVE,
}

#: Statuses in which the job's work is over (QEMU's ``job_is_completed``).
COMPLETED_STATUSES = frozenset({S.WAITING, S.PENDING, S.ABORTING, S.CONCLUDED, S.NULL})
#: Statuses in which the job reports ``ready`` (``job_is_ready``).
READY_STATUSES = frozenset({S.READY, S.STANDBY})


class IllegalTransition(RuntimeError):
    """The engine tried a move QEMU's table forbids: a bug in qmpd, not the client's fault."""

    def __init__(self, job_id: str | None, old: JobStatus, new: JobStatus) -> None:
        super().__init__(f"job {job_id!r}: illegal transition {old.value} -> {new.value}")
        self.old = old
        self.new = new


def transition_allowed(old: JobStatus, new: JobStatus) -> bool:
    return new in TRANSITIONS[old]


def verb_allowed(verb: JobVerb, status: JobStatus) -> bool:
    return status in VERBS[verb]


def check_verb(job_id: str | None, status: JobStatus, verb: JobVerb) -> None:
    """Raise QEMU's GenericError unless a job in ``status`` accepts ``verb``."""
    if not verb_allowed(verb, status):
        raise GenericError(
            f"Job '{job_id}' in state '{status.value}' cannot accept command verb '{verb.value}'"
        )


# QEMU's id_wellformed(): an ASCII letter, then ASCII letters, digits, '-', '.', '_'.
_WELLFORMED_ID = re.compile(r"[A-Za-z][A-Za-z0-9._-]*\Z")


def id_wellformed(job_id: str) -> bool:
    """Whether ``job_id`` is a valid QEMU identifier (the rule node names also follow)."""
    return _WELLFORMED_ID.match(job_id) is not None


__all__ = [
    "COMPLETED_STATUSES",
    "READY_STATUSES",
    "TRANSITIONS",
    "VERBS",
    "IllegalTransition",
    "JobStatus",
    "JobType",
    "JobVerb",
    "check_verb",
    "id_wellformed",
    "transition_allowed",
    "verb_allowed",
]
