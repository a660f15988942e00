"""query-qmp-schema: exact output on a small schema, shape of the real one, libvirt probes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qmpd.qapi import Schema, load_schema

from .libvirt import schema_path_exists

HERE = Path(__file__).parent
QSD72 = json.loads((HERE / "data" / "qsd-7.2-query-qmp-schema.json").read_text())


@pytest.fixture(scope="module")
def real() -> Schema:
    return load_schema()


def test_small_schema_exact() -> None:
    # Hand-checked against QEMU's rules: commands and events first, then
    # types in order of first use (breadth first), numbered as first used;
    # int8/int16/uint32 appear as 'int', [int16] as '[int]'; the union lists
    # its unlisted enum value 'bare' last with the empty object.
    schema = load_schema(HERE / "schemas" / "small.json")
    assert schema.introspect() == [
        {"name": "make-thing", "meta-type": "command", "arg-type": "0", "ret-type": "[1]"},
        {
            "name": "use-thing",
            "meta-type": "command",
            "arg-type": "2",
            "ret-type": "3",
            "features": ["deprecated"],
        },
        {
            "name": "ping",
            "meta-type": "command",
            "arg-type": "3",
            "ret-type": "3",
            "allow-oob": True,
        },
        {"name": "THING_MADE", "meta-type": "event", "arg-type": "4"},
        {"name": "ALL_GONE", "meta-type": "event", "arg-type": "3"},
        {
            "name": "0",
            "meta-type": "object",
            "members": [
                {"name": "kind", "type": "5"},
                {"name": "note", "type": "str", "default": None, "features": ["unstable"]},
            ],
            "tag": "kind",
            "variants": [
                {"case": "fancy", "type": "6"},
                {"case": "plain", "type": "1"},
                {"case": "bare", "type": "3"},
            ],
        },
        {"name": "[1]", "meta-type": "array", "element-type": "1"},
        {
            "name": "1",
            "meta-type": "object",
            "members": [
                {"name": "id", "type": "str"},
                {"name": "size", "type": "int", "default": None},
            ],
        },
        {
            "name": "2",
            "meta-type": "object",
            "members": [
                {"name": "ref", "type": "7"},
                {"name": "counts", "type": "[int]", "default": None},
            ],
        },
        {"name": "3", "meta-type": "object", "members": []},
        {
            "name": "4",
            "meta-type": "object",
            "members": [{"name": "id", "type": "str"}, {"name": "kind", "type": "5"}],
        },
        {
            "name": "5",
            "meta-type": "enum",
            "members": [
                {"name": "plain"},
                {"name": "fancy", "features": ["deprecated"]},
                {"name": "bare"},
            ],
            "values": ["plain", "fancy", "bare"],
        },
        {"name": "str", "meta-type": "builtin", "json-type": "string"},
        {
            "name": "6",
            "meta-type": "object",
            "members": [
                {"name": "id", "type": "str"},
                {"name": "size", "type": "int", "default": None},
                {"name": "level", "type": "int"},
                {"name": "tags", "type": "[str]", "default": None},
            ],
            "features": ["shiny"],
        },
        {"name": "int", "meta-type": "builtin", "json-type": "int"},
        {
            "name": "7",
            "meta-type": "alternate",
            "members": [{"type": "0"}, {"type": "str"}, {"type": "null"}],
        },
        {"name": "[int]", "meta-type": "array", "element-type": "int"},
        {"name": "[str]", "meta-type": "array", "element-type": "str"},
        {"name": "null", "meta-type": "builtin", "json-type": "null"},
    ]


def test_introspection_is_cached(real: Schema) -> None:
    assert real.introspect() is real.introspect()


def _refs(entry: dict[str, Any]) -> list[str]:
    refs = [entry[k] for k in ("arg-type", "ret-type", "element-type") if k in entry]
    refs += [m["type"] for m in entry.get("members", []) if "type" in m]
    refs += [v["type"] for v in entry.get("variants", [])]
    return refs


@pytest.mark.parametrize("source", ["ours", "qsd-7.2"])
def test_well_formed(real: Schema, source: str) -> None:
    """Unique names, no dangling reference, masked names numbered in order of appearance."""
    entries = real.introspect() if source == "ours" else QSD72
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names))
    for entry in entries:
        assert all(ref in names for ref in _refs(entry)), entry
    masked = [int(n) for n in names if n.isdigit()]
    assert masked == sorted(masked)  # emitted in order of first use
    if source == "ours":
        # QEMU numbers types used only under a false 'if' too and then
        # compiles them out, so its numbering has gaps; ours has none.
        assert masked == list(range(len(masked)))
    metas = [e["meta-type"] for e in entries]
    first_type = next(i for i, m in enumerate(metas) if m not in ("command", "event"))
    assert all(m not in ("command", "event") for m in metas[first_type:])


def test_returns_match_schema_info(real: Schema) -> None:
    # Our output, and QEMU 7.2's real one, both satisfy our SchemaInfo types.
    real.check_return("query-qmp-schema", real.introspect())
    real.check_return("query-qmp-schema", QSD72)


def _expand(name: str, by_name: dict[str, dict[str, Any]], stack: tuple[str, ...] = ()) -> Any:
    """A type reference with masked names replaced by structure (for comparison)."""
    if name in stack:
        return "<recursion>"
    entry = by_name[name]
    stack = (*stack, name)
    meta = entry["meta-type"]
    if meta == "builtin":
        return name
    if meta == "array":
        return ["array-of", _expand(entry["element-type"], by_name, stack)]
    if meta == "enum":
        return {"enum": entry["members"], "values": entry["values"]}
    if meta == "alternate":
        return {"alternate": [_expand(m["type"], by_name, stack) for m in entry["members"]]}
    if meta == "object":
        members = [{**m, "type": _expand(m["type"], by_name, stack)} for m in entry["members"]]
        out: dict[str, Any] = {"members": members}
        if "tag" in entry:
            out["tag"] = entry["tag"]
            out["variants"] = {
                v["case"]: _expand(v["type"], by_name, stack) for v in entry["variants"]
            }
        return out
    body = {k: _expand(entry[k], by_name, stack) for k in ("arg-type", "ret-type") if k in entry}
    return {**body, "features": entry.get("features", []), "oob": entry.get("allow-oob", False)}


@pytest.mark.parametrize(
    "command", ["qmp_capabilities", "query-version", "query-commands", "quit", "query-qmp-schema"]
)
def test_same_structure_as_qsd72(real: Schema, command: str) -> None:
    ours = {e["name"]: e for e in real.introspect()}
    theirs = {e["name"]: e for e in QSD72}
    assert _expand(command, ours) == _expand(command, theirs)


QSD72_PROBES = [
    # libvirt's own probes, answered by the real QEMU 7.2 schema.
    ("blockdev-add/arg-type/+file/aio/^io_uring", True),
    ("blockdev-add/arg-type/+file/drop-cache", True),
    ("blockdev-add/arg-type/+file/$dynamic-auto-read-only", True),
    ("blockdev-snapshot/$allow-write-only-overlay", True),
    ("query-named-block-nodes/arg-type/flat", True),
    ("block-commit/arg-type/*top", True),
    ("block-commit/arg-type/*device", False),  # mandatory member
    ("blockdev-add/arg-type/+qcow2/discard-no-unref", False),  # QEMU 8.1
    ("blockdev-mirror/arg-type/target-is-zero", False),  # QEMU 10.1
    ("blockdev-add/arg-type/+qcow2/file/+file/filename", True),  # through an alternate
    ("blockdev-add/arg-type/+quorum/children/+raw/file", True),  # through an array
    ("JOB_STATUS_CHANGE/arg-type/status/^concluded", True),
    ("query-version/ret-type/qemu/major/!int", True),
    ("query-version/ret-type/qemu/major/!string", False),
    ("x-debug-query-block-graph/$unstable", True),
    ("no-such-command/arg-type", False),
]


@pytest.mark.parametrize(("query", "expected"), QSD72_PROBES)
def test_libvirt_helper_on_qsd72(query: str, expected: bool) -> None:
    assert schema_path_exists(query, QSD72) is expected


OUR_PROBES = [
    ("qmp_capabilities/arg-type/*enable/^oob", True),
    ("qmp_capabilities/arg-type/enable/^bogus", False),
    ("query-version/ret-type/qemu/micro/!int", True),
    ("query-version/ret-type/package/!string", True),
    ("query-commands/ret-type/name", True),
    ("query-qmp-schema/ret-type/+object/*variants/case", True),
    ("query-qmp-schema/ret-type/+enum/members/*features", True),
    ("query-qmp-schema/ret-type/+command/*allow-oob/!boolean", True),
    ("query-qmp-schema/ret-type/meta-type/^alternate", True),
    ("query-qmp-schema/ret-type/+builtin/json-type/^value", True),
    ("quit/arg-type/anything", False),
]


@pytest.mark.parametrize(("query", "expected"), OUR_PROBES)
def test_libvirt_probes_on_our_schema(real: Schema, query: str, expected: bool) -> None:
    assert schema_path_exists(query, real.introspect()) is expected


BLOCK_PROBES = [
    ("blockdev-add/arg-type/+file/$dynamic-auto-read-only", True),
    ("blockdev-add/arg-type/+file/aio/^native", True),
    ("blockdev-add/arg-type/+qcow2/discard-no-unref", True),
    ("blockdev-add/arg-type/+qcow2/file/+file/filename", True),
    ("blockdev-add/arg-type/+qcow2/backing/+null-co/*latency-ns", True),
    ("blockdev-add/arg-type/+qcow2/overlap-check/^cached", True),
    ("blockdev-add/arg-type/+qcow2/overlap-check/template/^all", True),
    ("blockdev-add/arg-type/+quorum/children/+raw/file", True),
    ("blockdev-add/arg-type/+quorum/*vote-threshold", False),
    ("blockdev-mirror/arg-type/granularity/!int", True),
    ("object-add/arg-type/+memory-backend-ram/host-nodes/!int", True),
]


@pytest.mark.parametrize(("query", "expected"), BLOCK_PROBES)
def test_libvirt_probes_on_block_schema(query: str, expected: bool) -> None:
    schema = load_schema(HERE / "schemas" / "block-mini.json")
    assert schema_path_exists(query, schema.introspect()) is expected
