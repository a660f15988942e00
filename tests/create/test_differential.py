"""blockdev-create against QEMU 11.1's qemu-storage-daemon: same script, same transcript.

Both daemons run as processes with the same command line; a raw client
sends each step and records every message up to the reply, then, for
steps that start a job, up to the job's ``concluded``.  Replies and events
must agree in order and content (timestamps dropped, each daemon's
scratch directory written as ``$DIR``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.differential.kinds import find_kind
from tests.support.daemons import DaemonKind, RawClient, running

pytestmark = pytest.mark.qemu

Step = tuple[str, dict[str, Any], bool]  # command, arguments, wait for concluded


def _file(name: str, size: int = 1 << 20, **extra: Any) -> dict[str, Any]:
    return {"driver": "file", "filename": f"$DIR/{name}", "size": size, **extra}


SCRIPT: list[Step] = [
    # success, each preallocation; stays concluded until dismissed
    ("blockdev-create", {"job-id": "c0", "options": _file("off.img")}, True),
    ("query-jobs", {}, False),
    ("query-block-jobs", {}, False),
    ("job-dismiss", {"id": "c0"}, False),
    ("blockdev-create", {"job-id": "c1", "options": _file("fa.img", preallocation="falloc")}, True),
    ("blockdev-create", {"job-id": "c2", "options": _file("fu.img", preallocation="full")}, True),
    ("query-jobs", {}, False),
    ("job-dismiss", {"id": "c2"}, False),
    ("job-dismiss", {"id": "c1"}, False),
    # failures inside the job: before the first yield, and after it
    ("blockdev-create", {"job-id": "e0", "options": _file("no/such/dir")}, True),
    (
        "blockdev-create",
        {"job-id": "e1", "options": _file("m.img", preallocation="metadata")},
        True,
    ),
    (
        "blockdev-create",
        {"job-id": "e2", "options": _file("x.img", **{"extent-size-hint": -1})},
        True,
    ),
    ("blockdev-create", {"job-id": "e3", "options": _file("n.img", size=-5)}, True),
    ("query-jobs", {}, False),
    # command errors
    ("blockdev-create", {"job-id": "e0", "options": _file("dup.img")}, False),
    ("blockdev-create", {"job-id": "1c", "options": _file("bad.img")}, False),
    ("blockdev-create", {"job-id": "r", "options": {"driver": "raw"}}, False),
    ("blockdev-create", {"job-id": "r", "options": {"driver": "null-co"}}, False),
    ("blockdev-create", {"job-id": "r", "options": {"driver": "file", "size": 1}}, False),
    ("job-dismiss", {"id": "e0"}, False),
    ("job-dismiss", {"id": "e1"}, False),
    ("job-dismiss", {"id": "e2"}, False),
    ("job-dismiss", {"id": "e3"}, False),
    ("job-dismiss", {"id": "e3"}, False),
    ("query-jobs", {}, False),
]


def _render(message: dict[str, Any], workdir: str) -> str:
    message = dict(message)
    message.pop("timestamp", None)
    text = json.dumps(message, sort_keys=True)
    return text.replace(workdir, "$DIR")


def transcript(kind: DaemonKind) -> list[str]:
    with running(kind) as daemon, RawClient(daemon.sockets[0], timeout=30) as client:
        client.negotiate()
        workdir = os.path.realpath(daemon.workdir)
        out: list[str] = []
        for command, arguments, wait in SCRIPT:
            args = json.loads(json.dumps(arguments).replace("$DIR", workdir))
            client.send(json.dumps({"execute": command, "arguments": args}).encode())
            job = args.get("job-id")
            concluded = False
            replied = False
            while not replied or (wait and not concluded):
                message = json.loads(client.readline())
                out.append(_render(message, workdir))
                if "event" not in message:
                    replied = True
                    wait = wait and "return" in message
                elif message["data"] == {"id": job, "status": "concluded"}:
                    concluded = True
        return out


@pytest.fixture(scope="module")
def reference() -> list[str]:
    return transcript(find_kind("qsd-new"))


def test_create_transcripts_match(reference: list[str]) -> None:
    mine = transcript(find_kind("qmpd"))
    assert mine == reference
