"""``scripts/bench qcow2``: qcow2 create, known-zero and mirror, qmpd next to QSD 11.1.

The benchmark of the qcow2 issue, each part in one daemon run:

(1) ``create``: ``blockdev-create`` of a 1 TiB qcow2 (default options:
    v3, 64 KiB clusters) with ``preallocation`` ``off`` and ``metadata``
    on a file node just made by ``blockdev-create``.  Seconds from the
    command to the job's ``concluded``, bytes the daemon wrote
    (``write_bytes``/``wchar`` of /proc/PID/io) and the file's allocation.
    Every image is checked with ``qemu-img check`` afterwards, and the
    metadata images of both daemons must map alike (``qemu-img map``
    without host offsets: the layouts differ, the guest view must not).
(2) ``zero``: the known-zero answer on a freshly created 1 TiB
    metadata-preallocated image.  qmpd: ``blockdev-add`` and the first
    ``x-query-zero-state`` (seconds, bytes read as ``rchar``, value and
    ``how``) three times: on its own image (``flag``: the all-zero bit),
    on the same image after QEMU opened it read-write and so dropped the
    bit (``scan`` of L1/L2), and on an image ``qemu-img create`` made
    (``scan``).  QSD has no ``x-query-zero-state``: what compares is its
    ``blockdev-add`` of its own image, and ``qemu-img check``, QEMU's own
    walk of every table, timed on the same image.
(3) ``mirror``: the 4 GiB / 5% raw source of ``scripts/bench mirror`` into
    a fresh qcow2 made the management way (create file, add it, create
    qcow2 on it, add it), ``blockdev-mirror sync: full`` without
    ``target-is-zero``.  Seconds to ``BLOCK_JOB_READY``, bytes written
    from the mirror's start to its completion, the target's allocation,
    qmpd's ``x-zero-stats``; then ``qemu-img compare`` source and target.

Ratios are qmpd / QSD.  The machine may be shared: the load average is
recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.mirror import Client, make_source, proc_io
from bench.options import (
    Log,
    add_common_arguments,
    find_kinds,
    progress_log,
    publish,
    selected_daemons,
)
from bench.stats import ratio, skipped_lines, table
from tests.support.daemons import REPO, running
from tests.support.qemu_tools import (
    new_tool,
    system_tool,
    why_new_missing,
    why_system_missing,
)

__all__ = ["add_arguments", "main", "render", "run"]

MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
DAEMONS = ("qmpd", "qsd-new")
PREALLOCS = ("off", "metadata")
RESULTS = REPO / "bench-results" / "qcow2.json"


def _tool(name: str) -> str:
    """QEMU 11.1's tool when set up, else Debian's.  Raises RuntimeError,
    saying why, when neither is there."""
    found = new_tool(name) or system_tool(name)
    if found is None:
        raise RuntimeError(f"{why_new_missing(name)}; {why_system_missing(name)}")
    return found


def _job(client: Client, job_id: str, options: dict[str, Any]) -> float:
    """Run a ``blockdev-create`` job to its end; its seconds.  Raises
    RuntimeError with the job's error when it failed."""
    t0 = time.perf_counter()
    client.execute("blockdev-create", **{"job-id": job_id, "options": options})
    client.wait("JOB_STATUS_CHANGE", "concluded")
    seconds = time.perf_counter() - t0
    error = next((j.get("error") for j in client.execute("query-jobs") if j["id"] == job_id), None)
    client.execute("job-dismiss", id=job_id)
    if error:
        raise RuntimeError(f"{job_id}: {error}")
    return seconds


