"""Phase 4a of the schema pipeline: the ``query-qmp-schema`` value.

The output is QEMU's SchemaInfo list, built the way QEMU's introspection
generator builds it, because clients (libvirt above all) navigate it
structurally and any deviation makes capability probes fail silently:

* Commands and events come first, in schema order.  Every type they
  reference is queued on first use and emitted afterwards in queue order;
  emitting a type can queue further types (its members, branches, element).
* Commands, events, built-in types and arrays keep their names.  Every other
  type is renamed to a decimal string in order of first use, so clients
  cannot come to depend on type names.  Arrays are called ``[<element>]``.
* All integer types appear as the built-in ``int`` (arrays of them as
  ``[int]``); an optional member carries ``"default": null``; enums list
  both ``members`` (objects, may carry features) and the older ``values``;
  a flat union lists base members plus ``tag`` and ``variants``.
* A command without arguments or return value, and an event without data,
  point at the empty object type; ``allow-oob`` appears only when true.
"""

from __future__ import annotations

from typing import Any

from .model import (
    EMPTY,
    AlternateType,
    ArrayType,
    BuiltinType,
    Command,
    EnumType,
    ObjectType,
    SchemaModel,
    Type,
)

_INT_LIST = ArrayType("intList", "int")


class _Introspector:
    def __init__(self, model: SchemaModel) -> None:
        self.model = model
        self.masked: dict[str, str] = {}
        self.queue: list[str] = []
        self.queued: set[str] = set()
        self.entries: list[dict[str, Any]] = []

    def lookup(self, name: str) -> Type:
        if name == _INT_LIST.name:
            return self.model.types.get(name, _INT_LIST)
        return self.model.lookup(name)

    def mask(self, name: str) -> str:
        if name not in self.masked:
            self.masked[name] = str(len(self.masked))
        return self.masked[name]

    def use(self, name: str) -> str:
        """Queue type ``name`` if new; returns the name clients see."""
        typ = self.lookup(name)
        if isinstance(typ, BuiltinType) and typ.json_type == "int":
            name, typ = "int", self.lookup("int")
        elif isinstance(typ, ArrayType):
            element = self.lookup(typ.element)
            if isinstance(element, BuiltinType) and element.json_type == "int":
                name, typ = _INT_LIST.name, self.lookup(_INT_LIST.name)
        if name not in self.queued:
            self.queued.add(name)
            self.queue.append(name)
        if isinstance(typ, BuiltinType):
            return name
        if isinstance(typ, ArrayType):
            return f"[{self.use(typ.element)}]"
        return self.mask(name)

    def emit(self, name: str, meta: str, body: dict[str, Any], features: tuple[str, ...]) -> None:
        entry: dict[str, Any] = {"name": name, "meta-type": meta, **body}
        if features:
            entry["features"] = list(features)
        self.entries.append(entry)

    def emit_type(self, name: str) -> None:
        typ = self.lookup(name)
        if isinstance(typ, BuiltinType):
            self.emit(name, "builtin", {"json-type": typ.json_type}, ())
        elif isinstance(typ, EnumType):
            members = [
                {"name": m.name, **({"features": list(m.features)} if m.features else {})}
                for m in typ.members
            ]
            values = [m.name for m in typ.members]
            self.emit(self.mask(name), "enum", {"members": members, "values": values}, typ.features)
        elif isinstance(typ, ArrayType):
            element = self.use(typ.element)
            self.emit(f"[{element}]", "array", {"element-type": element}, ())
        elif isinstance(typ, ObjectType):
            members = []
            for m in typ.members:
                member: dict[str, Any] = {"name": m.name, "type": self.use(m.type)}
                if m.optional:
                    member["default"] = None
                if m.features:
                    member["features"] = list(m.features)
                members.append(member)
            body: dict[str, Any] = {"members": members}
            if typ.tag is not None:
                body["tag"] = typ.tag
                body["variants"] = [
                    {"case": v.case, "type": self.use(v.type)} for v in typ.variants
                ]
            self.emit(self.mask(name), "object", body, typ.features)
        else:
            assert isinstance(typ, AlternateType)
            body = {"members": [{"type": self.use(b.type)} for b in typ.branches]}
            self.emit(self.mask(name), "alternate", body, typ.features)

    def run(self) -> list[dict[str, Any]]:
        for entity in self.model.entities:
            arg = self.use(entity.arg_type or EMPTY)
            if isinstance(entity, Command):
                body: dict[str, Any] = {
                    "arg-type": arg,
                    "ret-type": self.use(entity.ret_type or EMPTY),
                }
                if entity.allow_oob:
                    body["allow-oob"] = True
                self.emit(entity.name, "command", body, entity.features)
            else:
                self.emit(entity.name, "event", {"arg-type": arg}, entity.features)
        # The queue grows while it is walked: emitting a type uses its parts.
        i = 0
        while i < len(self.queue):
            self.emit_type(self.queue[i])
            i += 1
        return self.entries


def introspect(model: SchemaModel) -> list[dict[str, Any]]:
    """The ``query-qmp-schema`` return value for ``model`` (a fresh list)."""
    return _Introspector(model).run()


__all__ = ["introspect"]
