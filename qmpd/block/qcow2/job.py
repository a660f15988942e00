"""``blockdev-create`` with ``driver: qcow2``, as a ``create`` job.

As in QEMU, everything happens inside the job (the command itself only
starts it): the ``file`` reference is resolved (a node name, or inline
options opened for the job's duration and closed after), the job takes
write and resize permission on it, and :func:`~.create.create_qcow2`
formats it.  A bad option or an I/O error fails the job with its message
in ``query-jobs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import GenericError
from ...jobs import Job, JobFailed, JobType
from ..graph import BlockGraph
from ..node import BACKEND_KIND, PERM_ALL, BlockNode, NodeUser, Perm
from .create import create_qcow2

#: What QEMU's qcow2 create asks of the file node (a BlockBackend with
#: write and resize, sharing everything).
CREATE_PERM = Perm.WRITE | Perm.RESIZE


class Qcow2CreateJob(Job):
    job_type = JobType.CREATE

    def __init__(self, job_id: str, options: Mapping[str, Any], graph: BlockGraph) -> None:
        # QEMU's create jobs: JOB_MANUAL_DISMISS, never manual finalize.
        super().__init__(job_id, auto_finalize=True, auto_dismiss=False)
        self.options = dict(options)
        self.graph = graph

    def _open_file(self) -> tuple[BlockNode, bool]:
        from ..options import _Build  # late: options imports this package

        ref = self.options["file"]
        if isinstance(ref, str):
            return self.graph.lookup(ref), False
        build = _Build(self.graph)
        try:
            node = build.node({"discard": "unmap", **ref}, top=False)
            node.refresh_perms()
        except BaseException:
            build.undo()
            raise
        return node, True

    async def run(self) -> None:
        self.progress.set_remaining(1)
        try:
            try:
                node, temporary = self._open_file()
            except GenericError as exc:
                raise JobFailed(str(exc)) from None
            # QEMU's qcow2 create writes through an anonymous BlockBackend.
            user = NodeUser("", BACKEND_KIND, CREATE_PERM, PERM_ALL)
            try:
                self.graph.attach(node, user)
                try:
                    await create_qcow2(node, self.options)
                finally:
                    self.graph.detach(node, user)
            except GenericError as exc:
                raise JobFailed(str(exc)) from None
            finally:
                if temporary:
                    self.graph.release(node)
        finally:
            # QEMU counts the step done whatever the driver returned.
            self.progress.update(1)


__all__ = ["CREATE_PERM", "Qcow2CreateJob"]
