"""Block-node commands: blockdev-add/-del, query-named-block-nodes, and the
zero-state extensions x-query-zero-state and x-blockdev-map."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..block import block_device_info, blockdev_add
from ..errors import GenericError
from .table import CommandTable

if TYPE_CHECKING:
    from ..app import CommandContext

table = CommandTable()


@table.command("blockdev-add")
def blockdev_add_cmd(ctx: CommandContext, **args: Any) -> None:
    # Boxed: the handler gets BlockdevOptions; put QMP's spelling back.
    blockdev_add(ctx.app.graph, {key.replace("_", "-"): value for key, value in args.items()})


@table.command("blockdev-del")
def blockdev_del(ctx: CommandContext, node_name: str) -> None:
    ctx.app.graph.delete(node_name)


@table.command("query-named-block-nodes")
def query_named_block_nodes(ctx: CommandContext, flat: bool = False) -> list[dict[str, Any]]:
    return [block_device_info(node, flat=flat) for node in ctx.app.graph.newest_first()]


@table.command("x-query-zero-state")
async def x_query_zero_state(
    ctx: CommandContext, node_name: str | None = None
) -> list[dict[str, Any]]:
    graph = ctx.app.graph
    nodes = [graph.find(node_name)] if node_name is not None else graph.newest_first()
    out = []
    for node in nodes:
        state = await node.known_zero()
        out.append(
            {"node-name": node.name, "create": state.create.to_qmp(), "open": state.open.to_qmp()}
        )
    return out


@table.command("x-blockdev-map")
async def x_blockdev_map(
    ctx: CommandContext, node_name: str, offset: int = 0, length: int | None = None
) -> list[dict[str, Any]]:
    node = ctx.app.graph.find(node_name)
    size = node.size
    if length is None:
        length = max(0, size - offset)
    if offset < 0 or length < 0 or offset + length > size:
        raise GenericError(
            f"Range [{offset}, {offset + length}) is outside node '{node_name}' of size {size}"
        )
    return [ext.map_entry() for ext in await node.block_status(offset, length)]


__all__ = ["table"]
