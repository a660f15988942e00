"""Phase 5 of the schema pipeline: check values against the schema, QEMU's way.

Accepting is the hot path: one call of a predicate compiled once per
command from its JSON Schema (:class:`_FastPath`, ~10 us where jsonschema's
``is_valid`` takes 100-700 us).  Only when that rejects is jsonschema asked,
and the error worked out; it has to be the error QEMU would give, word for
word, since clients (libvirt, iotests) match on them.

QEMU's QObject input visitor walks the *schema*, not the input: members in
schema order (a union's common members, then its branch's), descending into
each value as it meets it, and it stops at the first problem.  A missing
member, a wrong type, a bad enum value or an out-of-range integer is
reported where the walk meets it; members nobody asked for are reported
when their object is finished, i.e. after everything inside it.  So each
jsonschema error is mapped to QEMU's text and to a sort key that encodes
that walk: the member positions along its path, with "unexpected" ranking
after every member.  The smallest key wins.

QEMU's texts (observed on QEMU 7.2; ``full`` is the dotted path with
``[i]`` for list elements, ``bare`` just the last member name, or ``null``
for a list element):

* ``Parameter 'full' is missing`` / ``Parameter 'full' is unexpected``
* ``Invalid parameter type for 'full', expected: T`` with T one of
  ``object array string boolean number null integer``
* enums: ``Parameter 'bare' does not accept value 'v'``
* alternates: ``Invalid parameter type for 'bare', expected: AltName``
* ``int``/``int64``: any non-int64 is a type error (``integer``);
  ``int8..int32``: type error as int64, then ``Parameter 'bare' expects int32_t``;
  ``uint64``/``size``: anything but an integer in [-2^63, 2^64) gives
  ``Parameter 'full' expects uint64``; ``uint8..uint32``: that, then
  ``Parameter 'bare' expects uint32_t`` (negative values included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

# jsonschema ships no type hints, and adding types-jsonschema is not an option.
import jsonschema  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]

from ..errors import GenericError
from ..protocol.hashorder import first_unvisited
from .jsonschema import INT_RANGES
from .model import AlternateType, ArrayType, ObjectType, SchemaModel, alternate_branch

_Path = list[str | int]
_UNEXPECTED = 1 << 30  # sorts after every member position


def _is_integer(_checker: object, instance: object) -> bool:
    # QEMU never takes a float for an int, not even 1.0; bool is not a number.
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(_checker: object, instance: object) -> bool:
    return isinstance(instance, int | float) and not isinstance(instance, bool)


_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
    {"integer": _is_integer, "number": _is_number}
)
QAPIValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, type_checker=_TYPE_CHECKER
)


def full_name(path: _Path) -> str:
    """QEMU's name for a value: ``file.cache.direct``, ``children[1].aio``."""
    out = ""
    for comp in path:
        if isinstance(comp, int):
            out += f"[{comp}]"
        else:
            out += f".{comp}" if out else comp
    return out


def bare_name(path: _Path) -> str:
    """The name QEMU uses in enum, range and alternate errors."""
    last = path[-1] if path else None
    return last if isinstance(last, str) else "null"


