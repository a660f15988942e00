"""Start-up binds handlers to the schema and refuses any mismatch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qmpd.app import build_app
from qmpd.commands import ALL_TABLES
from qmpd.commands.table import CommandTable
from qmpd.errors import StartupError
from qmpd.qapi import DEFAULT_SCHEMA


def test_real_schema_and_handlers_agree() -> None:
    app = build_app()
    assert set(app.handlers) == set(app.schema.commands)


def test_handler_without_schema_entry_stops_startup() -> None:
    extra = CommandTable()

    @extra.command("x-not-in-schema")
    def handler(ctx: object) -> None:
        return None

    with pytest.raises(StartupError, match="handler for 'x-not-in-schema' has no schema entry"):
        build_app(tables=(*ALL_TABLES, extra))


def test_schema_command_without_handler_stops_startup(tmp_path: Path) -> None:
    schema_dir = tmp_path / "schema"
    shutil.copytree(DEFAULT_SCHEMA.parent, schema_dir)
    main = schema_dir / DEFAULT_SCHEMA.name
    main.write_text(
        main.read_text() + "\n##\n# @x-orphan:\n#\n# Nobody answers this.\n##\n"
        "{ 'command': 'x-orphan', 'features': [ 'unstable' ] }\n"
    )
    with pytest.raises(StartupError, match="'x-orphan' is in the schema but has no handler"):
        build_app(main)


def test_two_handlers_for_one_command() -> None:
    table = CommandTable()
    table.command("quit")(lambda ctx: None)
    with pytest.raises(StartupError, match="'quit' has two handlers"):
        build_app(tables=(*ALL_TABLES, table))
