"""``blockdev-create``: start an image-creation job (see qmpd.block.create)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..block.create import CreateJob, parse_create_options
from ..block.qcow2.job import Qcow2CreateJob
from ..jobs import Job
from .table import CommandTable

if TYPE_CHECKING:
    from ..app import CommandContext

table = CommandTable()


@table.command("blockdev-create")
async def blockdev_create(ctx: CommandContext, job_id: str, options: dict[str, Any]) -> None:
    # QEMU's order: the driver first, then the job id.
    if options.get("driver") == "qcow2":
        job: Job = ctx.app.jobs.add(Qcow2CreateJob(job_id, options, ctx.app.graph))
    else:
        job = ctx.app.jobs.add(CreateJob(job_id, parse_create_options(options)))
    job.start()
    # A failure before the first thread hop concludes the job before the reply.
    await job.until_first_yield()


__all__ = ["table"]
