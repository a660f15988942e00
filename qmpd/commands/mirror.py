"""``blockdev-mirror``: check the arguments in QEMU's order, start the job.

QEMU 11.1's order, as observed on qemu-storage-daemon 11.1.2: the source
(must exist and be a root node), the target, ``granularity`` (range, then
power of two), op blockers of source and target, ``sync``, ``replaces``,
``buf-size``, "into itself", ``filter-node-name``, the job id, and only
then, with the job already created (so its ``created`` and ``null``
status changes are emitted), ``speed``.  A size mismatch is not a command
error: the job starts and fails (qmp-facts §3.4).

The handler is a coroutine so that it can wait for the job's first yield:
a job with nothing to copy is ``ready`` before the reply, as in QEMU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..block.mirror_top import MirrorTopNode
from ..block.node import BlockNode
from ..errors import GenericError
from ..jobs.blockjob import BlockdevOnError
from ..jobs.mirror import (
    DEFAULT_BUF_SIZE,
    DEFAULT_GRANULARITY,
    MirrorJob,
    MirrorOptions,
)
from .table import CommandTable

if TYPE_CHECKING:
    from ..app import CommandContext
    from ..block.graph import BlockGraph

table = CommandTable()

GRANULARITY_MIN = 512
GRANULARITY_MAX = 64 << 20


def root_node(graph: BlockGraph, name: str) -> BlockNode:
    """QEMU's qmp_get_root_bs: the node must exist and have no parents but
    BlockBackends.

    Raises GenericError ``Cannot find device=... nor node-name=...`` or
    ``Need a root block node``.
    """
    node = graph.lookup(name)
    # A mirror's filter is the job's child, which QEMU does not count as
    # a root parent either.
    if node.parents or isinstance(node, MirrorTopNode):
        raise GenericError("Need a root block node")
    return node


def check_blocked(graph: BlockGraph, node: BlockNode) -> None:
    """Refuse a node another job holds (QEMU's op blockers)."""
    reason = graph.blocker(node)
    if reason is not None:
        raise GenericError(f"Node '{node.name}' is busy: {reason}")


def check_granularity(granularity: int) -> None:
    if granularity and not GRANULARITY_MIN <= granularity <= GRANULARITY_MAX:
        raise GenericError("Parameter 'granularity' expects a value in range [512B, 64MB]")
    if granularity & (granularity - 1):
        raise GenericError("Parameter 'granularity' expects a power of 2")


@table.command("blockdev-mirror")
async def blockdev_mirror(
    ctx: CommandContext,
    device: str,
    target: str,
    sync: str,
    job_id: str | None = None,
    replaces: str | None = None,
    speed: int = 0,
    granularity: int = 0,
    buf_size: int = 0,
    on_source_error: str = "report",
    on_target_error: str = "report",
    filter_node_name: str | None = None,
    copy_mode: str = "background",
    auto_finalize: bool = True,
    auto_dismiss: bool = True,
    target_is_zero: bool = False,
) -> None:
    app = ctx.app
    graph = app.graph
    source = root_node(graph, device)
    target_node = graph.lookup(target)
    check_granularity(granularity)
    check_blocked(graph, source)
    check_blocked(graph, target_node)
    if sync not in ("full", "top", "none"):
        raise GenericError(f"Sync mode '{sync}' not supported")
    if replaces is not None:
        to_replace = graph.find(replaces)
        # Only the source itself can be replaced safely: qmpd has no
        # filters a replacement could see through (raw is not one, as
        # QEMU 11.1 also says for raw over a protocol node).
        if to_replace is not source:
            raise GenericError(
                f"Cannot replace '{replaces}' by a node mirrored from '{device}', because it "
                "cannot be guaranteed that doing so would not lead to an abrupt change of "
                "visible data"
            )
    if buf_size < 0:
        raise GenericError("Invalid parameter 'buf-size'")
    if source is target_node:
        raise GenericError("Can't mirror node into itself")
    if filter_node_name is not None:
        graph.check_name(filter_node_name)
    gran = granularity or DEFAULT_GRANULARITY
    buf = buf_size or DEFAULT_BUF_SIZE
    buf = -(-buf // gran) * gran
    options = MirrorOptions(
        sync=sync,
        granularity=gran,
        buf_size=buf,
        on_source_error=BlockdevOnError(on_source_error),
        on_target_error=BlockdevOnError(on_target_error),
        copy_mode=copy_mode,
        target_is_zero=target_is_zero,
    )
    # No named BlockBackends in qmpd: a missing id is QEMU's empty default.
    job = MirrorJob(
        job_id if job_id is not None else "",
        graph=graph,
        devices=app.devices,
        source=source,
        target=target_node,
        options=options,
        filter_name=filter_node_name,
        auto_finalize=auto_finalize,
        auto_dismiss=auto_dismiss,
    )
    app.jobs.add(job)
    try:
        if speed < 0:
            raise GenericError("Parameter 'speed' expects a non-negative value")
        job.limiter.set_speed(speed)
        job.setup()
    except GenericError:
        job.early_fail()
        raise
    ctx.after_reply_queued.append(job.reply_sent)
    job.start()
    await job.until_first_yield()


__all__ = ["check_granularity", "root_node", "table"]
