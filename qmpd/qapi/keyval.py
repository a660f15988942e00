"""Dotted-key option strings (``--blockdev raw,file.driver=file,...``) to QAPI values.

QEMU parses such a string into a tree whose leaves are all strings
(util/keyval.c), then lets its *keyval* input visitor convert each leaf as
the schema walks into it: an ``int`` leaf must parse as an integer (C's
base-0 rules: ``0x1f``, ``017``), a ``bool`` leaf must be one of on/off,
yes/no, true/false, y/n, a ``size`` accepts k/M/G/T suffixes, and strings
and enum values stay as they are.  A leaf that cannot be converted is
reported there, with its dotted name (``Parameter 'size' expects
integer``).  Whatever the walk does not reach (unknown members, a string
where an object belongs) is left alone, so the normal argument check that
follows reports it with the same words as for JSON input.

:func:`parse_keyval` is the first half, :func:`keyval_to_qapi` the second.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import GenericError
from .model import AlternateType, ArrayType, BuiltinType, ObjectType, SchemaModel

_TRUE = ("on", "yes", "true", "y")
_FALSE = ("off", "no", "false", "n")
_INT_RE = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([bBkKmMgGtTpPeE]?)\Z")
_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SUFFIX.update({"p": 1 << 50, "e": 1 << 60})


def split_options(text: str) -> list[str]:
    """Split at single commas; ``,,`` is a literal comma."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                current.append(",")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    parts.append("".join(current))
    return parts


def parse_keyval(text: str, implied_key: str | None = "driver") -> dict[str, Any]:
    """``a=1,b.c=x`` -> ``{"a": "1", "b": {"c": "x"}}``; all leaves are strings.

    The first element may omit ``implied_key=``.  A key given twice keeps
    its last value, as QEMU.  Raises GenericError with QEMU's texts.
    """
    root: dict[str, Any] = {}
    for index, part in enumerate(split_options(text)):
        key, eq, value = part.partition("=")
        if not eq:
            if index == 0 and implied_key is not None and part:
                key, value = implied_key, part
            else:
                raise GenericError(f"Expected '=' after parameter '{part}'")
        if not key:
            raise GenericError("Invalid parameter ''")
        node = root
        *parents, leaf = key.split(".")
        for depth, name in enumerate(parents):
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                prefix = ".".join(parents[: depth + 1])
                raise GenericError(f"Parameters '{prefix}.*' conflict with parameter '{prefix}'")
            node = child
        if isinstance(node.get(leaf), dict):
            raise GenericError(f"Parameters '{key}.*' conflict with parameter '{key}'")
        node[leaf] = value
    return root


def _parse_int(text: str) -> int | None:
    m = _INT_RE.match(text)
    if m is None:
        return None
    sign, digits = m.groups()
    if digits[:2] in ("0x", "0X"):
        value = int(digits, 16)
    elif digits.startswith("0"):
        value = int(digits, 8)
    else:
        value = int(digits)
    return -value if sign == "-" else value


def _parse_size(text: str) -> int | None:
    m = _SIZE_RE.match(text)
    if m is None:
        return None
    number, suffix = m.groups()
    mult = _SUFFIX[suffix.lower()]
    return int(float(number) * mult) if "." in number else int(number) * mult


def _scalar(builtin: str, text: str, name: str) -> Any:
    if builtin == "bool":
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise GenericError(f"Parameter '{name}' expects 'on' or 'off'")
    if builtin == "size":
        size = _parse_size(text)
        if size is None or size >= 2**64:
            raise GenericError(f"Parameter '{name}' expects a non-negative number below 2^64")
        return size
    if builtin.startswith(("int", "uint")):
        value = _parse_int(text)
        unsigned = builtin.startswith("u")
        if value is None or not -(2**63) <= value < (2**64 if unsigned else 2**63):
            raise GenericError(f"Parameter '{name}' expects integer")
        return value
    if builtin == "number":
        try:
            return float(text)
        except ValueError:
            raise GenericError(f"Parameter '{name}' expects number") from None
    return text  # str, any


def keyval_to_qapi(model: SchemaModel, type_name: str, value: Any, path: str = "") -> Any:
    """Convert the string leaves of ``value`` to the types ``type_name`` wants.

    Raises GenericError (``Parameter 'x' expects integer`` ...) for a leaf
    that does not convert; leaves the rest to the argument check.
    """
    typ = model.lookup(type_name)
    if isinstance(typ, BuiltinType):
        return _scalar(typ.name, value, path) if isinstance(value, str) else value
    if isinstance(typ, AlternateType):
        # A string selects the string branch, an object the object branch.
        want = "object" if isinstance(value, dict) else "string"
        for alt in typ.branches:
            is_object = isinstance(model.lookup(alt.type), ObjectType)
            if is_object == (want == "object"):
                return keyval_to_qapi(model, alt.type, value, path)
        return value
    if isinstance(typ, ArrayType):
        if isinstance(value, dict) and all(k.isdigit() for k in value):
            items = [value[k] for k in sorted(value, key=int)]
            return [
                keyval_to_qapi(model, typ.element, item, f"{path}[{i}]")
                for i, item in enumerate(items)
            ]
        return value
    if isinstance(typ, ObjectType) and isinstance(value, dict):
        members = list(typ.members)
        if typ.tag is not None:
            case = value.get(typ.tag)
            variant = typ.variant(case) if isinstance(case, str) else None
            if variant is not None:
                branch = model.lookup(variant.type)
                assert isinstance(branch, ObjectType)
                members += branch.members
        out = dict(value)
        for member in members:
            if member.name in out:
                sub = f"{path}.{member.name}" if path else member.name
                out[member.name] = keyval_to_qapi(model, member.type, out[member.name], sub)
        return out
    return value  # enums stay strings; a mismatch is the argument check's to report


__all__ = ["keyval_to_qapi", "parse_keyval", "split_options"]
