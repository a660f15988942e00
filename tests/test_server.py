"""The server over in-memory streams: dispatch, events, ordering, back-pressure."""

from __future__ import annotations

import json
import logging

import pytest
import trio

from qmpd.app import App
from qmpd.commands.table import HandlerEntry
from qmpd.server import OUTBOX_LIMIT
from tests.conftest import Connect
from tests.support.loopback import QMPPair


async def test_greeting_and_negotiation(connect: Connect, app: App) -> None:
    pair = await connect(negotiate=False)
    greeting = await pair.read_message()
    assert greeting["QMP"]["version"] == app.version
    assert greeting["QMP"]["capabilities"] == ["oob"]
    assert await pair.execute("query-version") == {
        "id": 1,
        "error": {
            "class": "CommandNotFound",
            "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
        },
    }
    assert await pair.execute("qmp_capabilities", {"enable": ["oob"]}) == {}
    assert await pair.execute("qmp_capabilities") == {
        "id": 3,
        "error": {
            "class": "CommandNotFound",
            "desc": "Capabilities negotiation is already complete, command ignored",
        },
    }


async def test_identity_commands(qmp: QMPPair, app: App) -> None:
    assert await qmp.execute("query-version") == app.version
    names = {c["name"] for c in await qmp.execute("query-commands")}
    assert names == set(app.schema.commands)
    schema = await qmp.execute("query-qmp-schema")
    assert {e["name"] for e in schema if e["meta-type"] == "command"} == names


async def test_unknown_command_and_bad_arguments(qmp: QMPPair) -> None:
    assert (await qmp.execute("nope"))["error"] == {
        "class": "CommandNotFound",
        "desc": "The command nope has not been found",
    }
    assert (await qmp.execute("query-version", {"x": 1}))["error"] == {
        "class": "GenericError",
        "desc": "Parameter 'x' is unexpected",
    }
    # The session goes on.
    assert "qemu" in await qmp.execute("query-version")


async def test_exec_oob_of_an_in_band_command(connect: Connect) -> None:
    qmp = await connect(negotiate=False)
    await qmp.read_message()
    assert await qmp.execute("qmp_capabilities", {"enable": ["oob"]}) == {}
    await qmp.send(b'{"exec-oob": "query-version", "id": "o"}')
    reply = await qmp.read_reply()
    assert reply == {
        "id": "o",
        "error": {
            "class": "GenericError",
            "desc": "The command query-version does not support OOB",
        },
    }


async def test_pipelined_replies_in_order(qmp: QMPPair) -> None:
    data = b"".join(
        json.dumps({"execute": "query-version" if i % 3 else "nope", "id": i}).encode()
        for i in range(200)
    )
    await qmp.send(data + b"[]")
    ids = [(await qmp.read_reply()).get("id") for _ in range(201)]
    assert ids == [*range(200), None]


async def test_bug_in_handler_is_a_generic_error_not_a_crash(
    qmp: QMPPair, app: App, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(ctx: object) -> None:
        raise ZeroDivisionError("boom")

    app.handlers = {**app.handlers, "query-version": HandlerEntry("query-version", broken, False)}
    with caplog.at_level(logging.ERROR, "qmpd.dispatch"):
        reply = await qmp.execute("query-version")
    assert reply["error"]["class"] == "GenericError"
    assert "internal error" in reply["error"]["desc"]
    assert "ZeroDivisionError" in caplog.text
    assert isinstance(await qmp.execute("query-commands"), list)


async def test_events_go_to_negotiated_sessions_only(connect: Connect, app: App) -> None:
    a = await connect()
    b = await connect()
    c = await connect(negotiate=False)
    await c.read_message()  # greeting
    app.events.check = None  # SHUTDOWN stands for any event here
    app.events.emit("SHUTDOWN", None)
    for pair in (a, b):
        ev = await pair.read_message()
        assert ev["event"] == "SHUTDOWN"
        assert set(ev["timestamp"]) == {"seconds", "microseconds"}
        assert "data" not in ev
    # c gets nothing: the next thing it reads is its own reply.
    assert (await c.execute("qmp_capabilities")) == {}
    assert c.events == []


async def test_event_raised_by_a_command_precedes_its_reply(qmp: QMPPair, app: App) -> None:
    def emitting(ctx: object) -> dict[str, str]:
        app.events.emit("SHUTDOWN", None)
        return {"ok": "yes"}

    app.strict = False
    app.events.check = None
    app.handlers = {**app.handlers, "query-version": HandlerEntry("query-version", emitting, False)}
    await qmp.send(b'{"execute": "query-version", "id": 1}')
    assert (await qmp.read_message())["event"] == "SHUTDOWN"
    assert (await qmp.read_message())["id"] == 1


async def test_client_that_stops_reading_is_closed_others_go_on(
    connect: Connect, app: App, caplog: pytest.LogCaptureFixture
) -> None:
    slow = await connect(lockstep=True)  # negotiates, then never reads again
    fast = await connect()
    app.events.check = None
    big = {"reason": "x" * 4096}
    rounds = 0
    with caplog.at_level(logging.WARNING, "qmpd.server"):
        while "not reading" not in caplog.text:
            rounds += 1
            assert rounds < 4 * OUTBOX_LIMIT // 4096, "the slow session was never closed"
            app.events.emit("SHUTDOWN", big)
            assert (await fast.read_message())["data"] == big
    # The slow session's queue never held much more than the limit.
    assert rounds * 4096 < OUTBOX_LIMIT + 3 * 4096 + 65536
    assert isinstance(await fast.execute("query-commands"), list)
    with pytest.raises(EOFError):
        await drain(slow)


async def drain(pair: QMPPair) -> None:
    """Read until the server closes the session (raises EOFError then)."""
    while True:
        await pair.read_message()


async def test_thousand_sessions(connect: Connect) -> None:
    pairs = [await connect(negotiate=False) for _ in range(1000)]

    async def negotiate_and_query(pair: QMPPair) -> None:
        await pair.negotiate()
        assert (await pair.execute("query-version"))["qemu"]["major"] == 11

    async with trio.open_nursery() as nursery:
        for pair in pairs:
            nursery.start_soon(negotiate_and_query, pair)


async def test_quit_replies_then_shuts_down(qmp: QMPPair, app: App) -> None:
    assert await qmp.execute("quit") == {}
    with trio.fail_after(5):
        await app.shutdown.wait()


async def test_pretty_mode(connect: Connect) -> None:
    pair = await connect(negotiate=False, pretty=True)
    lines = []
    while not lines or lines[-1] != b"}\r\n":
        lines.append(await pair.read_line())
    assert lines[0] == b"{\r\n"
    assert all(line.endswith(b"\r\n") for line in lines)
    assert json.loads(b"".join(lines))["QMP"]["capabilities"] == ["oob"]


async def test_deeply_nested_id_is_echoed(qmp: QMPPair) -> None:
    # QEMU accepts nesting up to 1024; the reply must echo the id, not crash.
    request_id = "[" * 1023 + "]" * 1023
    await qmp.send(b'{"execute": "query-version", "id": ' + request_id.encode() + b"}")
    reply = await qmp.read_reply()
    assert "return" in reply
