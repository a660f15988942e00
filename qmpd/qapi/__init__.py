"""qmpd's QAPI schema pipeline: ``schema/*.json`` -> checked model -> uses.

The phases, one module each, as in QEMU's own generator (scripts/qapi):

1. :mod:`.parser`: QAPI syntax to expressions, with file:line everywhere;
2. :mod:`.check`: shape of each expression (keys, names, JSON shapes);
3. :mod:`.model`: types resolved, bases flattened, unions and alternates
   checked, clashes caught;
4. :mod:`.introspect` (``query-qmp-schema``) and :mod:`.jsonschema`
   (JSON Schemas of arguments, returns and event data);
5. :mod:`.validate`: argument checking with QEMU's error texts.

Every schema problem is a :class:`~qmpd.errors.SchemaError` naming file and
line.  :class:`Schema` is what the rest of qmpd uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..errors import GenericError
from ..protocol.hashorder import first_unvisited
from .introspect import introspect
from .jsonschema import command_arguments_schema, command_return_schema, event_data_schema
from .model import SchemaModel, build_model
from .parser import parse_schema
from .validate import Checker

DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "schema" / "qapi-schema.json"


@dataclass(frozen=True, slots=True)
class CommandDef:
    name: str
    allow_oob: bool
    features: tuple[str, ...]
    has_arguments: bool
    has_return: bool


@dataclass(frozen=True, slots=True)
class EventDef:
    name: str
    features: tuple[str, ...]
    has_data: bool


class Schema:
    """The loaded schema: commands, events, introspection and value checks."""

    def __init__(self, model: SchemaModel) -> None:
        self.model = model
        self.commands: Mapping[str, CommandDef] = MappingProxyType(
            {
                c.name: CommandDef(
                    c.name, c.allow_oob, c.features, c.arg_type is not None, c.ret_type is not None
                )
                for c in model.commands.values()
            }
        )
        self.events: Mapping[str, EventDef] = MappingProxyType(
            {
                e.name: EventDef(e.name, e.features, e.arg_type is not None)
                for e in model.events.values()
            }
        )
        # Validators are built once, here; commands without arguments need
        # none (their fast path is in check_arguments).
        self._arguments = {
            c.name: Checker(model, c.arg_type, command_arguments_schema(model, c))
            for c in model.commands.values()
            if c.arg_type is not None and c.gen
        }
        # 'gen': false commands get their arguments unchecked, as QEMU
        # hands them to the handler as a raw dictionary.
        self._unchecked = frozenset(c.name for c in model.commands.values() if not c.gen)
        self._events = {
            e.name: Checker(model, e.arg_type, event_data_schema(model, e))
            for e in model.events.values()
            if e.arg_type is not None
        }
        self._returns: dict[str, Checker] = {}
        self._introspection: list[dict[str, Any]] | None = None

    def introspect(self) -> list[dict[str, Any]]:
        """The ``query-qmp-schema`` value; computed once.  Callers must not modify it."""
        if self._introspection is None:
            self._introspection = introspect(self.model)
        return self._introspection

    def check_arguments(self, command: str, args: dict[str, Any]) -> None:
        """Check a known command's ``arguments`` object.

        Raises GenericError with QEMU's text (e.g. ``Parameter 'x' is
        missing``) for the first problem QEMU would report.  KeyError for an
        unknown command: looking commands up is the caller's job.  Commands
        declared with ``'gen': false`` are not checked here.
        """
        checker = self._arguments.get(command)
        if checker is None:
            if command in self._unchecked:
                return
            if command not in self.commands:
                raise KeyError(command)
            if args:
                # Which one QEMU names depends on its hash tables.
                raise GenericError(f"Parameter '{first_unvisited(list(args), ())}' is unexpected")
            return
        checker.check(args)

    def check_event_data(self, event: str, data: dict[str, Any] | None) -> None:
        """Check an event's ``data`` (None: no data member).  Raises GenericError."""
        checker = self._events.get(event)
        if checker is None:
            if event not in self.events:
                raise KeyError(event)
            if data is not None:
                raise GenericError(f"event {event} has no data")
            return
        if data is None:
            raise GenericError(f"event {event} needs data")
        checker.check(data)

    def check_return(self, command: str, value: Any) -> None:
        """Check a command's return value (``{}`` if it returns nothing).  Raises GenericError."""
        checker = self._returns.get(command)
        if checker is None:
            cmd = self.model.commands[command]
            checker = Checker(self.model, cmd.ret_type, command_return_schema(self.model, cmd))
            self._returns[command] = checker
        checker.check(value)


def load_schema(path: Path | None = None) -> Schema:
    """Load, check and resolve the schema at ``path`` (default: ``schema/qapi-schema.json``).

    Raises SchemaError naming file and line of the first problem.
    """
    return Schema(build_model(parse_schema(path or DEFAULT_SCHEMA)))


__all__ = ["DEFAULT_SCHEMA", "CommandDef", "EventDef", "Schema", "load_schema"]
