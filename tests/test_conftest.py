"""The suite's own pytest hooks (tests/conftest.py as a plugin) on a small test file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.daemons import REPO


def test_skip_in_a_trio_test_keeps_its_reason(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "async def test_skips():\n"
        "    pytest.skip('qemu-img not on PATH')\n\n"
        "@pytest.fixture\n"
        "async def needs_it():\n"
        "    pytest.skip('qemu-io not on PATH')\n\n"
        "async def test_skips_in_fixture(needs_it):\n"
        "    pass\n\n"
        "async def test_xfails():\n"
        "    pytest.xfail('known difference')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-rsx"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test_x.py:4: qemu-img not on PATH" in done.stdout, done.stdout
    assert "qemu-io not on PATH" in done.stdout, done.stdout
    assert "known difference" in done.stdout, done.stdout
