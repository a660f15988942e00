"""Phase 3 of the schema pipeline: the semantic model.

Theory of operation: checked expressions are first *declared* (every name,
including the implicit object types QAPI invents for inline argument dicts
and inline union bases, goes into one namespace; a second definition is an
error naming the first), then *resolved*: every type reference must name a
known type, struct bases are flattened into the member list, flat unions get
their discriminator and branches checked, alternates their branches, and
commands and events their argument and return types.  Member names that
would clash in C (QEMU compares them after mapping ``-`` and ``.`` to ``_``)
are rejected too, so a schema that loads here also loads in QEMU.

The result is immutable records that refer to each other *by name*; types
can be recursive (BlockdevOptions -> BlockdevRef -> BlockdevOptions), and
:meth:`SchemaModel.lookup` is the one way across such an edge.  Arrays are
named ``<element>List`` as in QEMU (which is why no type may end in
``List``).  ``if`` conditions are ignored: qmpd has no build options.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .check import check_expressions
from .parser import Expression, Node, ParsedSchema, Pragma, SourceInfo

# QAPI's built-in types and their introspection JSON type.
BUILTINS: dict[str, str] = {
    "str": "string",
    "number": "number",
    "int": "int",
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "int",
    "uint8": "int",
    "uint16": "int",
    "uint32": "int",
    "uint64": "int",
    "size": "int",
    "bool": "boolean",
    "null": "null",
    "any": "value",
}
# QEMU also predefines the enum QType (the JSON type of a value).
QTYPE_VALUES = ("none", "qnull", "qnum", "qstring", "qdict", "qlist", "qbool")

EMPTY = "q_empty"  # the object type without members (QEMU's name)


@dataclass(frozen=True, slots=True)
class BuiltinType:
    name: str
    json_type: str
    info: SourceInfo | None = None


@dataclass(frozen=True, slots=True)
class EnumMember:
    name: str
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EnumType:
    name: str
    info: SourceInfo | None
    members: tuple[EnumMember, ...]
    prefix: str | None = None
    features: tuple[str, ...] = ()

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.members)


@dataclass(frozen=True, slots=True)
class ArrayType:
    name: str  # '<element>List'
    element: str
    info: SourceInfo | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """A member of an object type, or a branch of an alternate (never optional)."""

    name: str
    type: str
    optional: bool = False
    features: tuple[str, ...] = ()
    info: SourceInfo | None = None


@dataclass(frozen=True, slots=True)
class Variant:
    case: str
    type: str


@dataclass(frozen=True, slots=True)
class ObjectType:
    """A struct, or a flat union when ``tag`` is set.

    ``members`` is flattened: base members first, in base order, then the
    type's own; for a union these are the common members.  ``variants``
    lists one branch per discriminator value: the declared ones in schema
    order, then every other value of the enum with the empty object type.
    """

    name: str
    info: SourceInfo | None
    members: tuple[Member, ...]
    base: str | None = None
    tag: str | None = None
    variants: tuple[Variant, ...] = ()
    features: tuple[str, ...] = ()
    implicit: bool = False

    def variant(self, case: str) -> Variant | None:
        for v in self.variants:
            if v.case == case:
                return v
        return None


@dataclass(frozen=True, slots=True)
class AlternateType:
    name: str
    info: SourceInfo | None
    branches: tuple[Member, ...]
    features: tuple[str, ...] = ()


Type = BuiltinType | EnumType | ArrayType | ObjectType | AlternateType


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    info: SourceInfo
    arg_type: str | None
    ret_type: str | None
    boxed: bool = False
    allow_oob: bool = False
    features: tuple[str, ...] = ()
    #: False for QEMU's 'gen': false commands, whose handler checks its own
    #: arguments (device_add takes any device property besides 'data').
    gen: bool = True


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    info: SourceInfo
    arg_type: str | None
    boxed: bool = False
    features: tuple[str, ...] = ()


class SchemaModel:
    """The resolved schema: types by name, commands and events in schema order."""

    def __init__(self, types: dict[str, Type], entities: list[Command | Event]) -> None:
        self.types = types
        self.entities = entities
        self.commands = {e.name: e for e in entities if isinstance(e, Command)}
        self.events = {e.name: e for e in entities if isinstance(e, Event)}

    def lookup(self, name: str) -> Type:
        """The type called ``name``; KeyError if there is none (a bug after resolution)."""
        return self.types[name]


def c_name(name: str) -> str:
    """The C identifier QEMU derives from a QAPI name; equal ones clash."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _features(node: Node) -> tuple[str, ...]:
    return tuple(f["name"] for f in node.get("features", ()))