def int_error(qtype: str, value: Any, path: _Path) -> str:
    """QEMU's complaint about ``value`` for integer type ``qtype``."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    lo, hi = INT_RANGES[qtype]
    if qtype.startswith("u") or qtype == "size":
        # Unsigned types go through the uint64 visitor first.
        if not is_int or not -(2**63) <= value < 2**64:
            return f"Parameter '{full_name(path)}' expects uint64"
        return f"Parameter '{bare_name(path)}' expects {qtype}_t"
    if not is_int or not -(2**63) <= value < 2**63:
        return f"Invalid parameter type for '{full_name(path)}', expected: integer"
    assert not lo <= value <= hi
    return f"Parameter '{bare_name(path)}' expects {qtype}_t"


_TYPE_WORDS = {
    "object": "object",
    "array": "array",
    "string": "string",
    "boolean": "boolean",
    "number": "number",
    "null": "null",
}


def _has(container: Any, comp: str | int) -> bool:
    if isinstance(container, dict):
        return comp in container
    return isinstance(container, list) and isinstance(comp, int) and comp < len(container)


_Pred = Callable[[Any], bool]


def _always(_value: Any) -> bool:
    return True


def _never(_value: Any) -> bool:
    return False


_TYPE_PREDS: dict[str, _Pred] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: _is_integer(None, v),
    "number": lambda v: _is_number(None, v),
}


class _FastPath:
    """Compiles one of *our* JSON Schemas into a plain predicate.

    jsonschema spends 10-30 us per keyword and level, too much for a check
    every command pays.  Our generator (:mod:`.jsonschema`) uses a dozen
    keywords only; this compiles exactly those into closures (an unknown
    keyword is an error, so the two cannot drift apart silently) and turns
    a flat union's ``if``/``then`` chain into a dict lookup on the
    discriminator.  jsonschema stays the reference: it alone explains a
    failure, and tests check both agree.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = document.get("$defs", {})
        self.compiled: dict[str, _Pred] = {}

    def ref(self, name: str) -> _Pred:
        if name not in self.compiled:
            # Bind late: a recursive type refers to itself before it is done.
            self.compiled[name] = _never
            self.compiled[name] = self.compile(self.defs[name])
        compiled = self.compiled
        return lambda v: compiled[name](v)

    def compile(self, schema: Any) -> _Pred:
        if schema is True:
            return _always
        if schema is False:
            return _never
        checks: list[_Pred] = []
        for keyword, arg in schema.items():
            if keyword in ("$schema", "$defs", "then") or keyword.startswith("x-qapi"):
                continue
            checks.append(self._keyword(keyword, arg, schema))
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]
        return lambda v: all(check(v) for check in checks)

    def _keyword(self, keyword: str, arg: Any, schema: dict[str, Any]) -> _Pred:
        if keyword == "type":
            preds = [_TYPE_PREDS[t] for t in ([arg] if isinstance(arg, str) else arg)]
            return preds[0] if len(preds) == 1 else (lambda v: any(p(v) for p in preds))
        if keyword in ("enum", "const"):
            values = frozenset(arg if keyword == "enum" else [arg])
            assert all(isinstance(x, str) for x in values), "only string enums are generated"
            return lambda v: isinstance(v, str) and v in values
        if keyword in ("minimum", "maximum"):
            bound = arg
            if keyword == "minimum":
                return lambda v: not _is_number(None, v) or v >= bound
            return lambda v: not _is_number(None, v) or v <= bound
        if keyword == "properties":
            props = [(name, self.compile(sub)) for name, sub in arg.items()]
            return lambda v: not isinstance(v, dict) or all(p(v[k]) for k, p in props if k in v)
        if keyword == "required":
            required = tuple(arg)
            return lambda v: not isinstance(v, dict) or all(k in v for k in required)
        if keyword == "additionalProperties":
            assert arg is False, "only closed objects are generated"
            allowed = frozenset(schema.get("properties", ()))
            return lambda v: not isinstance(v, dict) or allowed.issuperset(v)
        if keyword == "items":
            item = self.compile(arg)
            return lambda v: not isinstance(v, list) or all(item(x) for x in v)
        if keyword == "allOf":
            return self._all_of(arg)
        if keyword == "if":
            cond, then = self.compile(arg), self.compile(schema.get("then", True))
            return lambda v: not cond(v) or then(v)
        if keyword == "$ref":
            prefix = "#/$defs/"
            assert arg.startswith(prefix), arg
            return self.ref(arg[len(prefix) :])
        raise ValueError(f"JSON Schema keyword {keyword!r} has no fast path")

    def _all_of(self, subschemas: list[Any]) -> _Pred:
        tag = self._union_tag(subschemas)
        if tag is None:
            preds = [self.compile(sub) for sub in subschemas]
            return lambda v: all(p(v) for p in preds)
        # A flat union: the discriminator's value picks the one 'then' that applies.
        table = {
            sub["if"]["properties"][tag]["const"]: self.compile(sub["then"]) for sub in subschemas
        }

        def union(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            case = v.get(tag)
            branch = table.get(case) if isinstance(case, str) else None
            return branch is None or branch(v)

        return union

    @staticmethod
    def _union_tag(subschemas: list[Any]) -> str | None:
        """The discriminator if ``subschemas`` is our flat-union pattern, else None."""
        tags = set()
        for sub in subschemas:
            cond = sub.get("if") if isinstance(sub, dict) else None
            if not isinstance(cond, dict) or set(sub) != {"if", "then"}:
                return None
            props = cond.get("properties", {})
            if set(cond) != {"properties", "required"} or len(props) != 1:
                return None
            (tag,) = props
            if cond["required"] != [tag] or set(props[tag]) != {"const"}:
                return None
            tags.add(tag)
        return tags.pop() if len(tags) == 1 else None


def compile_fast_path(schema: dict[str, Any]) -> Callable[[Any], bool]:
    """A predicate equivalent to ``QAPIValidator(schema).is_valid`` for our schemas."""
    return _FastPath(schema).compile(schema)


class Checker:
    """Checks values of one QAPI type (None: an object without members)."""

    def __init__(self, model: SchemaModel, type_name: str | None, schema: dict[str, Any]) -> None:
        self.model = model
        self.type_name = type_name
        self.validator = QAPIValidator(schema)
        self.is_valid = compile_fast_path(schema)

    def check(self, value: Any) -> None:
        """Raises GenericError with QEMU's text unless ``value`` is valid."""
        # The fast path decides; jsonschema is asked only to explain a
        # rejection (and, should the two ever disagree, jsonschema wins).
        if not self.is_valid(value) and not self.validator.is_valid(value):
            raise GenericError(self.first_error(value))

    def first_error(self, value: Any) -> str:
        """The text of the error QEMU would report first for invalid ``value``."""
        best: tuple[tuple[int, ...], str] | None = None
        for error in self.validator.iter_errors(value):
            for candidate in self._describe(error, value):
                if best is None or candidate[0] < best[0]:
                    best = candidate
        assert best is not None, "invalid value without a validation error"
        return best[1]

    def _describe(self, error: ValidationError, root: Any) -> Iterator[tuple[tuple[int, ...], str]]:
        path: _Path = list(error.absolute_path)
        schema = error.schema if isinstance(error.schema, dict) else {}
        keyword = error.validator
        instance = error.instance
        if keyword == "required":
            for name in error.validator_value:
                if name not in instance:
                    where = [*path, name]
                    yield self.order(root, where), f"Parameter '{full_name(where)}' is missing"
        elif keyword == "additionalProperties":
            known = schema.get("properties", {})
            # QEMU names the first member its walk left over, in the order of
            # its hash table; the walk consumed the known ones in schema order.
            extra = first_unvisited(list(instance), [k for k in known if k in instance])
            assert extra is not None
            where = [*path, extra]
            yield self.order(root, where), f"Parameter '{full_name(where)}' is unexpected"
        elif keyword == "enum" and isinstance(instance, str):
            text = f"Parameter '{bare_name(path)}' does not accept value '{instance}'"
            yield self.order(root, path), text
        elif keyword == "enum":
            return  # not a string at all: the "type" error says so
        elif "x-qapi-type" in schema:
            yield self.order(root, path), int_error(schema["x-qapi-type"], instance, path)
        elif keyword == "type" and "x-qapi-alternate" in schema:
            alt = schema["x-qapi-alternate"]
            yield (
                self.order(root, path),
                f"Invalid parameter type for '{bare_name(path)}', expected: {alt}",
            )
        elif keyword == "type":
            word = _TYPE_WORDS[schema["type"]]
            yield (
                self.order(root, path),
                f"Invalid parameter type for '{full_name(path)}', expected: {word}",
            )
        else:  # not produced by our schemas; keep a sane message anyway
            yield self.order(root, path), f"Parameter '{full_name(path)}' is invalid"

    def order(self, root: Any, path: _Path) -> tuple[int, ...]:
        """Where QEMU's walk meets ``path``: member positions, list indexes."""
        key: list[int] = []
        type_name = self.type_name
        value = root
        for comp in path:
            if type_name is None:
                # An argument-less command, or below an unexpected member.
                key.append(_UNEXPECTED)
                continue
            typ = self.model.lookup(type_name)
            if isinstance(typ, AlternateType):
                branch = alternate_branch(self.model, typ, value)
                typ = self.model.lookup(branch.type) if branch else typ
            if isinstance(typ, ArrayType) and isinstance(comp, int):
                key.append(comp)
                type_name = typ.element
            elif isinstance(typ, ObjectType) and isinstance(comp, str):
                members = self._members(typ, value)
                pos = next((i for i, m in enumerate(members) if m.name == comp), None)
                key.append(_UNEXPECTED if pos is None else pos)
                type_name = None if pos is None else members[pos].type
            else:
                key.append(0)
                type_name = None
            # A missing member is the last component; there is no value below.
            value = value[comp] if _has(value, comp) else None
        return tuple(key)

    def _members(self, typ: ObjectType, value: Any) -> list[Any]:
        members = list(typ.members)
        if typ.tag is not None and isinstance(value, dict):
            case = value.get(typ.tag)
            variant = typ.variant(case) if isinstance(case, str) else None
            if variant is not None:
                branch = self.model.lookup(variant.type)
                assert isinstance(branch, ObjectType)
                members += branch.members
        return members


__all__ = [
    "Checker",
    "QAPIValidator",
    "bare_name",
    "compile_fast_path",
    "full_name",
    "int_error",
]
