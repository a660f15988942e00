"""libvirt's schema query language, for testing that probes resolve.

libvirt (src/qemu/qemu_qapi.c) decides what QEMU supports by walking the
``query-qmp-schema`` output with slash-separated queries such as
``blockdev-add/arg-type/+file/aio/^io_uring``.  This is an independent
rendering of that walk, written from its documented behaviour:

* the first component names a command or event;
* ``arg-type`` / ``ret-type`` follow that member of a command or event;
* ``name`` follows the object member ``name``; ``*name`` also requires it
  to be optional (to carry ``default``);
* ``+case`` follows the union variant for ``case``;
* ``^value`` requires an enum value (a following ``$feat`` then asks for a
  feature of that value); ``!type`` requires a builtin's JSON type;
* ``$feat`` requires a feature of the current entity;
* arrays are looked through to their element type, and for an alternate
  each branch is tried in turn.
"""

from __future__ import annotations

from typing import Any

Entries = dict[str, dict[str, Any]]


def schema_path_exists(query: str, schema: list[dict[str, Any]]) -> bool:
    """Whether libvirt's ``query`` resolves in the SchemaInfo list ``schema``."""
    by_name = {entry["name"]: entry for entry in schema}
    first, *rest = query.split("/")
    entry = by_name.get(first)
    if entry is None or entry["meta-type"] not in ("command", "event"):
        return False
    return _walk(entry, rest, by_name)


def _walk(entry: dict[str, Any], comps: list[str], by_name: Entries) -> bool:
    if not comps:
        return True
    meta = entry["meta-type"]
    if meta == "array":
        return _walk(by_name[entry["element-type"]], comps, by_name)
    if meta == "alternate":
        return any(_walk(by_name[m["type"]], comps, by_name) for m in entry["members"])
    comp, rest = comps[0], comps[1:]
    if comp.startswith("$"):
        return not rest and comp[1:] in entry.get("features", [])
    if meta in ("command", "event"):
        if comp in ("arg-type", "ret-type") and comp in entry:
            return _walk(by_name[entry[comp]], rest, by_name)
        return False
    if meta == "object":
        if comp.startswith("+"):
            variant = next((v for v in entry.get("variants", []) if v["case"] == comp[1:]), None)
            return variant is not None and _walk(by_name[variant["type"]], rest, by_name)
        optional = comp.startswith("*")
        name = comp.removeprefix("*")
        member = next((m for m in entry["members"] if m["name"] == name), None)
        if member is None or (optional and "default" not in member):
            return False
        return _walk(by_name[member["type"]], rest, by_name)
    if meta == "enum" and comp.startswith("^"):
        value = next((m for m in entry.get("members", []) if m["name"] == comp[1:]), None)
        if value is None:
            return comp[1:] in entry.get("values", []) and not rest
        if not rest:
            return True
        return (
            len(rest) == 1 and rest[0].startswith("$") and rest[0][1:] in value.get("features", [])
        )
    if meta == "builtin" and comp.startswith("!"):
        return not rest and entry["json-type"] == comp[1:]
    return False


__all__ = ["schema_path_exists"]
