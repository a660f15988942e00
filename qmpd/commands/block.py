"""Block-node commands: blockdev-add/-del, query-named-block-nodes, the
zero-state extensions x-query-zero-state and x-blockdev-map, and QEMU's
x-debug-query-block-graph."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..block import BlockNode, Perm, block_device_info, blockdev_add
from ..block.backend import BACKEND_KIND
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
async def blockdev_del(ctx: CommandContext, node_name: str) -> None:
    # QEMU's bdrv_close flushes each node before closing it and ignores a
    # failure: the client gets {} and the node is gone either way.
    graph = ctx.app.graph
    await graph.arelease(graph.deletable(node_name))


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


# ------------------------------------------------------------ graph debugging


@runtime_checkable
class GraphJob(Protocol):
    """A block job that shows its nodes in x-debug-query-block-graph.

    ``graph_children()`` returns (role, node, perm, shared) for each node
    the job holds, roles as QEMU names them (``main node``, ``source``,
    ``target``...).  A block job without it is shown without edges.
    """

    def graph_children(self) -> list[tuple[str, BlockNode, int, int]]: ...


def _perm_list(bits: int) -> list[str]:
    # QEMU builds the list by prepending bit 0 upwards: highest bit first.
    return [name for bit, name in reversed(_PERM_QAPI) if bits & bit]


_PERM_QAPI = (
    (Perm.CONSISTENT_READ, "consistent-read"),
    (Perm.WRITE, "write"),
    (Perm.WRITE_UNCHANGED, "write-unchanged"),
    (Perm.RESIZE, "resize"),
)


class _GraphDump:
    """QEMU's bdrv_get_xdbg_block_graph: vertex numbers in order of first
    mention, lists built by prepending (so newest first)."""

    def __init__(self) -> None:
        self._ids: dict[int, int] = {}
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[dict[str, Any]] = []

    def num(self, obj: object) -> int:
        return self._ids.setdefault(id(obj), len(self._ids) + 1)

    def node(self, obj: object, kind: str, name: str) -> None:
        self.nodes.append({"id": self.num(obj), "type": kind, "name": name})

    def edge(self, parent: object, child: object, role: str, perm: int, shared: int) -> None:
        self.edges.append(
            {
                "parent": self.num(parent),
                "child": self.num(child),
                "name": role,
                "perm": _perm_list(perm),
                "shared-perm": _perm_list(shared),
            }
        )

    def result(self) -> dict[str, Any]:
        return {"nodes": self.nodes[::-1], "edges": self.edges[::-1]}


@table.command("x-debug-query-block-graph")
def x_debug_query_block_graph(ctx: CommandContext) -> dict[str, Any]:
    graph = ctx.app.graph
    dump = _GraphDump()
    # BlockBackends are node users of their kind; the others are jobs'
    # (shown through the jobs below) or exports' (none in qmpd yet).
    for node in graph:
        for user in node.users:
            if user.kind == BACKEND_KIND:
                dump.node(user, "block-backend", user.name)
                dump.edge(user, node, "root", user.perm, user.shared)
    for job in ctx.app.jobs.block_jobs():
        dump.node(job, "block-job", job.id)
        if isinstance(job, GraphJob):
            for role, child, perm, shared in job.graph_children():
                dump.edge(job, child, role, perm, shared)
    # Oldest first, as QEMU walks its list of all nodes.
    for node in graph:
        dump.node(node, "block-driver", node.name)
        for role, child in node.children.items():
            perm, shared = node.child_perms(role)
            dump.edge(node, child, role, perm, shared)
    return dump.result()


__all__ = ["GraphJob", "table"]
