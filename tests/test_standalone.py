"""The test suite on a clone of the repository alone, without ``../shared``
and without the reference QEMUs: what needs a QEMU skips, saying which.

A copy of the working tree is made in a directory with no ``shared``
sibling and a few of the test files that use QEMU are run there, once on a
machine without the QEMU >= 10.1 reference (Debian's 7.2 still on PATH),
once without any QEMU (PATH filtered).  They must pass with skips, not
error at set-up or fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import qemu_tools
from tests.support.daemons import REPO, qsd_new_kind, why_missing

pytestmark = pytest.mark.slow

#: Not part of a clone (or not needed by the tests run in the copy).
_NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis", "bench-results"
)

#: Test files that use QEMU 11.1, 7.2 or both, and are quick when they skip.
_WITHOUT_NEW = ["tests/devices/test_differential.py", "tests/differential/test_introspection.py"]
_WITHOUT_ANY = [
    *_WITHOUT_NEW,
    "tests/devices/test_qemu_io.py",
    "tests/qapi/test_validate.py",
    "tests/create/test_differential.py",
]


def _path_without_qemu(bin_dir: Path) -> str:
    """A PATH like the current one in which no ``qemu-*`` program exists:
    ``bin_dir`` gets a link to every other program of the PATH."""
    bin_dir.mkdir()
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(entry):
            continue
        for name in os.listdir(entry):
            link = bin_dir / name
            if name.startswith("qemu") or link.exists() or link.is_symlink():
                continue
            target = os.path.join(entry, name)
            if os.path.isfile(target) and os.access(target, os.X_OK):
                link.symlink_to(target)
    return str(bin_dir)


@pytest.mark.parametrize("without", ["qemu-new", "any-qemu"])
def test_clone_without_shared_skips_what_needs_qemu(tmp_path: Path, without: str) -> None:
    clone = tmp_path / "alone" / "qmpd"
    shutil.copytree(REPO, clone, ignore=_NOT_COPIED, symlinks=True)
    env = dict(os.environ)
    env.pop("QMPD_QEMU_NEW", None)
    # No reference of the project's own either: an empty chroot root.
    env["QMPD_QEMU_REF_ROOT"] = str(tmp_path / "no-reference")
    env["PYTHONPATH"] = str(clone)
    files = _WITHOUT_NEW
    if without == "any-qemu":
        env["PATH"] = _path_without_qemu(tmp_path / "bin")
        files = _WITHOUT_ANY
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *files],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\d+ skipped", summary), summary
    assert not re.search(r"failed|error", summary), summary
    assert "QEMU >= 10.1 reference" in done.stdout, done.stdout[-4000:]
    if without == "any-qemu":
        assert "not on PATH" in done.stdout, done.stdout[-4000:]


#: Ways of reaching a QEMU binary that bypass tests/support/qemu_tools.py.
_BYPASSES = re.compile(
    r"""which\(\s*["']qemu"""  # PATH lookups: system_tool() says why it is absent
    r"""|/opt/qemu-new|/work/shared"""  # one machine's layout
    r"""|["']shared["']\s*/"""  # REPO.parent / "shared" / ...
    r"""|\[\s*["']qemu-(?:img|io|nbd|storage-daemon)["']"""  # argv of a bare name
)


def test_qemu_binaries_are_found_only_through_qemu_tools() -> None:
    """A test that looks for QEMU by itself crashes or runs the wrong QEMU
    on a clone without ../shared; tests/support/qemu_tools.py is the one
    place that knows (and says why a binary is missing)."""
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for folder in ("tests", "bench")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path.name not in ("qemu_tools.py", "test_standalone.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _BYPASSES.search(line)
    ]
    assert not found, "use tests.support.qemu_tools instead:\n" + "\n".join(found)


def _fake_qsd(folder: Path, script: str) -> Path:
    folder.mkdir()
    qsd = folder / "qsd"
    qsd.write_text("#!/bin/sh\n" + script)
    qsd.chmod(0o755)
    return qsd


def test_reference_that_cannot_run_is_skipped_with_its_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed but unable to run (a container refusing the chroot's
    mounts): absent, with QEMU's last words as the reason, not a crash at
    the first test's set-up."""
    failing = "echo 'unshare: Operation not permitted' >&2\nexit 1\n"
    qsd = _fake_qsd(tmp_path / "broken", failing)
    monkeypatch.setenv("QMPD_QEMU_NEW", str(qsd.parent))
    assert qemu_tools.new_tool("qsd") is None
    assert qsd_new_kind() is None
    reason = why_missing("qsd-new")
    assert "does not run" in reason, reason
    assert "Operation not permitted" in reason, reason


def test_reference_chosen_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    qsd = _fake_qsd(tmp_path / "mine", "exit 0\n")
    monkeypatch.setenv("QMPD_QEMU_NEW", str(qsd.parent))
    assert qemu_tools.new_tool("qsd") == str(qsd)
    assert qemu_tools.new_tool("qemu-img") is None  # no such wrapper there
    monkeypatch.setenv("QMPD_QEMU_NEW", "none")
    assert qemu_tools.new_tool("qsd") is None
    assert "QMPD_QEMU_NEW=none" in why_missing("qsd-new")
