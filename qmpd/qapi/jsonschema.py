"""Phase 4b of the schema pipeline: JSON Schemas for arguments and event data.

Each command's arguments (and each event's data, and each return value) get
a standalone JSON Schema (draft 2020-12) that accepts exactly what QEMU's
QObject input visitor accepts:

* a struct is a closed object (``additionalProperties: false``); a flat
  union is its common members plus one ``if``/``then`` per discriminator
  value whose ``then`` closes the object over base and branch members;
* an alternate admits the JSON types of its branches and picks the branch
  by JSON type alone (``if: {type: ...}`` / ``then``), as QEMU does; a
  number selects an ``int`` branch even when it is ``1.5``, so the error is
  the int's, not the alternate's;
* integer types carry their range.  ``uint64`` and ``size`` also take
  negative int64 values because QEMU wraps them for backward compatibility.
  The "integer" type must be checked by a TypeChecker that refuses floats
  (``1.0``) and booleans: JSON Schema's own rule accepts ``1.0``.

Named types live in ``$defs`` (types may be recursive).  Keys starting with
``x-qapi`` are annotations for :mod:`qmpd.qapi.validate`, which turns
validation errors into QEMU's texts: ``x-qapi-type`` names the QAPI scalar
type, ``x-qapi-alternate`` the alternate whose JSON type check failed.
"""

from __future__ import annotations

from typing import Any

from .model import (
    AlternateType,
    ArrayType,
    BuiltinType,
    Command,
    EnumType,
    Event,
    ObjectType,
    SchemaModel,
    selecting_json_type,
)

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_I64 = (-(2**63), 2**63 - 1)
# Accepted ranges per integer type (QEMU's visitors, see module docstring).
INT_RANGES: dict[str, tuple[int, int]] = {
    "int": _I64,
    "int64": _I64,
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (-(2**63), 2**64 - 1),
    "size": (-(2**63), 2**64 - 1),
}

_SCALARS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "number": {"type": "number"},
    "bool": {"type": "boolean"},
    "null": {"type": "null"},
    "any": {},
}


class _Generator:
    """Builds schemas, collecting the ``$defs`` the current document needs."""

    def __init__(self, model: SchemaModel) -> None:
        self.model = model
        self.bodies: dict[str, dict[str, Any]] = {}

    def ref(self, name: str, defs: dict[str, Any]) -> dict[str, Any]:
        """The schema for a value of type ``name``."""
        typ = self.model.lookup(name)
        if isinstance(typ, BuiltinType):
            if name in INT_RANGES:
                lo, hi = INT_RANGES[name]
                return {"type": "integer", "minimum": lo, "maximum": hi, "x-qapi-type": name}
            return _SCALARS[name]
        if isinstance(typ, ArrayType):
            return {"type": "array", "items": self.ref(typ.element, defs)}
        if name not in defs:
            defs[name] = {}  # placeholder first: the type may refer to itself
            defs[name] = self.body(name, defs)
        return {"$ref": f"#/$defs/{name}"}

    def body(self, name: str, defs: dict[str, Any]) -> dict[str, Any]:
        typ = self.model.lookup(name)
        if isinstance(typ, EnumType):
            return {"type": "string", "enum": list(typ.values)}
        if isinstance(typ, AlternateType):
            return self.alternate(typ, defs)
        assert isinstance(typ, ObjectType)
        return self.object(typ, defs)

    def object(self, typ: ObjectType, defs: dict[str, Any]) -> dict[str, Any]:
        props = {m.name: self.ref(m.type, defs) for m in typ.members}
        schema: dict[str, Any] = {
            "type": "object",
            "properties": props,
            "required": [m.name for m in typ.members if not m.optional],
        }
        if typ.tag is None:
            schema["additionalProperties"] = False
            return schema
        branches = []
        for variant in typ.variants:
            branch = self.model.lookup(variant.type)
            assert isinstance(branch, ObjectType)
            then_props: dict[str, Any] = dict.fromkeys(props, True)
            then_props.update({m.name: self.ref(m.type, defs) for m in branch.members})
            then = {
                "properties": then_props,
                "required": [m.name for m in branch.members if not m.optional],
                "additionalProperties": False,
            }
            cond = {"properties": {typ.tag: {"const": variant.case}}, "required": [typ.tag]}
            branches.append({"if": cond, "then": then})
        schema["allOf"] = branches
        return schema

    def alternate(self, typ: AlternateType, defs: dict[str, Any]) -> dict[str, Any]:
        json_types: list[str] = []
        branches = []
        for branch in typ.branches:
            jtype = selecting_json_type(self.model, branch.type)
            json_types.append(jtype)
            branches.append({"if": {"type": jtype}, "then": self.ref(branch.type, defs)})
        return {"type": json_types, "allOf": branches, "x-qapi-alternate": typ.name}


def _document(gen: _Generator, type_name: str | None) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    if type_name is None:
        root: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
    else:
        root = gen.ref(type_name, defs)
    return {"$schema": DIALECT, **root, "$defs": defs}


def command_arguments_schema(model: SchemaModel, command: Command) -> dict[str, Any]:
    """JSON Schema of ``command``'s ``arguments`` object."""
    return _document(_Generator(model), command.arg_type)


def command_return_schema(model: SchemaModel, command: Command) -> dict[str, Any]:
    """JSON Schema of ``command``'s ``return`` value (``{}`` when it returns nothing)."""
    return _document(_Generator(model), command.ret_type)


def event_data_schema(model: SchemaModel, event: Event) -> dict[str, Any]:
    """JSON Schema of ``event``'s ``data`` object (``{}`` stands for no data)."""
    return _document(_Generator(model), event.arg_type)


__all__ = [
    "DIALECT",
    "INT_RANGES",
    "command_arguments_schema",
    "command_return_schema",
    "event_data_schema",
]
