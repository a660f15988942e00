"""The mirror job: copy a node to a target while the guest keeps writing.

Theory of operation
-------------------
Set-up (:meth:`MirrorJob.setup`, synchronous, inside ``blockdev-mirror``):
a :class:`~qmpd.block.mirror_top.MirrorTopNode` filter goes above the
source and every guest disk on the source moves onto it; the job takes
QEMU's permissions in one transaction (see :meth:`MirrorJob.setup`): the
target with WRITE through its own BlockBackend, sharing only
WRITE_UNCHANGED, so nobody else writes it, and neither source nor filter
may be resized; source, filter and target get the op blocker ``block
device is in use by block job: mirror``.

The copy itself (bitmaps, operations in flight, guest writes, errors,
``x-zero-stats``) is :class:`~qmpd.jobs.mirror_copy.MirrorCopy`, which
this job extends.

Once ready, completion (``job-complete``, or a soft cancel of a ready
job) leaves the copy loop when clean, with the guest's requests drained
and held at the filter (QEMU keeps the source drained from there to the
switch; while the job waits for ``job-finalize`` qmpd writes them through
instead, see :meth:`MirrorCopy.wait_for_finalize`); ``prepare`` then pivots
(completion only): the job lets go of the target and every guest disk on
the filter moves onto the target.  ``clean`` removes the filter (disks
back on the source unless pivoted) and retires it, which lets the held
requests go on to the disks' new root: after a pivot, the target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..block.mirror_top import MirrorTopNode
from ..block.node import BACKEND_KIND, PERM_ALL, BlockNode, NodeUser, Perm
from ..errors import GenericError
from .job import JobFailed
from .mirror_copy import MirrorCopy, MirrorOptions, ZeroStats
from .status import JobStatus, JobType

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..block.backend import DeviceSet
    from ..block.graph import BlockGraph

MiB = 1 << 20
#: QEMU's default buffer: 16 requests of 1 MiB in flight (DEFAULT_MIRROR_BUF_SIZE).
DEFAULT_BUF_SIZE = 16 * MiB
#: The op blocker text QEMU shows for nodes of a running mirror.
BLOCKER = "block device is in use by block job: mirror"
#: QEMU's default granularity is the target's cluster size clamped to
#: [4 KiB, 64 KiB], and 64 KiB without one: qmpd's drivers have none.
DEFAULT_GRANULARITY = 64 * 1024


class MirrorJob(MirrorCopy):
    """A running blockdev-mirror; see the module docstring."""

    job_type = JobType.MIRROR

    def __init__(
        self,
        job_id: str,
        *,
        graph: BlockGraph,
        devices: DeviceSet,
        source: BlockNode,
        target: BlockNode,
        options: MirrorOptions,
        filter_name: str | None = None,
        auto_finalize: bool = True,
        auto_dismiss: bool = True,
    ) -> None:
        super().__init__(
            job_id,
            source=source,
            target=target,
            options=options,
            auto_finalize=auto_finalize,
            auto_dismiss=auto_dismiss,
        )
        self.graph = graph
        self.devices = devices
        self.filter_name = filter_name
        self.filter: MirrorTopNode | None = None
        self._target_user: NodeUser | None = None
        #: The job's own edges by role (QEMU's block_job_add_bdrv).
        self._edges: dict[str, tuple[BlockNode, NodeUser]] = {}
        self._blocked: list[BlockNode] = []

    # -- set-up and tear-down (graph changes) --------------------------------

    def _job_edge(self, role: str, perm: int, shared: int) -> NodeUser:
        # A block job's own edge, as QEMU's block_job_add_bdrv: errors name
        # it "mirror job 'id'".
        return NodeUser(self.id, f"{self.job_type.value} job", int(perm), int(shared), role)

    def setup(self) -> None:
        """Insert the filter, take the job's permissions, block the nodes.

        The job's parties, as QEMU's mirror has them: the filter (``main
        node``) is read and may be written by others but never resized,
        nor may the source (``source``): the job keeps sizes equal; the
        target is held by the job's own anonymous BlockBackend, which
        writes it and lets others do nothing but unchanged writes.

        Raises GenericError (a permission conflict on any node concerned
        or below it, with QEMU's text); the graph is unchanged then.
        """
        graph = self.graph
        name = self.filter_name if self.filter_name is not None else graph.auto_name()
        flt = MirrorTopNode(name, self.source, self, self.guests, implicit=self.filter_name is None)
        self.source.add_parent(flt, "backing")
        graph.insert(flt)
        backends = self.devices.backends_on(self.source)
        unchanged = Perm.CONSISTENT_READ | Perm.WRITE | Perm.WRITE_UNCHANGED
        edges = {
            "main node": (flt, self._job_edge("main node", Perm.CONSISTENT_READ, unchanged)),
            "source": (self.source, self._job_edge("source", 0, unchanged)),
            "target": (self.target, self._job_edge("target", 0, PERM_ALL)),
        }
        target_user = NodeUser("", BACKEND_KIND, int(Perm.WRITE), int(Perm.WRITE_UNCHANGED))
        changes: list[tuple[BlockNode, NodeUser | None, NodeUser | None]] = []
        for backend in backends:
            changes += [(self.source, backend.user, None), (flt, None, backend.user)]
        changes += [
            (flt, None, edges["main node"][1]),
            (self.target, None, target_user),
            (self.source, None, edges["source"][1]),
            (self.target, None, edges["target"][1]),
        ]
        try:
            graph.change_users(changes)
        except GenericError:
            self.source.remove_parent(flt, "backing")
            graph.discard(flt)
            self.source.refresh_perms()
            raise
        for backend in backends:
            backend.node = flt
        self.filter = flt
        self._target_user = target_user
        self._edges = edges
        for node in (self.source, flt, self.target):
            graph.block(node, BLOCKER)
            self._blocked.append(node)

    def _drop_edge(self, role: str) -> None:
        edge = self._edges.pop(role, None)
        if edge is not None:
            self.graph.detach(*edge)

    def _release_target(self) -> None:
        if self._target_user is not None:
            self.graph.detach(self.target, self._target_user)
            self._target_user = None
        self._drop_edge("target")

    def _remove_filter(self, new_root: BlockNode) -> None:
        flt = self.filter
        if flt is None:
            return
        self._drop_edge("main node")
        for backend in self.devices.backends_on(flt):
            backend.replace_node(self.graph, new_root)
        self.graph.release(flt)
        self.filter = None
        # Only now may the guest's requests held since the copy loop left
        # in sync go on: to the disks' new root.
        flt.retire(new_root)

    def _teardown(self) -> None:
        for node in self._blocked:
            self.graph.unblock(node, BLOCKER)
        self._blocked.clear()
        self._release_target()
        try:
            self._remove_filter(self.target if self._pivoted else self.source)
        except GenericError:
            # Moving back to the source cannot conflict with what the disks
            # had before; if the target refuses, fall back to the source.
            self._remove_filter(self.source)
        finally:
            # Retiring the filter released the guest's held requests; should
            # the filter have stayed, they must still not wait for ever.
            self.guests.release()
        self._drop_edge("source")

    def prepare(self) -> None:
        # Completion pivots; a soft cancel of a ready job only stops.
        if not self.should_complete or self.cancel_requested:
            return
        if self.graph.get(self.source.name) is not self.source:
            raise JobFailed(f"Node name '{self.source.name}' not found")
        self._release_target()
        flt = self.filter
        moved = []
        if flt is not None:
            try:
                for backend in self.devices.backends_on(flt):
                    backend.replace_node(self.graph, self.target)
                    moved.append(backend)
            except GenericError as err:
                for backend in moved:
                    backend.replace_node(self.graph, flt)
                raise JobFailed(err.desc) from None
        self._pivoted = True

    def clean(self) -> None:
        self._teardown()

    # -- job hooks -------------------------------------------------------------

    def complete(self) -> None:
        self.should_complete = True
        self.kick()

    def on_cancel(self, force: bool) -> bool:
        # QEMU's mirror_cancel: only a ready job can be cancelled softly.
        return force or not self.is_ready

    def change(self, options: Mapping[str, Any]) -> None:
        mode = options.get("copy-mode", self.copy_mode)
        if mode == self.copy_mode:
            return
        if mode != "write-blocking":
            raise GenericError(f"Change to copy mode '{mode}' is not implemented")
        self.copy_mode = mode

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["x-zero-stats"] = self.stats.to_qmp()
        return info

    def block_info(self) -> dict[str, Any]:
        info = super().block_info()
        if self.status is JobStatus.PENDING and self.error is None and not self.is_cancelled:
            # QEMU 11.1: a mirror that left its loop to complete (or after a
            # soft cancel) keeps its source drained until prepare, and the
            # drain pauses the job: query-block-jobs says paused until then.
            info["paused"] = True
        return info

    def query_extra(self) -> dict[str, Any]:
        return {"actively-synced": self.actively_synced, "x-zero-stats": self.stats.to_qmp()}

    def graph_children(self) -> list[tuple[str, BlockNode, int, int]]:
        """The job's edges for x-debug-query-block-graph, in QEMU's list
        order (QEMU prepends: target, source, then the filter)."""
        out: list[tuple[str, BlockNode, int, int]] = []
        for role in ("target", "source", "main node"):
            if role in self._edges:
                node, user = self._edges[role]
                out.append((role, node, user.perm, user.shared))
        return out

    def dirty_bitmaps_info(self) -> list[dict[str, Any]]:
        return [
            {
                "count": self.dirty.count(),
                "granularity": self.opts.granularity,
                "recording": False,
                "busy": False,
                "persistent": False,
            }
        ]


__all__ = [
    "BLOCKER",
    "DEFAULT_BUF_SIZE",
    "DEFAULT_GRANULARITY",
    "MirrorJob",
    "MirrorOptions",
    "ZeroStats",
]