@dataclass(frozen=True, slots=True)
class _RawObject:
    """A struct, union or implicit struct as declared, before resolution."""

    meta: str  # 'struct' or 'union'
    name: str
    info: SourceInfo
    data: Node | None  # member dict, or a union's branch dict
    base: str | None
    discriminator: str | None
    features: tuple[str, ...]
    describe: str  # how to name it in errors
    discriminator_info: SourceInfo | None = None


class _Builder:
    def __init__(self, pragma: Pragma) -> None:
        self.pragma = pragma
        self.types: dict[str, Type] = {n: BuiltinType(n, j) for n, j in BUILTINS.items()}
        self.types["QType"] = EnumType("QType", None, tuple(EnumMember(v) for v in QTYPE_VALUES))
        self.types[EMPTY] = ObjectType(EMPTY, None, (), implicit=True)
        builtin: tuple[str, SourceInfo | None] = ("built-in type", None)
        self.declared = dict.fromkeys(self.types, builtin)
        self.raw_objects: dict[str, _RawObject] = {}
        self.raw_alternates: dict[str, tuple[Expression, Node]] = {}
        self.raw_entities: list[tuple[str, Expression]] = []
        self.resolving: list[str] = []

    # -- declaration -------------------------------------------------------

    def declare(self, name: str, what: str, info: SourceInfo) -> None:
        if name in self.declared:
            prev_what, prev_info = self.declared[name]
            where = f" at {prev_info.filename}:{prev_info.line}" if prev_info else ""
            raise info.error(f"'{name}' is already defined ({prev_what}{where})")
        self.declared[name] = (what, info)

    def declare_expression(self, meta: str, expr: Expression) -> None:
        node, info = expr.data, expr.info
        name: str = node[meta]
        self.declare(name, meta, info)
        features = _features(node)
        if meta == "enum":
            members = tuple(EnumMember(m["name"], _features(m)) for m in node["data"])
            seen: dict[str, str] = {}
            for m in members:
                key = c_name(m.name).upper()
                if key in seen:
                    raise info.error(
                        f"value '{m.name}' of enum '{name}' clashes with value '{seen[key]}'"
                    )
                seen[key] = m.name
            self.types[name] = EnumType(name, info, members, node.get("prefix"), features)
        elif meta == "struct":
            self.raw_objects[name] = _RawObject(
                "struct",
                name,
                info,
                node["data"],
                node.get("base"),
                None,
                features,
                f"struct '{name}'",
            )
        elif meta == "union":
            base = node["base"]
            if isinstance(base, Node):
                base_name = f"q_obj_{name}-base"
                self.declare(base_name, "implicit base", info)
                self.raw_objects[base_name] = _RawObject(
                    "struct", base_name, info, base, None, None, (), f"base of union '{name}'"
                )
                base = base_name
            self.raw_objects[name] = _RawObject(
                "union",
                name,
                info,
                node["data"],
                base,
                node["discriminator"],
                features,
                f"union '{name}'",
                node.key_info("discriminator"),
            )
        elif meta == "alternate":
            self.raw_alternates[name] = (expr, node)
        else:
            data = node.get("data")
            # Like QEMU, an empty inline dict means "no arguments" (no implicit type).
            if isinstance(data, Node) and data:
                arg_name = f"q_obj_{name}-arg"
                self.declare(arg_name, "implicit arguments", info)
                self.raw_objects[arg_name] = _RawObject(
                    "struct",
                    arg_name,
                    info,
                    data,
                    None,
                    None,
                    (),
                    f"arguments of {meta} '{name}'",
                )
            self.raw_entities.append((meta, expr))

    # -- resolution --------------------------------------------------------

    def ref(self, value: str | list[str], info: SourceInfo, source: str) -> str:
        """Resolve a type reference to a type name (creating array types); checks it exists."""
        if isinstance(value, list):
            element = self.ref(value[0], info, source)
            name = f"{element}List"
            if name not in self.types:
                self.types[name] = ArrayType(name, element, info)
            return name
        if value not in self.declared:
            raise info.error(f"{source} uses unknown type '{value}'")
        what = self.declared[value][0]
        if what in ("command", "event"):
            raise info.error(f"{source} uses '{value}', which is a {what}, not a type")
        return value

    def kind(self, name: str) -> str:
        """'builtin', 'enum', 'array', 'struct', 'union', 'alternate' for a known type."""
        if name in self.raw_objects:
            return self.raw_objects[name].meta
        if name in self.raw_alternates:
            return "alternate"
        typ = self.types[name]
        if isinstance(typ, BuiltinType):
            return "builtin"
        if isinstance(typ, EnumType):
            return "enum"
        if isinstance(typ, ArrayType):
            return "array"
        if isinstance(typ, ObjectType):
            return "union" if typ.tag else "struct"
        return "alternate"

    def members_of(self, raw: _RawObject) -> list[Member]:
        members: list[Member] = []
        if raw.meta == "union" or raw.data is None:
            return members
        for key, arg in raw.data.items():
            info = raw.data.key_info(key)
            name = key.removeprefix("*")
            mtype = self.ref(arg["type"], info, f"member '{name}' of {raw.describe}")
            members.append(Member(name, mtype, key.startswith("*"), _features(arg), info))
        return members

    def object(self, name: str) -> ObjectType:
        """The resolved object type ``name`` (resolving it and its bases first)."""
        typ = self.types.get(name)
        if isinstance(typ, ObjectType):
            return typ
        raw = self.raw_objects[name]
        if name in self.resolving:
            raise raw.info.error(f"{raw.describe} contains itself through its 'base'")
        self.resolving.append(name)
        try:
            resolved = self._resolve_object(raw)
        finally:
            self.resolving.pop()
        self.types[name] = resolved
        return resolved

    def _base_members(self, raw: _RawObject) -> list[Member]:
        if raw.base is None:
            return []
        base_info = raw.info
        source = f"'base' of {raw.describe}"
        base_name = self.ref(raw.base, base_info, source)
        if self.kind(base_name) != "struct":
            raise base_info.error(
                f"{source} must be a struct type, not {self.kind(base_name)} '{base_name}'"
            )
        return list(self.object(base_name).members)

    @staticmethod
    def _clash(
        members: list[Member],
        seen: dict[str, tuple[Member, str]],
        owner: str,
        at: SourceInfo | None = None,
    ) -> None:
        """Record ``members`` in ``seen``; a C-name clash is an error (at ``at`` if given)."""
        for m in members:
            key = c_name(m.name)
            if key in seen:
                other, other_owner = seen[key]
                info = at or m.info or SourceInfo("?", 0)
                raise info.error(
                    f"member '{m.name}' of {owner} collides with member '{other.name}'"
                    f" of {other_owner}"
                )
            seen[key] = (m, owner)

    def _resolve_object(self, raw: _RawObject) -> ObjectType:
        base_members = self._base_members(raw)
        own = self.members_of(raw)
        seen: dict[str, tuple[Member, str]] = {}
        implicit_base = raw.base is None or raw.base.startswith("q_")
        base_owner = f"the base of {raw.describe}" if implicit_base else f"base '{raw.base}'"
        self._clash(base_members, seen, base_owner)
        self._clash(own, seen, raw.describe)
        members = tuple(base_members + own)
        if raw.meta == "struct":
            return ObjectType(
                raw.name,
                raw.info,
                members,
                raw.base,
                features=raw.features,
                implicit=raw.name.startswith("q_"),
            )
        return self._resolve_union(raw, members, seen)

    def _resolve_union(
        self, raw: _RawObject, members: tuple[Member, ...], base_seen: dict[str, tuple[Member, str]]
    ) -> ObjectType:
        assert raw.data is not None
        assert raw.discriminator is not None
        tag = raw.discriminator
        tag_member = next((m for m in members if m.name == tag), None)
        where = raw.discriminator_info or raw.info
        if tag_member is None:
            raise where.error(
                f"discriminator '{tag}' of {raw.describe} is not a member of its base"
            )
        if tag_member.optional:
            raise where.error(
                f"discriminator member '{tag}' of {raw.describe} must not be optional"
            )
        enum = self.types.get(tag_member.type)
        if not isinstance(enum, EnumType):
            raise where.error(
                f"discriminator member '{tag}' of {raw.describe} must be of enum type, "
                f"not '{tag_member.type}'"
            )
        variants: list[Variant] = []
        for case, branch in raw.data.items():
            info = raw.data.key_info(case)
            source = f"branch '{case}' of {raw.describe}"
            if case not in enum.values:
                raise info.error(f"{source} is not a value of enum '{enum.name}'")
            btype = self.ref(branch["type"], info, source)
            if self.kind(btype) != "struct":
                raise info.error(
                    f"{source} must use a struct type, not {self.kind(btype)} '{btype}'"
                )
            branch_obj = self.object(btype)
            owner = f"branch '{case}' ('{btype}')"
            self._clash(list(branch_obj.members), dict(base_seen), owner, at=info)
            variants.append(Variant(case, btype))
        listed = {v.case for v in variants}
        variants += [Variant(v, EMPTY) for v in enum.values if v not in listed]
        return ObjectType(raw.name, raw.info, members, raw.base, tag, tuple(variants), raw.features)

    def alternate(self, name: str) -> AlternateType:
        expr, node = self.raw_alternates[name]
        branches: list[Member] = []
        # Which JSON value types already select a branch (QEMU's QType logic).
        taken: dict[str, str] = {}
        for bname, branch in node["data"].items():
            info = node["data"].key_info(bname)
            source = f"branch '{bname}' of alternate '{name}'"
            btype = self.ref(branch["type"], info, source)
            json_types = self._alternate_json_types(btype, info, source)
            for jt in json_types:
                if jt in taken:
                    raise info.error(f"{source} can't be told apart from branch '{taken[jt]}'")
            taken.update(dict.fromkeys(json_types, bname))
            branches.append(Member(bname, btype, info=info))
        return AlternateType(name, expr.info, tuple(branches), _features(node))

    def _alternate_json_types(self, btype: str, info: SourceInfo, source: str) -> list[str]:
        """The JSON types a branch claims; the first is the one that selects it.

        A string branch also claims numbers and booleans (an enum only if a
        value looks like one): QEMU parses alternates from keyval strings
        too, where '1' or 'on' could be read either way.
        """
        kind = self.kind(btype)
        if kind in ("struct", "union"):
            return ["object"]
        if kind == "array":
            return ["array"]
        if kind == "alternate":
            raise info.error(f"{source} cannot use alternate '{btype}'")
        if kind == "enum":
            typ = self.types[btype]
            assert isinstance(typ, EnumType)
            claimed = ["string"]
            if any(v in ("on", "off") for v in typ.values):
                claimed.append("boolean")
            if any(re.match(r"[-+0-9.]", v) for v in typ.values):
                claimed.append("number")
            return claimed
        json_type = BUILTINS[btype]
        if json_type == "value":
            raise info.error(f"{source} cannot use 'any'")
        if json_type == "string":
            return ["string", "number", "boolean"]
        return {"int": ["number"], "number": ["number"]}.get(json_type, [json_type])

    def data_type(self, meta: str, node: Node, info: SourceInfo) -> str | None:
        name: str = node[meta]
        data = node.get("data")
        if data is None or (isinstance(data, Node) and not data):
            return None
        if isinstance(data, Node):
            self.object(f"q_obj_{name}-arg")
            return f"q_obj_{name}-arg"
        where = node.key_info("data")
        source = f"'data' of {meta} '{name}'"
        tname = self.ref(data, where, source)
        kind = self.kind(tname)
        if node.get("boxed"):
            if kind not in ("struct", "union"):
                raise where.error(
                    f"{source} must name a struct or union type, not {kind} '{tname}'"
                )
        elif kind != "struct":
            hint = " (a union needs 'boxed': true)" if kind == "union" else ""
            raise where.error(f"{source} must name a struct type, not {kind} '{tname}'{hint}")
        self.object(tname)
        return tname

    def entity(self, meta: str, expr: Expression) -> Command | Event:
        node, info = expr.data, expr.info
        name: str = node[meta]
        arg_type = self.data_type(meta, node, info)
        features = _features(node)
        boxed = bool(node.get("boxed", False))
        if meta == "event":
            return Event(name, info, arg_type, boxed, features)
        ret_type = None
        if "returns" in node:
            where = node.key_info("returns")
            source = f"'returns' of command '{name}'"
            ret_type = self.ref(node["returns"], where, source)
            if name not in self.pragma.command_returns_exceptions:
                typ = self.types.get(ret_type)
                element = typ.element if isinstance(typ, ArrayType) else ret_type
                if self.kind(element) not in ("struct", "union"):
                    raise where.error(
                        f"{source} must be an object type or an array of one, not '{ret_type}'"
                    )
        return Command(
            name,
            info,
            arg_type,
            ret_type,
            boxed,
            bool(node.get("allow-oob")),
            features,
            gen=node.get("gen", True) is not False,
        )

    def build(self, parsed: ParsedSchema) -> SchemaModel:
        for meta, expr in check_expressions(parsed.expressions, parsed.pragma):
            self.declare_expression(meta, expr)
        for name in list(self.raw_objects):
            self.object(name)
        for name in self.raw_alternates:
            self.types[name] = self.alternate(name)
        entities = [self.entity(meta, expr) for meta, expr in self.raw_entities]
        return SchemaModel(self.types, entities)


