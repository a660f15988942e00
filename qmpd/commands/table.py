"""The command table: which Python function answers which QMP command.

Each module under ``qmpd/commands/`` owns a :class:`CommandTable` and marks
its handlers with ``@table.command("name")``.  A handler is called with a
:class:`~qmpd.context.CommandContext` first and the command's arguments as
keyword arguments, with ``-`` in QMP member names turned into ``_``
(``node-name`` arrives as ``node_name``).  It returns the value of the
``return`` member (``None`` for commands without one, answered as ``{}``),
or raises a :class:`~qmpd.errors.CommandError`.  A handler may be a
coroutine function; the dispatcher awaits it.

The schema is the other half: :func:`check_against_schema` refuses to start
when a command has a schema entry but no handler, or the reverse.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import StartupError

Handler = Callable[..., Any | Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class HandlerEntry:
    name: str
    func: Handler
    is_async: bool


class CommandTable:
    """Handlers registered by one module."""

    def __init__(self) -> None:
        self.entries: dict[str, HandlerEntry] = {}

    def command(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: ``func`` answers the QMP command ``name``."""

        def register(func: Handler) -> Handler:
            if name in self.entries:
                raise StartupError(f"command {name!r} has two handlers")
            self.entries[name] = HandlerEntry(name, func, inspect.iscoroutinefunction(func))
            return func

        return register


def merge(tables: Iterable[CommandTable]) -> dict[str, HandlerEntry]:
    """One name -> handler mapping from several tables; a name twice is an error."""
    merged: dict[str, HandlerEntry] = {}
    for table in tables:
        for name, entry in table.entries.items():
            if name in merged:
                raise StartupError(f"command {name!r} has two handlers")
            merged[name] = entry
    return merged


def check_against_schema(
    handlers: Mapping[str, HandlerEntry], schema_commands: Iterable[str]
) -> None:
    """Refuse to start unless the schema and the handlers name the same commands.

    Raises StartupError listing every command on one side only.
    """
    in_schema = set(schema_commands)
    in_code = set(handlers)
    problems = [
        f"command {n!r} is in the schema but has no handler" for n in sorted(in_schema - in_code)
    ]
    problems += [f"handler for {n!r} has no schema entry" for n in sorted(in_code - in_schema)]
    if problems:
        raise StartupError("; ".join(problems))


__all__ = ["CommandTable", "Handler", "HandlerEntry", "check_against_schema", "merge"]
