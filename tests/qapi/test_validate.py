"""Argument checking: QEMU's texts, QEMU's choice of the first error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmpd.errors import GenericError
from qmpd.qapi import Schema, load_schema
from tests.support.daemons import RawClient, qsd72_kind, running, why_missing

from .validation_cases import CASES

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def block() -> Schema:
    return load_schema(HERE / "schemas" / "block-mini.json")


def error_of(schema: Schema, command: str, args: dict[str, Any]) -> str | None:
    """The ``desc`` of the error checking raises, None if the arguments pass."""
    try:
        schema.check_arguments(command, args)
    except GenericError as exc:
        return exc.desc
    return None


@pytest.mark.parametrize(("command", "args", "expected"), CASES)
def test_observed_on_qemu72(
    block: Schema, command: str, args: dict[str, Any], expected: str | None
) -> None:
    assert error_of(block, command, args) == expected


# Integer types QSD has no member of (int8, int16, uint8) follow the same
# visitor code as the observed int32/uint16/uint32 cases; the texts below
# are derived from that code (qapi-visit-core.c), not observed.
INT_CASES = [
    ({"i8": 127}, None),
    ({"i8": 128}, "Parameter 'i8' expects int8_t"),
    ({"i8": -129}, "Parameter 'i8' expects int8_t"),
    ({"i16": -32769}, "Parameter 'i16' expects int16_t"),
    ({"i32": 2**31}, "Parameter 'i32' expects int32_t"),
    ({"i32": 1.0}, "Invalid parameter type for 'i32', expected: integer"),
    ({"i64": 2**63 - 1}, None),
    ({"i64": 2**63}, "Invalid parameter type for 'i64', expected: integer"),
    ({"i64": True}, "Invalid parameter type for 'i64', expected: integer"),
    ({"u8": 255}, None),
    ({"u8": 256}, "Parameter 'u8' expects uint8_t"),
    ({"u8": -1}, "Parameter 'u8' expects uint8_t"),
    ({"u8": "1"}, "Parameter 'u8' expects uint64"),
    ({"u16": 65536}, "Parameter 'u16' expects uint16_t"),
    ({"u32": 2**32 - 1}, None),
    ({"u64": 2**64 - 1}, None),
    ({"u64": -(2**63)}, None),  # QEMU wraps negative values, for compatibility
    ({"u64": -(2**63) - 1}, "Parameter 'u64' expects uint64"),
    ({"u64": 2**64}, "Parameter 'u64' expects uint64"),
    ({"sz": -1}, None),
    ({"sz": 0.5}, "Parameter 'sz' expects uint64"),
    ({"num": 1}, None),
    ({"num": 1.5}, None),
    ({"num": 2**70}, None),
    ({"num": "1"}, "Invalid parameter type for 'num', expected: number"),
    ({"num": False}, "Invalid parameter type for 'num', expected: number"),
    ({"nul": None}, None),
    ({"nul": 0}, "Invalid parameter type for 'nul', expected: null"),
    ({"anything": {"a": [1, None, "x"]}}, None),
]


@pytest.mark.parametrize(("args", "expected"), INT_CASES)
def test_scalar_types(block: Schema, args: dict[str, Any], expected: str | None) -> None:
    assert error_of(block, "x-int-types", args) == expected


def test_valid_arguments(block: Schema) -> None:
    valid: list[tuple[str, dict[str, Any]]] = [
        ("qmp_capabilities", {}),
        ("qmp_capabilities", {"enable": ["oob"]}),
        ("query-version", {}),
        ("blockdev-add", {"driver": "null-co", "node-name": "n0", "size": 1 << 30}),
        (
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "top",
                "file": {"driver": "file", "filename": "/tmp/a.qcow2", "aio": "native"},
                "backing": None,
                "overlap-check": {"template": "all", "main-header": True},
                "cache": {"direct": True},
            },
        ),
        (
            "blockdev-add",
            {"driver": "quorum", "children": ["a", {"driver": "null-co"}], "vote-threshold": 1},
        ),
        ("blockdev-mirror", {"device": "a", "target": "b", "sync": "full", "granularity": 65536}),
    ]
    for command, args in valid:
        assert error_of(block, command, args) is None, (command, args)


def test_unknown_command_is_a_caller_bug(block: Schema) -> None:
    with pytest.raises(KeyError):
        block.check_arguments("no-such-command", {})


def test_argument_less_command_fast_path(block: Schema) -> None:
    assert error_of(block, "query-version", {}) is None
    assert error_of(block, "query-version", {"x": 1}) == "Parameter 'x' is unexpected"


def test_event_data_and_returns() -> None:
    schema = load_schema(HERE / "schemas" / "small.json")
    schema.check_event_data("THING_MADE", {"id": "t", "kind": "plain"})
    schema.check_event_data("ALL_GONE", None)
    with pytest.raises(GenericError, match="Parameter 'kind' does not accept value 'x'"):
        schema.check_event_data("THING_MADE", {"id": "t", "kind": "x"})
    with pytest.raises(GenericError):
        schema.check_event_data("ALL_GONE", {})
    with pytest.raises(GenericError):
        schema.check_event_data("THING_MADE", None)
    schema.check_return("make-thing", [{"id": "a"}, {"id": "b", "size": 3}])
    schema.check_return("ping", {})
    with pytest.raises(GenericError, match=r"Parameter '\[1\].id' is missing"):
        schema.check_return("make-thing", [{"id": "a"}, {}])


def test_commands_and_events_registry(block: Schema) -> None:
    schema = load_schema(HERE / "schemas" / "small.json")
    ping = schema.commands["ping"]
    assert (ping.allow_oob, ping.has_arguments, ping.has_return) == (True, False, False)
    assert schema.commands["use-thing"].features == ("deprecated",)
    assert schema.commands["make-thing"].has_arguments
    assert schema.events["ALL_GONE"].has_data is False
    assert schema.events["THING_MADE"].has_data is True
    with pytest.raises(TypeError):
        schema.commands["x"] = ping  # type: ignore[index]


def test_real_schema_loads() -> None:
    schema = load_schema()
    # The control commands come first, in schema order; later files add more.
    assert list(schema.commands)[:5] == [
        "qmp_capabilities",
        "query-version",
        "query-commands",
        "quit",
        "query-qmp-schema",
    ]
    assert error_of(schema, "query-qmp-schema", {"x": 1}) == "Parameter 'x' is unexpected"
    assert error_of(schema, "qmp_capabilities", {"enable": ["bogus"]}) == (
        "Parameter 'null' does not accept value 'bogus'"
    )


@pytest.mark.qemu
def test_cases_still_hold_on_qsd72() -> None:
    """Replay CASES against a live QSD 7.2: the literals above are what it says."""
    kind = qsd72_kind()
    if kind is None:
        pytest.skip(why_missing("qsd-7.2"))
    with running(kind) as daemon, RawClient(daemon.sockets[0]) as client:
        client.negotiate()
        for command, args, expected in CASES:
            client.send(json.dumps({"execute": command, "arguments": args}).encode())
            while True:
                reply = json.loads(client.readline())
                if "event" not in reply:
                    break
            got = reply["error"]["desc"] if "error" in reply else None
            assert got == expected, (command, args)


# -- the fast path must agree with jsonschema --------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "raw", "file", "null-co", "qcow2", "quorum", "oob", "full", "unix"]),
)
_keys = st.sampled_from(
    [
        "driver",
        "node-name",
        "file",
        "filename",
        "size",
        "cache",
        "direct",
        "children",
        "vote-threshold",
        "backing",
        "overlap-check",
        "template",
        "aio",
        "bogus",
        "server",
        "type",
        "path",
        "latency-ns",
        "enable",
        "device",
        "target",
        "sync",
        "granularity",
    ]
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    command=st.sampled_from(
        [
            "blockdev-add",
            "blockdev-mirror",
            "qmp_capabilities",
            "blockdev-create",
            "object-add",
            "x-int-types",
        ]
    ),
    args=st.dictionaries(_keys, _json, max_size=6),
)
def test_fast_path_agrees_with_jsonschema(
    block: Schema, command: str, args: dict[str, Any]
) -> None:
    checker = block._arguments[command]
    assert checker.is_valid(args) == checker.validator.is_valid(args)


@pytest.mark.parametrize(("command", "args", "expected"), CASES)
def test_fast_path_rejects_observed_errors(
    block: Schema, command: str, args: dict[str, Any], expected: str | None
) -> None:
    checker = block._arguments.get(command)
    if checker is not None:
        assert checker.is_valid(args) is (expected is None)
        assert checker.validator.is_valid(args) is (expected is None)


def _mutations(value: Any) -> Iterator[Any]:
    """``value`` with one change somewhere: a member dropped, or a value replaced."""
    replacements: list[Any] = [None, True, 0, -1, 2**32, 1.0, "", "raw", [], {}]
    if isinstance(value, dict):
        for key in value:
            yield {k: v for k, v in value.items() if k != key}
            for inner in _mutations(value[key]):
                yield {**value, key: inner}
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for inner in _mutations(item):
                yield [*value[:i], inner, *value[i + 1 :]]
    yield from replacements


def test_fast_path_agrees_on_mutations(block: Schema) -> None:
    seeds = [(c, a) for c, a, _ in CASES] + [
        (
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "top",
                "file": {"driver": "file", "filename": "/tmp/a.qcow2", "aio": "native"},
                "backing": {"driver": "null-co", "size": 512},
                "overlap-check": {"template": "all"},
                "encrypt": {"format": "luks", "key-secret": "s"},
            },
        ),
        (
            "blockdev-add",
            {"driver": "quorum", "children": ["a", {"driver": "null-co"}], "vote-threshold": 1},
        ),
        ("x-int-types", {"i8": 1, "u16": 2, "u64": 3, "sz": 4, "num": 5, "nul": None}),
    ]
    checked = 0
    for command, args in seeds:
        checker = block._arguments.get(command)
        if checker is None:
            continue  # no arguments: no validator, see the fast-path test
        for mutated in _mutations(args):
            if isinstance(mutated, dict):
                assert checker.is_valid(mutated) == checker.validator.is_valid(mutated), mutated
                checked += 1
    assert checked > 1000
