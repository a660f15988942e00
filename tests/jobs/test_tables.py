"""QEMU's two job tables, checked cell by cell against literal copies.

The matrices below are transcribed from QEMU 11.1's job.c (``JobSTT`` and
``JobVerbTable``), columns in ``JobStatus`` order: U C R P Y S W D X E N.
"""

from __future__ import annotations

import pytest

from qmpd.errors import GenericError
from qmpd.jobs import (
    TRANSITIONS,
    VERBS,
    IllegalTransition,
    JobStatus,
    JobType,
    JobVerb,
    check_verb,
    id_wellformed,
    transition_allowed,
    verb_allowed,
)
from qmpd.jobs.job import Job

ORDER = list(JobStatus)

QEMU_STT = {
    "undefined": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "created": [0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1],
    "running": [0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0],
    "paused": [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
    "ready": [0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0],
    "standby": [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
    "waiting": [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0],
    "pending": [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0],
    "aborting": [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0],
    "concluded": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    "null": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
}

QEMU_VERBS = {
    "cancel": [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "pause": [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "resume": [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "set-speed": [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "complete": [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0],
    "finalize": [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
    "dismiss": [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
    "change": [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
}


def test_enum_spellings_and_order() -> None:
    assert [s.value for s in JobStatus] == list(QEMU_STT)
    assert {v.value for v in JobVerb} == set(QEMU_VERBS)
    assert [t.value for t in JobType] == [
        "commit", "stream", "mirror", "backup", "create", "amend",
        "snapshot-load", "snapshot-save", "snapshot-delete",
    ]  # fmt: skip
    assert set(TRANSITIONS) == set(JobStatus)
    assert set(VERBS) == set(JobVerb)


@pytest.mark.parametrize("old", ORDER, ids=lambda s: s.value)
@pytest.mark.parametrize("new", ORDER, ids=lambda s: s.value)
def test_transition_cell(old: JobStatus, new: JobStatus) -> None:
    expected = bool(QEMU_STT[old.value][ORDER.index(new)])
    assert transition_allowed(old, new) is expected


@pytest.mark.parametrize("old", ORDER, ids=lambda s: s.value)
@pytest.mark.parametrize("new", ORDER, ids=lambda s: s.value)
def test_transition_enforced_by_the_one_mutator(old: JobStatus, new: JobStatus) -> None:
    class Bare(Job):
        job_type = JobType.CREATE

    job = Bare("j")
    job.status = old
    if QEMU_STT[old.value][ORDER.index(new)]:
        job._transition(new)
        assert job.status is new
    else:
        with pytest.raises(IllegalTransition):
            job._transition(new)
        assert job.status is old


@pytest.mark.parametrize("status", ORDER, ids=lambda s: s.value)
@pytest.mark.parametrize("verb", list(JobVerb), ids=lambda v: v.value)
def test_verb_cell(verb: JobVerb, status: JobStatus) -> None:
    expected = bool(QEMU_VERBS[verb.value][ORDER.index(status)])
    assert verb_allowed(verb, status) is expected
    if expected:
        check_verb("m1", status, verb)
    else:
        with pytest.raises(GenericError) as info:
            check_verb("m1", status, verb)
        assert info.value.desc == (
            f"Job 'm1' in state '{status.value}' cannot accept command verb '{verb.value}'"
        )


def test_refusal_text_uses_qapi_spelling() -> None:
    with pytest.raises(
        GenericError, match=r"^Job 'm1' in state 'ready' cannot accept command verb 'finalize'$"
    ):
        check_verb("m1", JobStatus.READY, JobVerb.FINALIZE)
    with pytest.raises(GenericError, match=r"verb 'set-speed'$"):
        check_verb("m1", JobStatus.PENDING, JobVerb.SET_SPEED)


@pytest.mark.parametrize(
    ("job_id", "ok"),
    [
        ("m1", True),
        ("a", True),
        ("job-1.x_y", True),
        ("", False),
        ("1m", False),
        ("-m", False),
        ("m 1", False),
        ("m/1", False),
        ("é", False),
        ("mé", False),
    ],
)
def test_id_wellformed(job_id: str, ok: bool) -> None:
    assert id_wellformed(job_id) is ok
