"""Every case of the table, played on the subject and on each reference QEMU."""

from __future__ import annotations

import pytest

from tests.differential.cases import CASES
from tests.differential.conftest import Transcripts
from tests.differential.harness import Case, assert_same, differs, framing_problems
from tests.differential.kinds import find_kind
from tests.support.daemons import DaemonKind

pytestmark = pytest.mark.qemu


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(
    case: Case, subject: DaemonKind, reference: DaemonKind, transcripts: Transcripts
) -> None:
    if reference.name == "qsd-7.2" and case.qemu72:
        pytest.skip(f"QEMU 7.2 differs here ({case.qemu72}); qmpd follows 11.1")
    expected = transcripts.reference(reference, case)
    assert_same(transcripts.get(subject, case), expected)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_references_agree(case: Case, transcripts: Transcripts) -> None:
    """Keep the table honest: 7.2 and 11.1 differ exactly where it says so."""
    new, old = find_kind("qsd-new"), find_kind("qsd-7.2")
    new_t = transcripts.reference(new, case)
    old_t = transcripts.reference(old, case)
    for transcript in (new_t, old_t):
        for i, raw in enumerate(transcript.messages):
            # The framing checks are only worth trusting if QEMU passes them.
            assert not framing_problems(raw), f"{transcript.kind} message {i}: {raw!r}"
    if case.qemu72:
        assert differs(new_t, old_t), "7.2 now answers like 11.1: drop the case's qemu72 mark"
    else:
        assert_same(old_t, new_t)
