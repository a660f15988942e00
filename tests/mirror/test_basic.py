"""blockdev-mirror over the in-memory session: errors, events, the filter."""

from __future__ import annotations

from typing import Any

from qmpd.app import App
from qmpd.jobs import JobManager
from tests.mirror.conftest import MiB
from tests.support.transcript import Transcript

DONE = ["JSC waiting", "JSC pending", "BLOCK_JOB_COMPLETED", "JSC concluded", "JSC null"]
CANCELLED = ["JSC aborting", "BLOCK_JOB_CANCELLED", "JSC concluded", "JSC null"]


async def add_null(client: Transcript, name: str, size: int = MiB, **extra: Any) -> None:
    assert (
        await client.cmd("blockdev-add", driver="null-co", node_name=name, size=size, **extra) == {}
    )


async def test_errors_in_qemu_order(client: Transcript) -> None:
    await add_null(client, "src")
    await add_null(client, "dst")

    async def err(**args: Any) -> str:
        reply = await client.cmd("blockdev-mirror", **args)
        return str(reply["error"]["desc"])

    base = {"device": "src", "target": "dst", "sync": "full", "job_id": "j"}
    assert (
        await err(**{**base, "device": "nope"}) == "Cannot find device='nope' nor node-name='nope'"
    )
    assert (
        await err(**{**base, "target": "nope"}) == "Cannot find device='nope' nor node-name='nope'"
    )
    assert await err(**base, granularity=100) == (
        "Parameter 'granularity' expects a value in range [512B, 64MB]"
    )
    assert await err(**base, granularity=1000) == "Parameter 'granularity' expects a power of 2"
    assert await err(**{**base, "sync": "incremental"}) == "Sync mode 'incremental' not supported"
    assert await err(**{**base, "sync": "bitmap"}) == "Sync mode 'bitmap' not supported"
    assert await err(**base, replaces="nope") == "Failed to find node with node-name='nope'"
    assert await err(**base, buf_size=-1) == "Invalid parameter 'buf-size'"
    assert await err(**{**base, "target": "src"}) == "Can't mirror node into itself"
    assert await err(**base, filter_node_name="x y") == "Invalid node-name: 'x y'"
    assert await err(**base, filter_node_name="dst") == "Duplicate nodes with node-name='dst'"
    assert await err(**{**base, "job_id": "a b"}) == "Invalid job ID 'a b'"
    del base["job_id"]
    assert await err(**base) == "Invalid job ID ''"
    client.take()
    assert await err(**base, job_id="j", speed=-1) == (
        "Parameter 'speed' expects a non-negative value"
    )
    assert client.take() == ["JSC created", "JSC null", "error: Parameter 'speed' expects a "
                             "non-negative value"]  # fmt: skip


