"""Golden tests: each ``bad/*.json`` must fail to load with the error in ``*.err``.

The ``.err`` file holds ``file:line: message``.  To add a case, write the
schema, run the loader on it, check the message by hand, and save it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpd.errors import SchemaError
from qmpd.qapi import load_schema

BAD = Path(__file__).parent / "bad"
CASES = sorted(BAD.glob("*.json"))


def test_enough_cases() -> None:
    assert len(CASES) >= 20
    assert all(case.with_suffix(".err").exists() for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_schema(case: Path) -> None:
    expected = case.with_suffix(".err").read_text(encoding="utf-8").strip()
    with pytest.raises(SchemaError) as excinfo:
        load_schema(case)
    assert str(excinfo.value) == expected
    # The error names the file and line on its own attributes too.
    assert excinfo.value.filename == case.name
    assert excinfo.value.line is not None
