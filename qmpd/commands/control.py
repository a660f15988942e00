"""QMP's own commands: negotiation, identity, introspection, quit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .table import CommandTable

if TYPE_CHECKING:
    from ..app import CommandContext

table = CommandTable()


@table.command("qmp_capabilities")
def qmp_capabilities(ctx: CommandContext, enable: list[str] | None = None) -> None:
    # The session owns the negotiation state; see qmpd.protocol.session.
    ctx.session.negotiate(enable or [])


@table.command("query-version")
def query_version(ctx: CommandContext) -> dict[str, Any]:
    return ctx.app.version


@table.command("query-commands")
def query_commands(ctx: CommandContext) -> list[dict[str, str]]:
    # Every command of the command-mode table; QEMU gives no order.
    return [{"name": name} for name in ctx.app.schema.commands]


@table.command("query-qmp-schema")
def query_qmp_schema(ctx: CommandContext) -> list[dict[str, Any]]:
    return ctx.app.schema.introspect()


@table.command("quit")
async def quit_(ctx: CommandContext) -> None:
    # QEMU cancels its jobs and closes its images before it answers (the
    # jobs' events come first), and exits once the reply is out.
    await ctx.app.stop()
    ctx.after_reply.append(ctx.app.shutdown.set)


__all__ = ["table"]
