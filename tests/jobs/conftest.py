"""Fixtures: the job manager served in the test's nursery, and event capture."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from qmpd.app import App
from qmpd.jobs import JobManager
from tests.jobs.transcript import Transcript
from tests.support.loopback import QMPPair


@pytest.fixture
async def jobs(app: App, nursery: trio.Nursery) -> AsyncIterator[JobManager]:
    """``app.jobs``, running: job tasks live in the test's nursery, not in a
    session, as in the daemon.  Fails the test if a job task crashed."""
    app.events.history = []
    await nursery.start(app.jobs.serve)
    yield app.jobs
    assert app.jobs.failures == []


@pytest.fixture
async def client(qmp: QMPPair, jobs: JobManager) -> Transcript:
    """A negotiated session that records replies and events in order."""
    return Transcript(qmp)
