"""Phase 2 of the schema pipeline: context-free shape checks.

Each expression is checked on its own: it has exactly one meta-type key,
only the keys its meta-type allows (an unknown key is named together with
the valid ones), names follow QAPI's rules, and values have the right JSON
shape.  No type is looked up here; that is the model's job.

Sugar is normalised in place so the model sees one form only:
``'name': 'type'`` becomes ``'name': {'type': 'type'}``, a feature or enum
value given as a string becomes ``{'name': ...}``.  New dicts are
:class:`~qmpd.qapi.parser.Node` objects carrying the line of the key they
came from.

QAPI naming rules (QEMU's scripts/qapi/expr.py): names are letters, digits,
``-`` and ``_``, starting with a letter, optionally prefixed by ``x-``
(experimental) and/or a downstream ``__RFQDN_`` prefix; ``q_`` is reserved.
Types are CamelCase and must not end in ``List`` (that suffix names array
types), commands and members are lower case without ``_``, events are upper
case without ``-``.  ``pragma`` lists grant exceptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .parser import Expression, Node, Pragma, SourceInfo

META_TYPES = ("enum", "struct", "union", "alternate", "command", "event")

# Valid keys per meta-type besides the meta-type key itself: (required, optional).
# 'gen', 'success-response', 'allow-preconfig' and 'coroutine' matter only to
# QEMU's C generator; they are accepted and ignored.  'if' is accepted and
# ignored: qmpd's schema has no build configurations.
KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "enum": (("data",), ("if", "features", "prefix")),
    "struct": (("data",), ("base", "if", "features")),
    "union": (("base", "discriminator", "data"), ("if", "features")),
    "alternate": (("data",), ("if", "features")),
    "command": (
        (),
        (
            "data",
            "returns",
            "boxed",
            "if",
            "features",
            "gen",
            "success-response",
            "allow-oob",
            "allow-preconfig",
            "coroutine",
        ),
    ),
    "event": ((), ("data", "boxed", "if", "features")),
}

_VALID_NAME = re.compile(r"(__[a-z0-9.-]+_)?(x-)?([a-z][a-z0-9_-]*)", re.IGNORECASE)


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f"'{n}'" for n in sorted(names))


def check_keys(node: Node, source: str, required: Iterable[str], optional: Iterable[str]) -> None:
    """Every required key is there and no other key than the allowed ones.

    Raises SchemaError at the offending key, listing the valid keys.
    """
    required = tuple(required)
    missing = [k for k in required if k not in node]
    if missing:
        noun = "keys" if len(missing) > 1 else "key"
        raise node.info.error(f"{source} lacks {noun} {_quoted(missing)}")
    allowed = set(required) | set(optional)
    unknown = [k for k in node if k not in allowed]
    if unknown:
        noun = "keys" if len(unknown) > 1 else "key"
        raise node.key_info(unknown[0]).error(
            f"{source} has unknown {noun} {_quoted(unknown)}; valid keys are {_quoted(allowed)}"
        )


def _stem(name: str, info: SourceInfo, source: str) -> str:
    match = _VALID_NAME.fullmatch(name)
    # 'q_' is reserved for implicit types such as q_empty and q_obj_*.
    if not match or name.replace("-", "_").startswith("q_"):
        raise info.error(f"{source} has an invalid name")
    return match.group(3)


def check_name_lower(name: str, info: SourceInfo, source: str, permissive: bool = False) -> None:
    """Command and member names: lower case, no '_' (unless ``permissive``)."""
    stem = _stem(name, info, source)
    if not permissive and (re.search(r"[A-Z]", stem) or "_" in stem):
        raise info.error(f"name of {source} must not use upper case or '_'")


def check_name_upper(name: str, info: SourceInfo, source: str) -> None:
    """Event names: upper case, no '-'."""
    stem = _stem(name, info, source)
    if re.search(r"[a-z-]", stem):
        raise info.error(f"name of {source} must not use lower case or '-'")


def check_name_camel(name: str, info: SourceInfo, source: str) -> None:
    """Type names: CamelCase, and never ending in 'List' (reserved for arrays)."""
    stem = _stem(name, info, source)
    if not re.fullmatch(r"[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*", stem):
        raise info.error(f"name of {source} must use CamelCase")
    if name.endswith("List"):
        raise info.error(f"name of {source} must not end in 'List'")


def _need_str(value: object, info: SourceInfo, source: str) -> str:
    if not isinstance(value, str):
        raise info.error(f"{source} must be a string")
    return value


def _as_node(value: object, key: str, parent: Node, sugar_key: str) -> Node:
    """``value`` if it is already a dict, else ``{sugar_key: value}`` placed at ``key``."""
    if isinstance(value, Node):
        return value
    node = Node(parent.key_info(key))
    node[sugar_key] = value
    return node


def check_features(owner: Node, info: SourceInfo) -> None:
    """Normalise and check ``owner['features']`` (a list of names or {'name', 'if'})."""
    features = owner.get("features")
    if features is None:
        return
    where = owner.key_info("features")
    if not isinstance(features, list):
        raise where.error("'features' must be an array")
    seen: set[str] = set()
    for i, item in enumerate(features):
        feat = item if isinstance(item, Node) else _as_node(item, "features", owner, "name")
        features[i] = feat
        check_keys(feat, "'features' member", ("name",), ("if",))
        name = _need_str(feat["name"], feat.info, "'features' member name")
        check_name_lower(name, feat.info, f"feature '{name}'")
        if name in seen:
            raise feat.info.error(f"feature '{name}' is listed twice")
        seen.add(name)


def check_type_ref(value: object, info: SourceInfo, source: str, allow_array: bool = False) -> None:
    """A reference to a type: a name, or ``[name]`` where arrays are allowed."""
    if isinstance(value, str):
        return
    if isinstance(value, list):
        if not allow_array:
            raise info.error(f"{source} cannot be an array")
        if len(value) != 1 or not isinstance(value[0], str):
            raise info.error(f"{source}: an array type must hold exactly one type name")
        return
    raise info.error(f"{source} must be a type name")


def check_members(owner: Node, key: str, source: str, permissive: bool) -> None:
    """Normalise and check an inline member dict ``owner[key]``."""
    members = owner[key]
    if not isinstance(members, Node):
        raise owner.key_info(key).error(f"{source} must be an object")
    for name in list(members):
        arg = _as_node(members[name], name, members, "type")
        members[name] = arg
        info = members.key_info(name)
        member_source = f"member '{name}' of {source}"
        check_name_lower(name.removeprefix("*"), info, member_source, permissive)
        check_keys(arg, member_source, ("type",), ("if", "features"))
        check_features(arg, info)
        check_type_ref(arg["type"], info, member_source, allow_array=True)


def _check_type_or_members(
    expr: Node, key: str, source: str, permissive: bool, allow_members: bool = True
) -> None:
    """``expr[key]``: a type name, or (when allowed) an inline member dict."""
    value = expr.get(key)
    if value is None or isinstance(value, str):
        return
    if isinstance(value, Node) and allow_members:
        check_members(expr, key, source, permissive)
        return
    what = "a type name or an object" if allow_members else "a type name"
    raise expr.key_info(key).error(f"{source} must be {what}")


def _check_enum(expr: Node, name: str, pragma: Pragma) -> None:
    data = expr["data"]
    where = expr.key_info("data")
    if not isinstance(data, list):
        raise where.error(f"'data' of enum '{name}' must be an array")
    if "prefix" in expr and not isinstance(expr["prefix"], str):
        raise expr.key_info("prefix").error(f"'prefix' of enum '{name}' must be a string")
    permissive = name in pragma.member_name_exceptions
    for i, item in enumerate(data):
        value = item if isinstance(item, Node) else _as_node(item, "data", expr, "name")
        data[i] = value
        check_keys(value, f"value of enum '{name}'", ("name",), ("if", "features"))
        member = _need_str(value["name"], value.info, f"value of enum '{name}'")
        # Enum values may start with a digit (QEMU hides it for the name check).
        stem = "d" + member if member[:1].isdigit() else member
        check_name_lower(stem, value.info, f"value '{member}' of enum '{name}'", permissive)
        check_features(value, value.info)


def _check_union(expr: Node, name: str, pragma: Pragma) -> None:
    permissive = name in pragma.member_name_exceptions
    _check_type_or_members(expr, "base", f"'base' of union '{name}'", permissive)
    if not isinstance(expr["base"], str | Node):
        raise expr.key_info("base").error(
            f"'base' of union '{name}' must be a type name or an object"
        )
    _need_str(
        expr["discriminator"], expr.key_info("discriminator"), f"'discriminator' of union '{name}'"
    )
    data = expr["data"]
    if not isinstance(data, Node):
        raise expr.key_info("data").error(f"'data' of union '{name}' must be an object")
    for case in list(data):
        branch = _as_node(data[case], case, data, "type")
        data[case] = branch
        source = f"branch '{case}' of union '{name}'"
        check_keys(branch, source, ("type",), ("if",))
        check_type_ref(branch["type"], data.key_info(case), source)


def _check_alternate(expr: Node, name: str) -> None:
    data = expr["data"]
    if not isinstance(data, Node):
        raise expr.key_info("data").error(f"'data' of alternate '{name}' must be an object")
    if not data:
        raise expr.key_info("data").error(f"'data' of alternate '{name}' must not be empty")
    for branch_name in list(data):
        branch = _as_node(data[branch_name], branch_name, data, "type")
        data[branch_name] = branch
        info = data.key_info(branch_name)
        source = f"branch '{branch_name}' of alternate '{name}'"
        check_name_lower(branch_name, info, source)
        check_keys(branch, source, ("type",), ("if",))
        check_type_ref(branch["type"], info, source, allow_array=True)


def _check_flags(expr: Node, meta: str, name: str) -> None:
    for key in ("gen", "success-response"):
        if key in expr and expr[key] is not False:
            raise expr.key_info(key).error(f"flag '{key}' of {meta} '{name}' may only be false")
    for key in ("boxed", "allow-oob", "allow-preconfig", "coroutine"):
        if key in expr and expr[key] is not True:
            raise expr.key_info(key).error(f"flag '{key}' of {meta} '{name}' may only be true")


def _check_if(node: Node, source: str) -> None:
    # Conditions are ignored, but a malformed one is still a mistake.
    cond = node.get("if")
    if cond is None:
        return
    if not isinstance(cond, str | Node) or (isinstance(cond, str) and not cond.strip()):
        raise node.key_info("if").error(f"'if' of {source} must be a name or an object")


def check_expression(expr: Expression, pragma: Pragma) -> str:
    """Check and normalise one expression in place; returns its meta-type.

    Raises SchemaError naming file, line and the problem.
    """
    node = expr.data
    metas = [k for k in META_TYPES if k in node]
    if len(metas) != 1:
        raise expr.info.error(
            f"expression must have exactly one of the keys {_quoted(META_TYPES)}"
            + (f" (it has {_quoted(metas)})" if metas else "")
        )
    meta = metas[0]
    name = _need_str(node[meta], expr.info, f"name of {meta}")
    source = f"{meta} '{name}'"
    if meta == "event":
        check_name_upper(name, expr.info, source)
    elif meta == "command":
        check_name_lower(name, expr.info, source, name in pragma.command_name_exceptions)
    else:
        check_name_camel(name, expr.info, source)
    if expr.doc is not None and expr.doc.symbol != name:
        raise expr.doc.info.error(f"documentation is for '{expr.doc.symbol}', not for '{name}'")
    if expr.doc is None and pragma.doc_required:
        raise expr.info.error(f"{source} has no documentation block")

    required, optional = KEYS[meta]
    check_keys(node, source, (meta, *required), optional)
    permissive = name in pragma.member_name_exceptions
    if meta == "enum":
        _check_enum(node, name, pragma)
    elif meta == "struct":
        if not isinstance(node["data"], Node):
            raise node.key_info("data").error(f"'data' of struct '{name}' must be an object")
        check_members(node, "data", source, permissive)
        _check_type_or_members(node, "base", f"'base' of {source}", permissive, allow_members=False)
    elif meta == "union":
        _check_union(node, name, pragma)
    elif meta == "alternate":
        _check_alternate(node, name)
    else:  # command, event
        boxed = node.get("boxed", False)
        if boxed and "data" not in node:
            raise expr.info.error(f"{source}: 'boxed': true requires 'data'")
        _check_type_or_members(node, "data", f"'data' of {source}", permissive, not boxed)
        if meta == "command" and "returns" in node:
            check_type_ref(
                node["returns"], node.key_info("returns"), f"'returns' of {source}", True
            )
    _check_if(node, source)
    check_features(node, expr.info)
    _check_flags(node, meta, name)
    return meta


def check_expressions(
    expressions: list[Expression], pragma: Pragma
) -> list[tuple[str, Expression]]:
    """Check every expression; returns (meta-type, expression) pairs in order."""
    return [(check_expression(expr, pragma), expr) for expr in expressions]


__all__ = [
    "KEYS",
    "META_TYPES",
    "check_expression",
    "check_expressions",
    "check_features",
    "check_keys",
    "check_members",
    "check_name_camel",
    "check_name_lower",
    "check_name_upper",
    "check_type_ref",
]
