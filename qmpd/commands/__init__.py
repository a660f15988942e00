"""Command handlers, one module per area; see ``table`` for the contract."""

from __future__ import annotations

from .control import table as control_table
from .table import CommandTable

#: Every table the daemon serves; the schema must name exactly these commands.
ALL_TABLES: tuple[CommandTable, ...] = (control_table,)

__all__ = ["ALL_TABLES", "CommandTable"]
