"""From ``blockdev-add`` arguments to nodes in the graph.

The arguments have already passed the schema (types, enums, unknown
members), as in QEMU, where the QAPI visitor runs before any driver.  What
is left are the checks QEMU's block layer makes while opening, in its
order: the driver must be one qmpd implements (else QEMU's text for a
driver not compiled in, ``Unknown driver 'x'``), ``force-share`` needs
read-only, the node name, ``detect-zeroes=unmap`` needs ``discard=unmap``,
then the driver's own checks, children first where the driver opens them.

Inline children (a BlockdevRef given as an object) inherit from their
parent, as QEMU's ``bdrv_inherited_options``: ``read-only``,
``auto-read-only``, ``cache.direct`` and ``cache.no-flush`` unless set,
and ``discard`` defaults to ``unmap`` (the parent enforces its own policy).
A string BlockdevRef names an existing node.

A failed call leaves the graph as it was: nodes built so far are closed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import GenericError
from .blkdebug import open_blkdebug
from .file import FileNode
from .graph import BlockGraph
from .node import BlockNode, CommonOptions
from .null import NullAioNode, NullNode
from .qcow2.open import open_qcow2
from .raw import RawNode

_Builder = Callable[["_Build", str, CommonOptions, dict[str, Any]], BlockNode]

# Options a child inherits unless it sets them (QEMU: bdrv_inherited_options).
_INHERITED = ("read-only", "auto-read-only", "force-share")
_INHERITED_CACHE = ("direct", "no-flush")


def common_options(args: dict[str, Any]) -> CommonOptions:
    cache = args.get("cache") or {}
    return CommonOptions(
        read_only=bool(args.get("read-only", False)),
        auto_read_only=bool(args.get("auto-read-only", False)),
        force_share=bool(args.get("force-share", False)),
        discard=args.get("discard", "ignore"),
        detect_zeroes=args.get("detect-zeroes", "off"),
        cache_direct=bool(cache.get("direct", False)),
        cache_no_flush=bool(cache.get("no-flush", False)),
        active=bool(args.get("active", True)),
    )


def inherit(child: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """The options of an inline child after inheritance from ``parent``."""
    out = dict(child)
    for key in _INHERITED:
        if key not in out and key in parent:
            out[key] = parent[key]
    parent_cache = parent.get("cache") or {}
    cache = dict(out.get("cache") or {})
    for key in _INHERITED_CACHE:
        if key not in cache and key in parent_cache:
            cache[key] = parent_cache[key]
    if cache:
        out["cache"] = cache
    out.setdefault("discard", "unmap")
    return out


class _Build:
    """One blockdev-add in progress: what it created, for undoing."""

    def __init__(self, graph: BlockGraph) -> None:
        self.graph = graph
        self.created: list[BlockNode] = []
        #: For each node built here: when its build began (an index into
        #: ``created``) and the node of its subtree oldest in the graph.
        self._began: dict[int, int] = {}
        self._oldest: dict[int, BlockNode] = {}

    def child(self, ref: str | dict[str, Any], parent_args: dict[str, Any]) -> BlockNode:
        if isinstance(ref, str):
            return self.graph.lookup(ref)
        return self.node(inherit(ref, parent_args), top=False)

    def node(self, args: dict[str, Any], *, top: bool) -> BlockNode:
        began = len(self.created)
        driver = args["driver"]
        builder = DRIVERS.get(driver)
        if builder is None:
            raise GenericError(f"Unknown driver '{driver}'")
        common = common_options(args)
        if common.force_share and not common.read_only:
            raise GenericError("force-share=on can only be used with read-only images")
        name = args.get("node-name")
        auto = name is None
        if name is None:
            assert not top, "the caller checks the root node has a name"
            name = self.graph.auto_name()
        else:
            self.graph.check_name(name)
        self.graph.reserve(name)
        try:
            if common.detect_zeroes == "unmap" and common.discard != "unmap":
                raise GenericError(
                    "setting detect-zeroes to unmap is not allowed without "
                    "setting discard operation to unmap"
                )
            node = builder(self, name, common, args)
        except BaseException:
            self.graph.unreserve(name)
            raise
        node.auto_named = auto
        for role, child in node.children.items():
            child.add_parent(node, role)
        self._register(node, began)
        return node

    def _register(self, node: BlockNode, began: int) -> None:
        """Insert ``node`` where QEMU would have named it: after the
        children it opens first (``named_after``), before the others
        built here, whose subtrees the graph holds in build order."""
        built = sorted(
            ((role, child) for role, child in node.children.items() if id(child) in self._began),
            key=lambda rc: self._began[id(rc[1])],
        )
        later = [child for role, child in built if role not in type(node).named_after]
        before = self._oldest[id(later[0])] if later else None
        self.graph.insert(node, before=before)
        self.created.append(node)
        self._began[id(node)] = began
        first = built[0][1] if built else None
        if first is None or (later and first is later[0]):
            self._oldest[id(node)] = node
        else:
            self._oldest[id(node)] = self._oldest[id(first)]

    def undo(self) -> None:
        for node in reversed(self.created):
            for role, child in node.children.items():
                if (node, role) in child.parents:
                    child.remove_parent(node, role)
                    child.refresh_perms()
            node.close()
            self.graph.discard(node)


def _file(build: _Build, name: str, common: CommonOptions, args: dict[str, Any]) -> BlockNode:
    return FileNode(
        name,
        common,
        filename=args["filename"],
        locking=args.get("locking", "auto"),
        aio=args.get("aio", "threads"),
        pr_manager=args.get("pr-manager"),
    )


def _null(cls: type[NullNode]) -> _Builder:
    def build_null(
        build: _Build, name: str, common: CommonOptions, args: dict[str, Any]
    ) -> BlockNode:
        return cls(
            name,
            common,
            size=args.get("size"),
            latency_ns=args.get("latency-ns"),
            read_zeroes=args.get("read-zeroes"),
        )

    return build_null


def _raw(build: _Build, name: str, common: CommonOptions, args: dict[str, Any]) -> BlockNode:
    for key in ("offset", "size"):
        value = args.get(key)
        if value is not None and value < 0:
            # QEMU parses these before it opens the child (11.1's text).
            raise GenericError(f"Value '{value}' is out of range for parameter '{key}'")
    file = build.child(args["file"], args)
    return RawNode(name, common, file=file, offset=args.get("offset"), size=args.get("size"))


#: The drivers qmpd implements; every other BlockdevDriver value is refused
#: with QEMU's "Unknown driver" text.
DRIVERS: dict[str, _Builder] = {
    "blkdebug": open_blkdebug,
    "file": _file,
    "null-co": _null(NullNode),
    "null-aio": _null(NullAioNode),
    "qcow2": open_qcow2,
    "raw": _raw,
}


def blockdev_add(graph: BlockGraph, args: dict[str, Any]) -> BlockNode:
    """Build the node ``args`` (checked BlockdevOptions) describes, with its
    inline children, and make it monitor-owned.

    Raises GenericError with QEMU's text; the graph is unchanged then.
    """
    if "node-name" not in args:
        raise GenericError("'node-name' must be specified for the root node")
    build = _Build(graph)
    try:
        node = build.node(args, top=True)
        node.refresh_perms()
        for built in build.created:  # children first
            built.after_open()
    except BaseException:
        build.undo()
        raise
    node.monitor_owned = True
    return node


__all__ = ["DRIVERS", "blockdev_add", "common_options", "inherit"]
