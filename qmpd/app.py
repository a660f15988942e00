"""The daemon's shared state, handed to every command handler.

:class:`App` ties together what outlives a connection: the checked schema,
the handler table, the event bus, the block graph, the devices, the jobs
and the shutdown signal.  :class:`CommandContext` is what a handler sees of
the connection that sent the command.

Stopping (``quit``, SIGTERM, SIGINT) is two steps.  :meth:`App.stop` winds
the block layer down as QEMU does before it exits: jobs are drained and
cancelled, then every node is flushed and closed, parents first, so that
a qcow2 image gets its pending metadata and loses its dirty bit.  From its
start no command runs any more (:attr:`App.stopping`; QEMU's main loop has
stopped).  Then :attr:`App.shutdown` tells the daemon to end the process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from . import QEMU_VERSION, __version__
from .block.backend import DeviceSet
from .block.graph import BlockGraph
from .commands import ALL_TABLES
from .commands.table import CommandTable, HandlerEntry, check_against_schema, merge
from .events import EventBus
from .jobs.manager import JobManager
from .protocol.session import Session
from .qapi import Schema, load_schema

log = logging.getLogger("qmpd")


def version_info() -> dict[str, Any]:
    """``VersionInfo``: the QEMU release whose API we implement, and our package."""
    major, minor, micro = QEMU_VERSION
    return {
        "qemu": {"major": major, "minor": minor, "micro": micro},
        "package": f"qmpd {__version__}",
    }


@dataclass(eq=False)
class App:
    """Everything that outlives one connection."""

    schema: Schema
    handlers: Mapping[str, HandlerEntry]
    events: EventBus
    #: Check every return value and event against the schema (tests turn it on).
    strict: bool = False
    version: dict[str, Any] = field(default_factory=version_info)
    #: Set by ``quit`` (after its reply is out) and by signals, once
    #: :meth:`stop` is done: the process may end.
    shutdown: trio.Event = field(default_factory=trio.Event)
    #: :meth:`stop` has begun: no command may start any more.
    stopping: bool = False
    #: :meth:`stop` has finished.
    stopped: trio.Event = field(default_factory=trio.Event)
    #: In-band commands run one at a time across all sessions, as QEMU's
    #: dispatcher runs them; only coroutine handlers can interleave, so only
    #: they need to take it (see qmpd.dispatch).
    lock: trio.StrictFIFOLock = field(default_factory=trio.StrictFIFOLock)
    #: The block nodes (qmpd.block).
    graph: BlockGraph = field(default_factory=BlockGraph)
    #: The guest's devices and their BlockBackends (qmpd.block.backend).
    devices: DeviceSet = field(default_factory=DeviceSet)
    #: The jobs (qmpd.jobs); they emit on ``events``, so made after it.
    jobs: JobManager = field(init=False)

    def __post_init__(self) -> None:
        self.jobs = JobManager(self.events)

    def new_session(self, *, pretty: bool = False) -> Session:
        return Session(self.version, pretty=pretty)

    async def stop(self) -> None:
        """Wind the block layer down before the process exits (see the
        module docstring); the caller holds :attr:`lock`.  Shielded: a
        ``quit`` whose client hangs up meanwhile still stops everything.
        A second call waits for the first.  Raises nothing."""
        if self.stopping:
            await self.stopped.wait()
            return
        self.stopping = True
        with trio.CancelScope(shield=True):
            try:
                await self.jobs.cancel_all()
                await self.graph.aclose_all()
            except Exception:
                # A bug: the process must still end.
                log.exception("stopping the block layer failed")
            finally:
                self.stopped.set()


@dataclass(eq=False, slots=True)
class CommandContext:
    """What a handler knows of the connection its command came from."""

    app: App
    session: Session
    #: Work the current command started, run as soon as its reply is queued
    #: for the client (so the reply comes before any event the work emits).
    #: It never waits for the client to read, and it runs even if the
    #: client has gone: QEMU starts a job whatever becomes of its client.
    after_reply_queued: list[Callable[[], None]] = field(default_factory=list)
    #: Callbacks to run once the reply to the current command has been
    #: written to the client, or can no longer be (the client has gone).
    after_reply: list[Callable[[], None]] = field(default_factory=list)


def build_app(
    schema_path: Path | None = None,
    *,
    strict: bool = False,
    tables: Iterable[CommandTable] = ALL_TABLES,
) -> App:
    """Load and check the schema, bind handlers to it, and return the App.

    Raises SchemaError for a bad schema and StartupError when the schema and
    the handlers disagree about which commands exist.
    """
    schema = load_schema(schema_path)
    handlers = merge(tables)
    check_against_schema(handlers, schema.commands)
    check = schema.check_event_data if strict else None
    return App(schema=schema, handlers=handlers, events=EventBus(check=check), strict=strict)


__all__ = ["App", "CommandContext", "build_app", "version_info"]
