"""Fixtures: the job manager running and a transcript client."""

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
    """``app.jobs`` served in the test's nursery; fails the test if a job task crashed."""
    await nursery.start(app.jobs.serve)
    yield app.jobs
    assert app.jobs.failures == []


@pytest.fixture
async def client(qmp: QMPPair, jobs: JobManager) -> Transcript:
    return Transcript(qmp)
