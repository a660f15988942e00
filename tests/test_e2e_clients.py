"""End to end: real QMP clients talking to a qmpd process over a Unix socket.

Two clients that people actually use: qemu.qmp's asyncio ``QMPClient``
(what iotests and most Python tooling use) and its ``qmp-shell``.  Both are
picky in ways a hand-written test is not: QMPClient sends compact JSON
without a newline, negotiates ``oob`` when offered, and treats an error
without the request's id as a fatal protocol violation; qmp-shell asks for
``query-commands`` at start-up.  Each test also runs against the real
qemu-storage-daemons, which keeps its expectations honest; those runs skip
when QEMU is absent.

pytest runs in trio mode, so these are plain ``def`` tests driving asyncio
with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from tests.differential.kinds import find_kind
from tests.support.daemons import Daemon, running

QMP_SHELL = Path(sys.executable).parent / "qmp-shell"


KINDS = ["qmpd", "qsd-new", "qsd-7.2"]


@pytest.fixture(scope="module", params=KINDS)
def daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """One daemon per kind for the tests that leave it running."""
    with running(find_kind(request.param)) as started:
        yield started


@pytest.fixture(params=KINDS)
def fresh_daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A daemon of its own, for a test that makes it quit."""
    with running(find_kind(request.param)) as started:
        yield started


def _is_version_info(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"qemu", "package"}
        and isinstance(value["package"], str)
        and isinstance(value["qemu"], dict)
        and set(value["qemu"]) == {"major", "minor", "micro"}
        and all(type(v) is int for v in value["qemu"].values())
    )


async def _session(path: str) -> dict[str, Any]:
    """One QMPClient session; returns what it saw for the test to check."""
    seen: dict[str, Any] = {}
    qmp = QMPClient("e2e")
    await qmp.connect(path)
    try:
        assert qmp.greeting is not None
        seen["greeting"] = qmp.greeting._asdict()
        seen["version"] = await qmp.execute("query-version")
        seen["commands"] = await qmp.execute("query-commands")
        seen["schema"] = await qmp.execute("query-qmp-schema")
        errors = []
        for cmd, args in [
            ("no-such-command", None),
            ("query-version", {"bogus": 1}),
            ("qmp_capabilities", None),
        ]:
            try:
                await qmp.execute(cmd, args)
            except ExecuteError as exc:
                errors.append((exc.error_class, str(exc)))
        seen["errors"] = errors
        # Still usable after errors: a failed command must not end the session.
        seen["version-again"] = await qmp.execute("query-version")
    finally:
        await qmp.disconnect()
    return seen


def test_qmpclient_session(daemon: Daemon) -> None:
    seen = asyncio.run(_session(daemon.sockets[0]))
    greeting = seen["greeting"]["QMP"]
    assert _is_version_info(greeting["version"])
    assert greeting["capabilities"] == ["oob"]
    assert seen["version"] == greeting["version"] == seen["version-again"]
    names = {entry["name"] for entry in seen["commands"]}
    assert names >= {
        "qmp_capabilities",
        "query-version",
        "query-commands",
        "query-qmp-schema",
        "quit",
    }
    schema_commands = {e["name"] for e in seen["schema"] if e["meta-type"] == "command"}
    assert schema_commands == names
    assert seen["errors"] == [
        ("CommandNotFound", "The command no-such-command has not been found"),
        ("GenericError", "Parameter 'bogus' is unexpected"),
        ("CommandNotFound", "Capabilities negotiation is already complete, command ignored"),
    ]


async def _two_sessions_then_quit(path: str) -> list[Any]:
    results: list[Any] = []
    for _ in range(2):  # a socket monitor serves client after client
        qmp = QMPClient("e2e")
        await qmp.connect(path)
        results.append(await qmp.execute("query-version"))
        await qmp.disconnect()
    qmp = QMPClient("e2e")
    await qmp.connect(path)
    try:
        results.append(await qmp.execute("quit"))
    finally:
        # The server hangs up after its reply; whether QMPClient's reader
        # sees that EOF before disconnect() is a race, with QEMU too.
        with contextlib.suppress(EOFError):
            await qmp.disconnect()
    return results


def test_qmpclient_reconnect_and_quit(fresh_daemon: Daemon) -> None:
    first, second, quit_reply = asyncio.run(_two_sessions_then_quit(fresh_daemon.sockets[0]))
    assert _is_version_info(first)
    assert first == second
    assert quit_reply == {}
    assert fresh_daemon.proc.wait(timeout=10) == 0


def _shell(daemon: Daemon, stdin: str, *options: str) -> list[str]:
    """Run qmp-shell with ``stdin``; return the text after each ``(QEMU) `` prompt."""
    done = subprocess.run(
        [str(QMP_SHELL), *options, daemon.sockets[0]],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    head, *answers = done.stdout.split("(QEMU) ")
    assert head.startswith("Welcome to the QMP low-level shell!\nConnected to QEMU "), head
    return [answer.strip() for answer in answers]


def test_qmp_shell(daemon: Daemon) -> None:
    answers = _shell(daemon, 'query-version\nno-such-command\nqmp_capabilities enable=["x"]\n')
    assert answers[-1] == ""  # the prompt left at end of input
    version, unknown, bad_enum = (json.loads(a) for a in answers[:-1])
    assert set(version) == {"return"}
    assert _is_version_info(version["return"])
    assert unknown == {
        "error": {
            "class": "CommandNotFound",
            "desc": "The command no-such-command has not been found",
        }
    }
    # Arguments are checked before qmp_capabilities notices it is too late.
    assert bad_enum == {
        "error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'x'"}
    }


def test_qmp_shell_banner_names_the_version(daemon: Daemon) -> None:
    done = subprocess.run(
        [str(QMP_SHELL), daemon.sockets[0]],
        input="query-version\n",
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    )
    first_answer = done.stdout.split("(QEMU) ")[1]
    qemu = json.loads(first_answer)["return"]["qemu"]
    assert f"Connected to QEMU {qemu['major']}.{qemu['minor']}.{qemu['micro']}\n" in done.stdout


def test_qmp_shell_pretty(daemon: Daemon) -> None:
    answers = _shell(daemon, "query-version\n", "-p")
    pretty = answers[0]
    assert pretty.startswith('{\n    "return": {\n'), pretty
    version = json.loads(pretty)
    assert _is_version_info(version["return"])
