"""Job control: ``query-jobs``, ``job-*`` and the older ``block-job-*`` family.

The handlers only look jobs up and call the verb methods of
:class:`~qmpd.jobs.Job`, which check QEMU's verb table and do the work
synchronously, so the status events a command causes are sent before its
reply.  The two families differ in lookup: ``job-*`` finds any job and
answers ``GenericError "Job not found"``; ``block-job-*`` finds block jobs
only and answers ``DeviceNotActive "Block job 'x' not found"`` (QEMU's
job-qmp.c and blockdev.c).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import GenericError
from .table import CommandTable

if TYPE_CHECKING:
    from ..app import CommandContext

table = CommandTable()


@table.command("query-jobs")
def query_jobs(ctx: CommandContext) -> list[dict[str, Any]]:
    return [job.info() for job in ctx.app.jobs]


@table.command("job-pause")
def job_pause(ctx: CommandContext, id: str) -> None:
    ctx.app.jobs.find(id).user_pause()


@table.command("job-resume")
def job_resume(ctx: CommandContext, id: str) -> None:
    ctx.app.jobs.find(id).user_resume()


@table.command("job-cancel")
def job_cancel(ctx: CommandContext, id: str) -> None:
    # job-cancel never asks for a soft cancel (QEMU passes force=true).
    ctx.app.jobs.find(id).user_cancel(force=True)


@table.command("job-complete")
def job_complete(ctx: CommandContext, id: str) -> None:
    ctx.app.jobs.find(id).user_complete()


@table.command("job-finalize")
def job_finalize(ctx: CommandContext, id: str) -> None:
    ctx.app.jobs.find(id).user_finalize()


@table.command("job-dismiss")
def job_dismiss(ctx: CommandContext, id: str) -> None:
    ctx.app.jobs.find(id).user_dismiss()


@table.command("query-block-jobs")
def query_block_jobs(ctx: CommandContext) -> list[dict[str, Any]]:
    return [job.block_info() for job in ctx.app.jobs.block_jobs()]


@table.command("block-job-set-speed")
def block_job_set_speed(ctx: CommandContext, device: str, speed: int) -> None:
    ctx.app.jobs.find_block_job(device).user_set_speed(speed)


@table.command("block-job-cancel")
def block_job_cancel(ctx: CommandContext, device: str, force: bool = False) -> None:
    job = ctx.app.jobs.find_block_job(device)
    # Checked before the verb table: a soft cancel must not silently drop
    # the client's own pause.
    if job.user_paused and not force:
        raise GenericError(f"The block job for device '{device}' is currently paused")
    job.user_cancel(force=force)


@table.command("block-job-pause")
def block_job_pause(ctx: CommandContext, device: str) -> None:
    ctx.app.jobs.find_block_job(device).user_pause()


@table.command("block-job-resume")
def block_job_resume(ctx: CommandContext, device: str) -> None:
    ctx.app.jobs.find_block_job(device).user_resume()


@table.command("block-job-complete")
def block_job_complete(ctx: CommandContext, device: str) -> None:
    ctx.app.jobs.find_block_job(device).user_complete()


@table.command("block-job-finalize")
def block_job_finalize(ctx: CommandContext, id: str) -> None:
    ctx.app.jobs.find_block_job(id).user_finalize()


@table.command("block-job-dismiss")
def block_job_dismiss(ctx: CommandContext, id: str) -> None:
    ctx.app.jobs.find_block_job(id).user_dismiss()


@table.command("block-job-change")
def block_job_change(ctx: CommandContext, id: str, type: str, **options: Any) -> None:
    # QEMU 11.1 does not compare @type with the job's type: the job's own
    # change hook reads the options it knows (mirror: copy-mode).
    job = ctx.app.jobs.find_block_job(id)
    job.user_change({"type": type, **{k.replace("_", "-"): v for k, v in options.items()}})


__all__ = ["table"]
