"""The sans-I/O session: negotiation table, request checks, id echo, framing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qmpd.errors import CommandNotFound, GenericError
from qmpd.protocol.session import (
    EOF,
    NEED_DATA,
    NO_ID,
    Rejected,
    Request,
    Session,
    SessionState,
    encode_event,
)

VERSION = {"qemu": {"major": 11, "minor": 1, "micro": 0}, "package": "qmpd test"}


def feed(session: Session, data: bytes) -> list[Any]:
    session.receive_data(data)
    out = []
    while (event := session.next_event()) is not NEED_DATA:
        out.append(event)
        if event is EOF:
            break
    return out


def rejected(event: Any) -> dict[str, Any]:
    assert isinstance(event, Rejected), event
    value = json.loads(event.reply)
    assert isinstance(value, dict)
    return value


def negotiated() -> Session:
    s = Session(VERSION)
    s.negotiate(["oob"])
    return s


def test_greeting() -> None:
    g = Session(VERSION).greeting()
    assert g.endswith(b"\r\n")
    assert json.loads(g) == {"QMP": {"version": VERSION, "capabilities": ["oob"]}}


def test_before_negotiation_only_qmp_capabilities_passes() -> None:
    s = Session(VERSION)
    [event] = feed(s, b'{"execute": "query-version", "id": 1}')
    assert rejected(event) == {
        "id": 1,
        "error": {
            "class": "CommandNotFound",
            "desc": "Expecting capabilities negotiation with 'qmp_capabilities'",
        },
    }
    [event] = feed(s, b'{"execute": "qmp_capabilities"}')
    assert event == Request("qmp_capabilities", {}, NO_ID, False)


def test_negotiate_twice_and_unknown_capability() -> None:
    s = Session(VERSION)
    with pytest.raises(GenericError, match="Capability bogus not available"):
        s.negotiate(["bogus"])
    assert s.state is SessionState.NEGOTIATING
    s.negotiate([])
    assert s.state is SessionState.COMMAND
    assert not s.oob_enabled
    with pytest.raises(CommandNotFound, match="already complete"):
        s.negotiate([])


@pytest.mark.parametrize(
    ("data", "desc"),
    [
        (b"[1]", "QMP input must be a JSON object"),
        (b'"x"', "QMP input must be a JSON object"),
        (b'{"execute": 1}', "QMP input member 'execute' must be a string"),
        (b'{"execute": "x", "arguments": []}', "QMP input member 'arguments' must be an object"),
        (b'{"execute": "x", "arguments": null}', "QMP input member 'arguments' must be an object"),
        (b'{"execute": "x", "foo": 1}', "QMP input member 'foo' is unexpected"),
        (b'{"execute": "x", "__x": 1}', "QMP input member '__x' is unexpected"),
        (b"{}", "QMP input lacks member 'execute'"),
        (b'{"id": 5}', "QMP input lacks member 'execute'"),
    ],
)
def test_request_shape_errors(data: bytes, desc: str) -> None:
    s = negotiated()
    [event] = feed(s, data)
    reply = rejected(event)
    assert reply["error"] == {"class": "GenericError", "desc": desc}


def test_exec_oob_only_when_enabled() -> None:
    s = Session(VERSION)
    s.negotiate([])
    [event] = feed(s, b'{"exec-oob": "x"}')
    assert rejected(event)["error"]["desc"] == "QMP input member 'exec-oob' is unexpected"
    s = negotiated()
    [event] = feed(s, b'{"exec-oob": "x", "id": 3}')
    assert event == Request("x", {}, 3, True)
    [event] = feed(s, b'{"execute": "x", "exec-oob": "y"}')
    assert rejected(event)["error"]["desc"] == (
        "QMP input member 'execute' clashes with 'exec-oob'"
    )


@pytest.mark.parametrize(
    "request_id", ["a", 0, -5, 1.5, None, {}, [], [1, {"a": None}], "", True, 2**64 - 1]
)
def test_id_echoed_verbatim_on_errors_and_replies(request_id: Any) -> None:
    s = negotiated()
    data = json.dumps({"execute": "x", "bogus": 1, "id": request_id}).encode()
    [event] = feed(s, data)
    assert rejected(event)["id"] == request_id
    reply = json.loads(s.reply(request_id, {}))
    assert reply == {"return": {}, "id": request_id}


def test_no_id_means_no_id_member() -> None:
    s = negotiated()
    assert json.loads(s.reply(NO_ID, {})) == {"return": {}}
    assert json.loads(s.error(NO_ID, GenericError("x"))) == {
        "error": {"class": "GenericError", "desc": "x"}
    }


def test_json_errors_have_no_id() -> None:
    s = negotiated()
    [event] = feed(s, b'{"execute": "x", "id": 1,}')
    reply = rejected(event)
    assert "id" not in reply
    # QEMU 11.1 prefixes the position in the connection's input.
    assert reply["error"]["desc"] == "1:26: JSON parse error, expecting key"


def test_replies_and_rejections_keep_input_order() -> None:
    s = negotiated()
    events = feed(s, b'{"execute": "a"}[]{"execute": "b"}{"execute": 1}')
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Request", "Rejected", "Request", "Rejected"]


def test_eof() -> None:
    s = negotiated()
    assert feed(s, b'{"execute": "a"}{"exec') == [Request("a", {}, NO_ID, False)]
    assert feed(s, b"") == [EOF]


def test_event_encoding() -> None:
    ev = json.loads(encode_event("STOP", None, (5, 7)))
    assert ev == {"timestamp": {"seconds": 5, "microseconds": 7}, "event": "STOP"}
    ev = json.loads(encode_event("X", {"a": 1}, (5, 7)))
    assert ev["data"] == {"a": 1}


@pytest.mark.parametrize(
    ("data", "desc"),
    [
        # Observed on QEMU 7.2: with several faults the first in QDict order wins.
        (b'{"foo":1,"bar":1,"execute":"x"}', "QMP input member 'bar' is unexpected"),
        (b'{"bar":1,"foo":1,"execute":"x"}', "QMP input member 'bar' is unexpected"),
        (b'{"foo":1,"execute":5}', "QMP input member 'execute' must be a string"),
        (
            b'{"foo":1,"arguments":1,"execute":"x"}',
            "QMP input member 'arguments' must be an object",
        ),
        (b'{"exec-oob":"y","execute":"x"}', "QMP input member 'execute' clashes with 'exec-oob'"),
    ],
)
def test_several_faults_named_in_qemu_order(data: bytes, desc: str) -> None:
    [event] = feed(negotiated(), data)
    assert rejected(event)["error"]["desc"] == desc