def build_model(parsed: ParsedSchema) -> SchemaModel:
    """Check and resolve a parsed schema.

    Raises SchemaError (file, line, message) for the first problem found.
    """
    return _Builder(parsed.pragma).build(parsed)


def json_kind(value: Any) -> str:
    """The JSON type of a parsed value, in JSON Schema's vocabulary."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def selecting_json_type(model: SchemaModel, type_name: str) -> str:
    """The JSON type that makes QEMU pick an alternate branch of this type."""
    typ = model.lookup(type_name)
    if isinstance(typ, ObjectType):
        return "object"
    if isinstance(typ, ArrayType):
        return "array"
    if isinstance(typ, EnumType):
        return "string"
    assert isinstance(typ, BuiltinType)
    return "number" if typ.json_type == "int" else typ.json_type


def alternate_branch(model: SchemaModel, alt: AlternateType, value: Any) -> Member | None:
    """The branch QEMU's input visitor picks for ``value``: by JSON type only."""
    kind = json_kind(value)
    for branch in alt.branches:
        if selecting_json_type(model, branch.type) == kind:
            return branch
    return None


__all__ = [
    "BUILTINS",
    "EMPTY",
    "AlternateType",
    "ArrayType",
    "BuiltinType",
    "Command",
    "EnumMember",
    "EnumType",
    "Event",
    "Member",
    "ObjectType",
    "SchemaModel",
    "Type",
    "Variant",
    "alternate_branch",
    "build_model",
    "c_name",
    "json_kind",
    "selecting_json_type",
]
