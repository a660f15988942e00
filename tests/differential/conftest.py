"""Fixtures for the differential tests: which daemons exist, and a pool of them.

The subject (qmpd) is compared with each reference QEMU present (see
kinds.py); QEMU 7.2 is skipped on cases the table marks as 7.2-only.

Daemons are started once per session and shared: a socket chardev serves
one client at a time and forgets everything (negotiation, parser state)
when the client leaves, so consecutive tests cannot see each other.  A
daemon that died is restarted for the next test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.differential.harness import Case, Transcript, run_case, shape_problems
from tests.differential.kinds import REFERENCES, SUBJECT, find_kind
from tests.support.daemons import Daemon, DaemonKind, running


class DaemonPool:
    """Daemons shared by the whole session, started on first use."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._daemons: dict[tuple[str, bool], Daemon] = {}

    def get(self, kind: DaemonKind, *, pretty: bool = False, fresh: bool = False) -> Daemon:
        """The shared daemon of this kind; a new one if it died or ``fresh`` is asked."""
        key = (kind.name, pretty)
        daemon = self._daemons.get(key)
        if daemon is not None and (fresh or daemon.proc.poll() is not None):
            # A daemon that crashed may still be exiting: make sure it is gone.
            daemon.proc.kill()
            daemon.proc.wait()
            daemon = None
        if daemon is None:
            daemon = self._stack.enter_context(running(kind, pretty=pretty))
            self._daemons[key] = daemon
        return daemon

    def close(self) -> None:
        self._stack.close()


class Transcripts:
    """Each (daemon, mode, case) is played once per session and remembered."""

    def __init__(self, pool: DaemonPool) -> None:
        self._pool = pool
        self._memo: dict[tuple[str, bool, str], Transcript] = {}

    def get(self, kind: DaemonKind, case: Case, *, pretty: bool = False) -> Transcript:
        key = (kind.name, pretty, case.name)
        if key not in self._memo:
            daemon = self._pool.get(kind, pretty=pretty)
            try:
                self._memo[key] = run_case(daemon.sockets[0], case, kind.name)
            except OSError:
                # Cannot connect: an earlier case crashed the daemon (that
                # case has failed already); this one deserves a live daemon.
                daemon = self._pool.get(kind, pretty=pretty, fresh=True)
                self._memo[key] = run_case(daemon.sockets[0], case, kind.name)
        return self._memo[key]

    def reference(self, kind: DaemonKind, case: Case, *, pretty: bool = False) -> Transcript:
        """A reference transcript, checked against the table first.

        A reference that does not send what the table promises means the
        table is wrong (or QEMU changed), not qmpd: say so.
        """
        got = self.get(kind, case, pretty=pretty)
        if kind.name == "qsd-new" or not case.qemu72:
            problems = shape_problems(case, got)
            if problems:
                pytest.fail(f"case table out of date for {kind.name}: {'; '.join(problems)}")
        return got


@pytest.fixture(scope="session")
def pool() -> Iterator[DaemonPool]:
    daemons = DaemonPool()
    try:
        yield daemons
    finally:
        daemons.close()


@pytest.fixture(scope="session")
def transcripts(pool: DaemonPool) -> Transcripts:
    return Transcripts(pool)


@pytest.fixture
def subject() -> DaemonKind:
    return find_kind(SUBJECT)


@pytest.fixture(params=REFERENCES)
def reference(request: pytest.FixtureRequest) -> DaemonKind:
    name: str = request.param
    if name == SUBJECT:
        pytest.skip(f"{name} is the subject")
    return find_kind(name)