def _timed(client: Client, command: str, **arguments: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    reply = client.execute(command, **arguments)
    return time.perf_counter() - t0, reply


def _new_qcow2(client: Client, path: Path, size: int, prealloc: str, name: str) -> float:
    """File created and added as ``<name>-file``, qcow2 created on it; the
    qcow2 job's seconds.  Nothing is added on top."""
    if path.exists():
        path.unlink()
    _job(client, f"{name}-cf", {"driver": "file", "filename": str(path), "size": 0})
    client.execute(
        "blockdev-add", driver="file", filename=str(path), **{"node-name": f"{name}-file"}
    )
    options = {"driver": "qcow2", "file": f"{name}-file", "size": size, "preallocation": prealloc}
    return _job(client, f"{name}-cq", options)


def _add_qcow2(client: Client, path: Path | None, name: str) -> float:
    """``blockdev-add`` of a qcow2 node ``name`` (over ``<name>-file``, added
    first when ``path`` is given); its seconds."""
    if path is not None:
        client.execute(
            "blockdev-add", driver="file", filename=str(path), **{"node-name": f"{name}-file"}
        )
    seconds, _ = _timed(
        client, "blockdev-add", driver="qcow2", file=f"{name}-file", **{"node-name": name}
    )
    return seconds


def _del(client: Client, *names: str) -> None:
    for name in names:
        client.execute("blockdev-del", **{"node-name": name})


def _check(path: Path) -> dict[str, Any]:
    """``qemu-img check``: seconds and whether it found nothing wrong."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [_tool("qemu-img"), "check", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        return {"seconds": seconds, "clean": False, "output": out.stderr.strip()}
    clean = out.returncode == 0 and not any(
        report.get(k, 0) for k in ("check-errors", "leaks", "corruptions")
    )
    return {"seconds": seconds, "clean": clean}


def _guest_map(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [_tool("qemu-img"), "map", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [{k: v for k, v in e.items() if k != "offset"} for e in json.loads(out.stdout)]


def _create_part(client: Client, pid: int, work: Path, tag: str, log: Log) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for prealloc in PREALLOCS:
        if log:
            log(f"{tag}: create 1 TiB preallocation={prealloc}")
        path = work / f"{tag}-{prealloc}.qcow2"
        before = proc_io(pid)
        seconds = _new_qcow2(client, path, TiB, prealloc, "c")
        after = proc_io(pid)
        _del(client, "c-file")
        results[prealloc] = {
            "seconds": seconds,
            "write_bytes": after["write_bytes"] - before["write_bytes"],
            "wchar": after["wchar"] - before["wchar"],
            "allocated": path.stat().st_blocks * 512,
            "check": _check(path),
        }
    return results


def _zero_query(client: Client, pid: int, name: str) -> dict[str, Any]:
    """The first x-query-zero-state of node ``name``, then a second one."""
    before = proc_io(pid)
    seconds, reply = _timed(client, "x-query-zero-state", **{"node-name": name})
    after = proc_io(pid)
    again, _ = _timed(client, "x-query-zero-state", **{"node-name": name})
    state = reply[0]["open"]
    return {
        "seconds": seconds,
        "rchar": after["rchar"] - before["rchar"],
        "value": state["value"],
        "how": state["how"],
        "again_seconds": again,
    }


def _zero_part(client: Client, pid: int, work: Path, tag: str, log: Log) -> dict[str, Any]:
    """(2); the image is the metadata one the create part left."""
    path = work / f"{tag}-metadata.qcow2"
    results: dict[str, Any] = {}
    if tag != "qmpd":
        if log:
            log(f"{tag}: blockdev-add of its fresh 1 TiB metadata image; qemu-img check")
        before = proc_io(pid)
        add = _add_qcow2(client, path, "z")
        after = proc_io(pid)
        _del(client, "z", "z-file")
        results["own"] = {"add_seconds": add, "add_rchar": after["rchar"] - before["rchar"]}
        results["qemu-img check"] = _check(path)
        return results
    cases = {"flag": path, "bit dropped by QEMU": path, "qemu-img made": work / "qemu-img.qcow2"}
    for case, image in cases.items():
        if log:
            log(f"{tag}: known-zero, {case}")
        if case == "bit dropped by QEMU":
            # QEMU clears autoclear bits it does not know on a read-write open.
            subprocess.run([_tool("qemu-io"), "-c", "quit", str(image)], check=True)
        elif case == "qemu-img made":
            subprocess.run(
                [_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-o",
                 "preallocation=metadata", str(image), str(TiB)],
                check=True,
            )  # fmt: skip
        before = proc_io(pid)
        add = _add_qcow2(client, image, "z")
        after = proc_io(pid)
        query = _zero_query(client, pid, "z")
        _del(client, "z", "z-file")
        results[case] = {"add_seconds": add, "add_rchar": after["rchar"] - before["rchar"], **query}
    (work / "qemu-img.qcow2").unlink()
    return results


def _mirror_part(
    client: Client, pid: int, work: Path, src: Path, size: int, tag: str, log: Log
) -> dict[str, Any]:
    if log:
        log(f"{tag}: mirror into a fresh qcow2")
    dst = work / f"{tag}-dst.qcow2"
    _new_qcow2(client, dst, size, "off", "dst")
    _add_qcow2(client, None, "dst")
    client.execute(
        "blockdev-add", driver="raw", **{"node-name": "src"},
        file={"driver": "file", "filename": str(src)},
    )  # fmt: skip
    before = proc_io(pid)
    t0 = time.perf_counter()
    client.execute("blockdev-mirror", device="src", target="dst", sync="full", **{"job-id": "m"})
    client.wait("BLOCK_JOB_READY")
    ready = time.perf_counter() - t0
    stats = None
    for job in client.execute("query-block-jobs"):
        stats = job.get("x-zero-stats")
    client.execute("job-complete", id="m")
    client.wait("JOB_STATUS_CHANGE", "null")
    after = proc_io(pid)
    _del(client, "dst", "dst-file", "src")
    compare = subprocess.run(
        [_tool("qemu-img"), "compare", "-f", "raw", "-F", "qcow2", str(src), str(dst)],
        capture_output=True,
        text=True,
        check=False,
    )
    result = {
        "ready_s": ready,
        "write_bytes": after["write_bytes"] - before["write_bytes"],
        "wchar": after["wchar"] - before["wchar"],
        "allocated": dst.stat().st_blocks * 512,
        "x-zero-stats": stats,
        "identical": compare.returncode == 0,
        "check": _check(dst),
    }
    dst.unlink()
    return result


def run(names: Sequence[str], size: int, percent: float, log: Log = None) -> dict[str, Any]:
    kinds, skipped = find_kinds(names)
    report: dict[str, Any] = {
        "image_size": TiB,
        "mirror": {"size": size, "percent": percent},
        "load_before": os.getloadavg(),
        "daemons": {},
        "skipped": skipped,
    }
    work = Path(tempfile.mkdtemp(prefix="qmpd-bench-qcow2-", dir="/tmp"))
    try:
        src = work / "src.img"
        report["mirror"]["source_data"] = make_source(src, size, percent)
        for kind in kinds:
            with running(kind) as daemon:
                client = Client(daemon.sockets[0])
                pid = daemon.proc.pid
                try:
                    version = client.execute("query-version")["qemu"]
                    results = {
                        "version": f"{version['major']}.{version['minor']}.{version['micro']}",
                        "create": _create_part(client, pid, work, kind.name, log),
                        "zero": _zero_part(client, pid, work, kind.name, log),
                        "mirror": _mirror_part(client, pid, work, src, size, kind.name, log),
                    }
                finally:
                    client.close()
            report["daemons"][kind.name] = results
        metadata = [work / f"{n}-metadata.qcow2" for n in report["daemons"]]
        if len(metadata) == 2:
            report["metadata_maps_equal"] = _guest_map(metadata[0]) == _guest_map(metadata[1])
        report["load_after"] = os.getloadavg()
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    return report


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:.1f}"


def _both(daemons: dict[str, Any]) -> bool:
    return set(DAEMONS) <= set(daemons)


def render(report: dict[str, Any]) -> str:
    daemons = report["daemons"]
    versions = ", ".join(f"{n} {r['version']}" for n, r in daemons.items())
    load = report.get("load_before", ())
    lines = [
        f"daemons: {versions}; load average before the run: " + " ".join(f"{x:.2f}" for x in load),
        "",
        "(1) blockdev-create qcow2, 1 TiB, 64 KiB clusters",
    ]
    rows = []
    for prealloc in PREALLOCS:
        for name, r in daemons.items():
            c = r["create"][prealloc]
            rows.append([
                prealloc, name, f"{c['seconds']:.3f}", _mib(c["write_bytes"]), _mib(c["wchar"]),
                _mib(c["allocated"]), "clean" if c["check"]["clean"] else "NOT CLEAN",
            ])  # fmt: skip
        if _both(daemons):
            a, b = (daemons[n]["create"][prealloc] for n in DAEMONS)
            rows.append([
                prealloc, "qmpd/qsd", ratio(a["seconds"], b["seconds"]),
                ratio(a["write_bytes"], b["write_bytes"]), ratio(a["wchar"], b["wchar"]),
                ratio(a["allocated"], b["allocated"]), "",
            ])  # fmt: skip
    header = ["prealloc", "daemon", "seconds", "write_bytes MiB", "wchar MiB", "allocated MiB",
              "qemu-img check"]  # fmt: skip
    lines.append(table(header, rows))
    if "metadata_maps_equal" in report:
        same = "equal" if report["metadata_maps_equal"] else "DIFFERENT"
        lines.append(f"qemu-img map of the two metadata images, host offsets left out: {same}")

    lines += ["", "(2) known zero on a fresh 1 TiB metadata-preallocated image"]
    rows = []
    qsd = daemons.get("qsd-new", {}).get("zero", {})
    for case, z in daemons.get("qmpd", {}).get("zero", {}).items():
        rows.append([
            f"qmpd: {case}", f"{z['add_seconds']:.4f}", f"{z['seconds']:.4f}", _mib(z["rchar"]),
            f"{z['value']}/{z['how']}", f"{z['again_seconds']:.4f}",
        ])  # fmt: skip
    if qsd:
        own = qsd["own"]
        rows.append(["qsd-new: own image", f"{own['add_seconds']:.4f}", "-",
                     _mib(own["add_rchar"]), "(no such query)", "-"])  # fmt: skip
        check = qsd["qemu-img check"]
        rows.append(["qemu-img check (11.1)", "-", f"{check['seconds']:.4f}", "-",
                     "clean" if check["clean"] else "NOT CLEAN", "-"])  # fmt: skip
        qm = daemons.get("qmpd", {}).get("zero", {})
        if qm:
            rows.append([
                "qmpd/qsd add (flag)", ratio(qm["flag"]["add_seconds"], own["add_seconds"]),
                "", "", "", "",
            ])  # fmt: skip
            rows.append([
                "qmpd scan/qemu-img check", "",
                ratio(qm["bit dropped by QEMU"]["seconds"], check["seconds"]), "", "", "",
            ])  # fmt: skip
    header = ["case", "add s", "first query s", "read MiB", "value/how", "again s"]
    lines.append(table(header, rows))
    lines.append(
        "QSD has no x-query-zero-state: compared are blockdev-add, and the scan against "
        "qemu-img check (QEMU reading every L1/L2 table and refcount block)."
    )

    m = report["mirror"]
    lines += [
        "",
        f"(3) mirror of a {m['size'] / GiB:.1f} GiB raw source ({m['percent']}% data, "
        f"{_mib(m['source_data'])} MiB) into a fresh qcow2, no target-is-zero",
    ]
    rows = []
    for name, r in daemons.items():
        x = r["mirror"]
        zs = x["x-zero-stats"]
        rows.append([
            name, f"{x['ready_s']:.3f}", _mib(x["write_bytes"]), _mib(x["wchar"]),
            _mib(x["allocated"]),
            "-" if zs is None else f"{_mib(zs['copied'])}/{_mib(zs['zeroed'])}/"
            f"{_mib(zs['skipped'])}",
            "yes" if x["identical"] else "NO", "clean" if x["check"]["clean"] else "NOT CLEAN",
        ])  # fmt: skip
    if _both(daemons):
        a, b = (daemons[n]["mirror"] for n in DAEMONS)
        rows.append([
            "qmpd/qsd", ratio(a["ready_s"], b["ready_s"]),
            ratio(a["write_bytes"], b["write_bytes"]), ratio(a["wchar"], b["wchar"]),
            ratio(a["allocated"], b["allocated"]), "", "", "",
        ])  # fmt: skip
    header = ["daemon", "ready s", "write_bytes MiB", "wchar MiB", "allocated MiB",
              "copied/zeroed/skipped MiB", "identical", "check"]  # fmt: skip
    lines.append(table(header, rows))
    lines += skipped_lines(report["skipped"])
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-gib", type=float, default=4.0, help="mirror source size (GiB)")
    parser.add_argument("--percent", type=float, default=5.0, help="data share of the source")
    add_common_arguments(parser, DAEMONS, RESULTS)


def main(args: argparse.Namespace) -> int:
    names = selected_daemons(args, DAEMONS)
    if names is None:
        return 2
    size = int(args.size_gib * GiB) // MiB * MiB
    report = run(names, size, args.percent, log=progress_log(args))
    publish(args, report, render(report))
    return 0 if report["daemons"] else 1
