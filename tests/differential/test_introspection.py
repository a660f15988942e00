"""query-commands and query-qmp-schema, compared on the commands both daemons have.

qmpd grows command by command, so the comparison is on the intersection:
a command qmpd lacks is reported as a note (a skip with the list), a
command qmpd has must be described exactly as QEMU describes it.  Schema
type names other than builtins are masked numbers that differ between
versions, so entries are compared after replacing every type reference by
the structure it names (:func:`resolve`).
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import pytest

from tests.differential.conftest import DaemonPool
from tests.differential.harness import read_message
from tests.differential.kinds import find_kind
from tests.support.daemons import DaemonKind, RawClient

pytestmark = pytest.mark.qemu

# What qmpd implements at the least; everything else QEMU has is a note.
CORE = frozenset(
    {"qmp_capabilities", "query-version", "query-commands", "query-qmp-schema", "quit"}
)

_MASKED = re.compile(r"\[*[0-9]+\]*")
_TYPE_KEYS = frozenset({"arg-type", "ret-type", "element-type", "type"})

Schema = dict[str, dict[str, Any]]


class Returns:
    """``return`` values of argument-less queries, fetched once per daemon."""

    def __init__(self, pool: DaemonPool) -> None:
        self._pool = pool
        self._memo: dict[tuple[str, str], Any] = {}

    def get(self, kind: DaemonKind, command: str) -> Any:
        key = (kind.name, command)
        if key not in self._memo:
            with RawClient(self._pool.get(kind).sockets[0]) as client:
                client.negotiate()
                client.send(json.dumps({"execute": command, "id": "q"}).encode())
                reply = json.loads(read_message(client, timeout=10))
            assert set(reply) == {"return", "id"}, f"{kind.name} {command}: {reply}"
            self._memo[key] = reply["return"]
        return self._memo[key]

    def commands(self, kind: DaemonKind) -> set[str]:
        return {entry["name"] for entry in self.get(kind, "query-commands")}

    def schema(self, kind: DaemonKind) -> Schema:
        return {entry["name"]: entry for entry in self.get(kind, "query-qmp-schema")}


@pytest.fixture(scope="session")
def returns(pool: DaemonPool) -> Returns:
    return Returns(pool)


def resolve(schema: Schema, name: str, stack: tuple[str, ...] = ()) -> Any:
    """The entry called ``name`` with type references replaced by their structure.

    Masked names (``"42"``, ``"[42]"``) are dropped, real ones (commands,
    builtins, arrays of builtins) kept.  A type reached again while being
    resolved (BlockdevRef inside BlockdevOptions...) is shown as a back
    reference by depth, which is the same in every faithful schema.
    """
    if name in stack:
        return {"back-reference": len(stack) - stack.index(name)}
    if name not in schema:
        return {"missing-entry": name}
    out: dict[str, Any] = {}
    for key, value in schema[name].items():
        if key == "name":
            if not _MASKED.fullmatch(value):
                out[key] = value
        elif key in _TYPE_KEYS:
            out[key] = resolve(schema, value, (*stack, name))
        elif key in ("members", "variants"):
            out[key] = [
                {
                    k: resolve(schema, v, (*stack, name)) if k in _TYPE_KEYS else v
                    for k, v in item.items()
                }
                for item in value
            ]
        else:
            out[key] = value
    return out


def _entries(schema: Schema, meta_type: str) -> set[str]:
    return {name for name, entry in schema.items() if entry["meta-type"] == meta_type}


def _newer_schema(returns: Returns) -> Schema:
    """QEMU 11.1's schema, the judge where 7.2 and qmpd differ.

    Skips the calling test when 11.1 is absent: QEMU 7.2 alone cannot tell
    a fault of qmpd's from a change QEMU made after 7.2.
    """
    try:
        return returns.schema(find_kind("qsd-new"))
    except pytest.skip.Exception as absent:
        pytest.skip(f"compared with QEMU 7.2 only where 11.1 agrees, and: {absent}")


def test_query_commands_shape(subject: DaemonKind, returns: Returns) -> None:
    listed = returns.get(subject, "query-commands")
    assert all(isinstance(e, dict) and set(e) == {"name"} for e in listed), listed
    names = [e["name"] for e in listed]
    assert len(names) == len(set(names)), "query-commands lists a command twice"
    assert set(names) >= CORE


#: Commands of QEMU's system emulator (not of qemu-storage-daemon) that qmpd has.
SYSTEM_EMULATOR_COMMANDS = frozenset({"device_add", "device_del", "human-monitor-command"})


def test_no_commands_qemu_lacks(
    subject: DaemonKind, reference: DaemonKind, returns: Returns
) -> None:
    extra = returns.commands(subject) - returns.commands(reference)
    if reference.name == "qsd-7.2":
        # Commands added after 7.2 are fine when 11.1 has them.
        extra -= _entries(_newer_schema(returns), "command")
    # qmpd models guest devices and qemu-io over HMP as QEMU's system
    # emulator does, and extends QMP with x- commands marked unstable.
    extra -= SYSTEM_EMULATOR_COMMANDS
    schema = returns.schema(subject)
    extensions = {name for name in extra if name.startswith("x-")}
    for name in extensions:
        assert "unstable" in schema[name].get("features", []), f"{name} lacks 'unstable'"
    extra -= extensions
    assert not extra, f"{subject.name} offers commands {reference.name} does not have"


def test_note_commands_not_yet_implemented(
    subject: DaemonKind, reference: DaemonKind, returns: Returns
) -> None:
    missing = returns.commands(reference) - returns.commands(subject)
    if missing:
        pytest.skip(
            f"note, not a failure: {subject.name} lacks {len(missing)} of {reference.name}'s "
            f"commands: {', '.join(sorted(missing))}"
        )


def test_schema_lists_the_same_commands_as_query_commands(
    subject: DaemonKind, returns: Returns
) -> None:
    assert _entries(returns.schema(subject), "command") == returns.commands(subject)


def test_schema_well_formed(subject: DaemonKind, returns: Returns) -> None:
    entries = returns.get(subject, "query-qmp-schema")
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), "query-qmp-schema repeats a name"
    schema = returns.schema(subject)
    problems = []
    for name, entry in schema.items():
        meta = entry["meta-type"]
        if meta in ("enum", "object", "alternate") and not name.isdigit():
            problems.append(f"{name}: {meta} types are masked as numbers by QEMU")
        if meta == "array" and name != f"[{entry['element-type']}]":
            problems.append(f"{name}: an array is named [element-type]")
        for key, value in entry.items():
            refs = [value] if key in _TYPE_KEYS else []
            if key in ("members", "variants"):
                refs = [m["type"] for m in value if "type" in m]
            problems += [f"{name}.{key}: no entry {r!r}" for r in refs if r not in schema]
        if entry.get("allow-oob") is False:
            problems.append(f"{name}: allow-oob is present only when true")
    assert not problems


def _diff(a: Any, b: Any, a_name: str, b_name: str) -> str:
    lines = difflib.unified_diff(
        json.dumps(a, indent=1, sort_keys=True).splitlines(),
        json.dumps(b, indent=1, sort_keys=True).splitlines(),
        a_name,
        b_name,
        lineterm="",
    )
    return "\n".join(list(lines)[:80])


@pytest.mark.parametrize("meta_type", ["command", "event"])
def test_schema_entries_match(
    meta_type: str, subject: DaemonKind, reference: DaemonKind, returns: Returns
) -> None:
    mine, theirs = returns.schema(subject), returns.schema(reference)
    common = _entries(mine, meta_type) & _entries(theirs, meta_type)
    if reference.name == "qsd-7.2":
        # Where 7.2 describes an entry unlike 11.1, 11.1 is the reference.
        newer = _newer_schema(returns)
        common = {n for n in common if resolve(newer, n) == resolve(theirs, n)}
    pairs = {
        name: unimplemented_branches_pruned(resolve(mine, name), resolve(theirs, name))
        for name in common
    }
    differing = [name for name in sorted(common) if pairs[name][0] != pairs[name][1]]
    assert not differing, (
        f"{meta_type}s described unlike {reference.name}: {differing}; the first:\n"
        + _diff(*pairs[differing[0]], subject.name, reference.name)
    )


def _is_extension(member: Any) -> bool:
    return (
        isinstance(member, dict)
        and str(member.get("name", "")).startswith("x-")
        and "unstable" in member.get("features", [])
        and "default" in member  # optional, so QEMU's clients never miss it
    )


def unimplemented_branches_pruned(mine: Any, theirs: Any) -> tuple[Any, Any]:
    """Both resolved entries, made comparable where qmpd is knowingly partial.

    qmpd's optional x- members with the unstable feature are dropped.
    qmpd lists every case of a union's enum (every BlockdevDriver) but
    describes the members only of the branches it implements; the others
    point at the empty object.  Such branches are emptied in QEMU's entry
    too, and variants are compared by case (their order means nothing to a
    client; it follows the order branches are written in the schema).
    """
    if isinstance(mine, dict) and isinstance(theirs, dict):
        mine, theirs = dict(mine), dict(theirs)
        if isinstance(mine.get("members"), list) and isinstance(theirs.get("members"), list):
            # qmpd's own members (x-zero-stats...) are extensions, marked unstable.
            known = {m.get("name") for m in theirs["members"] if isinstance(m, dict)}
            mine["members"] = [
                m for m in mine["members"] if not (_is_extension(m) and m["name"] not in known)
            ]
        for key in mine.keys() & theirs.keys():
            if key == "variants":
                mine_cases = {v["case"]: v for v in mine[key]}
                theirs_cases = {v["case"]: v for v in theirs[key]}
                for case, variant in mine_cases.items():
                    if variant["type"].get("members") == [] and case in theirs_cases:
                        theirs_cases[case] = variant
                mine[key] = [mine_cases[c] for c in sorted(mine_cases)]
                theirs[key] = [theirs_cases[c] for c in sorted(theirs_cases)]
            mine[key], theirs[key] = unimplemented_branches_pruned(mine[key], theirs[key])
        return mine, theirs
    if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
        pairs = [unimplemented_branches_pruned(m, t) for m, t in zip(mine, theirs, strict=True)]
        return [m for m, _ in pairs], [t for _, t in pairs]
    return mine, theirs