async def test_size_mismatch_fails_the_job(client: Transcript) -> None:
    await add_null(client, "src")
    await add_null(client, "small", size=MiB // 2)
    client.take()
    assert await client.cmd(
        "blockdev-mirror", device="src", target="small", sync="full", job_id="j",
        auto_dismiss=False,
    ) == {}  # fmt: skip
    await client.until("JSC concluded")
    assert client.take() == [
        "JSC created", "JSC running", "return", "JSC aborting", "BLOCK_JOB_COMPLETED",
        "JSC concluded",
    ]  # fmt: skip
    assert client.event("BLOCK_JOB_COMPLETED") == {
        "type": "mirror", "device": "j", "len": 0, "offset": 0, "speed": 0,
        "error": "Source and target image have different sizes",
    }  # fmt: skip
    jobs = await client.cmd("query-jobs")
    assert jobs[0]["error"] == "Source and target image have different sizes"
    assert await client.cmd("job-dismiss", id="j") == {}


async def test_filter_busy_nodes_and_soft_cancel(client: Transcript, app: App) -> None:
    await add_null(client, "src")
    await add_null(client, "dst")
    await add_null(client, "other")
    client.take()
    assert await client.cmd(
        "blockdev-mirror", device="src", target="dst", sync="full", job_id="j",
        filter_node_name="ftop", auto_dismiss=False, speed=1,
    ) == {}  # fmt: skip
    assert client.take() == ["JSC created", "JSC running", "return"]
    nodes = await client.cmd("query-named-block-nodes", flat=True)
    top = nodes[0]
    assert top["node-name"] == "ftop"
    assert top["drv"] == "mirror_top"
    assert top["children"] == [{"child": "backing", "node-name": "src"}]
    assert top["image"]["format"] == "mirror_top"
    assert top["dirty-bitmaps"][0]["granularity"] == 65536
    assert "dirty-bitmaps" not in nodes[1]

    async def err(command: str, **args: Any) -> str:
        return str((await client.cmd(command, **args))["error"]["desc"])

    assert await err("blockdev-del", node_name="dst") == "Node dst is in use"
    busy = "block device is in use by block job: mirror"
    assert await err("blockdev-del", node_name="src") == f"Node 'src' is busy: {busy}"
    assert await err("blockdev-del", node_name="ftop") == f"Node 'ftop' is busy: {busy}"
    again = {"target": "other", "sync": "full", "job_id": "k"}
    assert await err("blockdev-mirror", device="src", **again) == "Need a root block node"
    assert await err("blockdev-mirror", device="ftop", **again) == "Need a root block node"
    assert await err("blockdev-mirror", device="other", target="dst", sync="full", job_id="k") == (
        f"Node 'dst' is busy: {busy}"
    )
    [info] = await client.cmd("query-block-jobs")
    assert info["type"] == "mirror"
    assert info["actively-synced"] is False
    assert info["x-zero-stats"] == {"copied": MiB, "zeroed": 0, "skipped": 0}
    client.take()
    assert await client.cmd("block-job-set-speed", device="j", speed=0) == {}
    await client.until("BLOCK_JOB_READY")
    assert client.take()[-2:] == ["JSC ready", "BLOCK_JOB_READY"]
    assert await client.cmd("block-job-cancel", device="j") == {}
    await client.until("JSC concluded")
    assert client.take() == ["return", *DONE[:-1]]
    [job] = await client.cmd("query-jobs")
    assert "error" not in job
    assert job["x-zero-stats"]["copied"] == MiB
    assert [n["node-name"] for n in await client.cmd("query-named-block-nodes")] == [
        "other", "dst", "src",
    ]  # fmt: skip
    assert await client.cmd("job-dismiss", id="j") == {}
    assert await client.cmd("blockdev-del", node_name="dst") == {}


async def test_nothing_to_copy_is_ready_before_the_reply(client: Transcript) -> None:
    await add_null(client, "src")
    await add_null(client, "dst")
    client.take()
    assert (
        await client.cmd("blockdev-mirror", device="src", target="dst", sync="none", job_id="j")
        == {}
    )
    assert client.take() == ["JSC created", "JSC running", "JSC ready", "BLOCK_JOB_READY", "return"]
    assert client.event("BLOCK_JOB_READY")["len"] == 0
    assert await client.cmd("job-complete", id="j") == {}
    await client.until("JSC null")
    assert client.take() == ["return", *DONE]


async def test_force_cancel_and_manual_finalize(client: Transcript, jobs: JobManager) -> None:
    await add_null(client, "src")
    await add_null(client, "dst")
    client.take()
    args = {"device": "src", "target": "dst", "job_id": "j"}
    assert await client.cmd("blockdev-mirror", sync="full", speed=1, **args) == {}
    assert await client.cmd("job-cancel", id="j") == {}
    await client.until("JSC null")
    assert client.take() == ["JSC created", "JSC running", "return", "return", *CANCELLED]
    assert await client.cmd(
        "blockdev-mirror", sync="top", auto_finalize=False, auto_dismiss=False, **args
    ) == {}  # fmt: skip
    assert client.take() == ["JSC created", "JSC running", "JSC ready", "BLOCK_JOB_READY", "return"]
    assert await client.cmd("job-complete", id="j") == {}
    await client.until("BLOCK_JOB_PENDING")
    assert client.take() == ["return", "JSC waiting", "JSC pending", "BLOCK_JOB_PENDING"]
    assert (await client.cmd("query-named-block-nodes"))[0]["drv"] == "mirror_top"
    client.take()
    assert await client.cmd("job-finalize", id="j") == {}
    assert client.take() == ["BLOCK_JOB_COMPLETED", "JSC concluded", "return"]
    assert await client.cmd("job-dismiss", id="j") == {}
