"""Fixtures: an App with strict schema checks, served on a memory listener,
and its job manager running in the test's nursery."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator

import pytest
import trio

from qmpd.app import App, build_app
from qmpd.jobs import JobManager
from qmpd.server import MonitorOptions, serve_listener
from tests.support.loopback import MemoryListener, QMPPair
from tests.support.transcript import Transcript


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Keep the reason of a skip or xfail raised in a trio test.

    pytest-trio turns the one ``Skipped`` (``XFailed``) that leaves its
    nursery into a new one without the message, so "needs qemu-img" would
    read "Skipped".  The original is the only leaf of the group the new one
    was raised while handling: raise that instead.
    """
    try:
        return (yield)
    except (pytest.skip.Exception, pytest.xfail.Exception) as outcome:
        original = outcome.__context__
        while isinstance(original, BaseExceptionGroup) and len(original.exceptions) == 1:
            original = original.exceptions[0]
        if not outcome.msg and type(original) is type(outcome):
            raise original from None
        raise


@pytest.fixture
def app() -> App:
    return build_app(strict=True)


Connect = Callable[..., Awaitable[QMPPair]]


@pytest.fixture
async def connect(app: App, nursery: trio.Nursery) -> AsyncIterator[Connect]:
    """``await connect(negotiate=True, pretty=False, lockstep=False)`` opens a session."""
    listeners: dict[bool, MemoryListener] = {}

    async def _connect(
        *, negotiate: bool = True, pretty: bool = False, lockstep: bool = False
    ) -> QMPPair:
        if pretty not in listeners:
            listeners[pretty] = MemoryListener()
            await nursery.start(
                serve_listener, app, listeners[pretty], MonitorOptions(pretty=pretty)
            )
        pair = QMPPair(await listeners[pretty].connect(lockstep=lockstep))
        if negotiate:
            await pair.negotiate()
        return pair

    return _connect


@pytest.fixture
async def qmp(connect: Connect) -> QMPPair:
    """One negotiated session."""
    return await connect()


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
