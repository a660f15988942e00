"""Command handlers, one module per area; see ``table`` for the contract."""

from __future__ import annotations

from .block import table as block_table
from .control import table as control_table
from .create import table as create_table
from .devices import table as devices_table
from .jobs import table as jobs_table
from .mirror import table as mirror_table
from .table import CommandTable

#: Every table the daemon serves; the schema must name exactly these commands.
ALL_TABLES: tuple[CommandTable, ...] = (
    control_table,
    block_table,
    jobs_table,
    devices_table,
    create_table,
    mirror_table,
)

__all__ = ["ALL_TABLES", "CommandTable"]
