"""The block graph: every node by name, edges, users, and the rules for removal.

Theory of operation.  Nodes enter the graph through :mod:`.options`
(``blockdev-add``/``--blockdev``), which builds a node and its inline
children and then :meth:`BlockGraph.insert`\\ s them.  The top node of
each such call is *monitor-owned*; inline children are implicit and go away
with their last parent.  Users outside the graph (BlockBackends, jobs'
own edges) :meth:`~BlockGraph.attach` to a node with the permissions they
need, in one checked transaction (:meth:`~BlockGraph.change_users`, which
checks the node and everything below it); while a BlockBackend is attached
the node cannot be deleted.  Jobs may also :meth:`~BlockGraph.block` a
node ("op blockers").

Names follow QEMU (util/id.c ``id_wellformed``, block.c
``bdrv_assign_node_name``): a letter, then letters, digits, ``-``, ``.``
and ``_``; at most 31 characters.  Nodes given no name are called
``#block`` + a counter + two random digits, a form no client can choose.
Listing is newest first, as QEMU prepends new nodes to its list.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from ..errors import GenericError
from .node import BACKEND_KIND, BlockNode, NodeUser, refresh_perms

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*\Z")
MAX_NAME_LEN = 31


class BlockGraph:
    """All block nodes of the daemon (one per App)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._nodes: dict[str, BlockNode] = {}
        self._reserved: set[str] = set()
        self._counter = 0
        self._rng = rng or random.Random()
        #: Reasons a node may not be deleted now (QEMU's op blockers).
        self._blockers: dict[str, list[str]] = {}
        #: Names of BlockBackends (devices); a node may not take one.
        self.device_ids: set[str] = set()

    # ------------------------------------------------------------- lookup

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[BlockNode]:
        return iter(self._nodes.values())

    def get(self, name: str) -> BlockNode | None:
        return self._nodes.get(name)

    def lookup(self, name: str) -> BlockNode:
        """The node a BlockdevRef string names.

        Raises GenericError ``Cannot find device='x' nor node-name='x'``.
        """
        node = self._nodes.get(name)
        if node is None:
            raise GenericError(f"Cannot find device='{name}' nor node-name='{name}'")
        return node

    def find(self, name: str) -> BlockNode:
        """The node ``node-name`` arguments name (blockdev-del, x- commands).

        Raises GenericError ``Failed to find node with node-name='x'``.
        """
        node = self._nodes.get(name)
        if node is None:
            raise GenericError(f"Failed to find node with node-name='{name}'")
        return node

    def newest_first(self) -> list[BlockNode]:
        """Every node, in QEMU's order: newest name first (QEMU lists nodes
        in the reverse order it named them)."""
        return list(reversed(self._nodes.values()))

    # ------------------------------------------------------------- naming

    def check_name(self, name: str) -> None:
        """Refuse a node-name as QEMU does, in QEMU's order.  Raises GenericError."""
        if not _NAME_RE.match(name):
            raise GenericError(f"Invalid node-name: '{name}'")
        if name in self.device_ids:
            raise GenericError(f"node-name={name} is conflicting with a device id")
        if name in self._nodes or name in self._reserved:
            raise GenericError(f"Duplicate nodes with node-name='{name}'")
        if len(name) > MAX_NAME_LEN:
            raise GenericError("Node name too long")

    def reserve(self, name: str) -> None:
        """Hold a checked name while its node is being built."""
        self._reserved.add(name)

    def unreserve(self, name: str) -> None:
        self._reserved.discard(name)

    def auto_name(self) -> str:
        """A fresh ``#block<counter><2 random digits>`` name."""
        while True:
            name = f"#block{self._counter}{self._rng.randrange(100):02d}"
            self._counter += 1
            if name not in self._nodes and name not in self._reserved:
                return name

    # ------------------------------------------------------------- changes

    def insert(self, node: BlockNode, before: BlockNode | None = None) -> None:
        """Register a built node (its children must be registered already):
        newest, or just older than ``before`` (see :meth:`newest_first`)."""
        assert node.name not in self._nodes, node.name
        self._reserved.discard(node.name)
        if before is None:
            self._nodes[node.name] = node
            return
        items = list(self._nodes.items())
        at = next(i for i, (name, _) in enumerate(items) if name == before.name)
        items.insert(at, (node.name, node))
        self._nodes = dict(items)

    def attach(self, node: BlockNode, user: NodeUser) -> None:
        """Let ``user`` use ``node`` with its permissions.

        Raises GenericError when the permissions cannot be granted on the
        node or any node below it (a permission conflict, a read-only
        node, another process's lock); the graph is then unchanged.
        """
        self.change_users([(node, None, user)])

    def detach(self, node: BlockNode, user: NodeUser) -> None:
        """Undo :meth:`attach`; relaxing permissions cannot fail."""
        self.change_users([(node, user, None)])

    def change_users(
        self, changes: list[tuple[BlockNode, NodeUser | None, NodeUser | None]]
    ) -> None:
        """Make several user changes at once, as one transaction: each
        ``(node, old, new)`` adds ``new`` (``old`` None), removes ``old``
        (``new`` None) or puts ``new`` in ``old``'s place.

        Every node concerned, and every node below them, is checked before
        anything is applied.  Raises GenericError as :meth:`attach`; all
        changes are undone then.
        """
        done: list[tuple[BlockNode, NodeUser | None, NodeUser | None]] = []
        for node, old, new in changes:
            _swap(node, old, new)
            done.append((node, old, new))
        roots = list({id(node): node for node, _, _ in changes}.values())
        try:
            refresh_perms(roots)
        except GenericError:
            for node, old, new in reversed(done):
                _swap(node, new, old)
            refresh_perms(roots)
            raise

    def block(self, node: BlockNode, reason: str) -> None:
        """Forbid deleting ``node`` for ``reason`` (e.g. ``block device is in
        use by block job: mirror``) until :meth:`unblock`."""
        self._blockers.setdefault(node.name, []).append(reason)

    def unblock(self, node: BlockNode, reason: str) -> None:
        reasons = self._blockers.get(node.name, [])
        reasons.remove(reason)
        if not reasons:
            self._blockers.pop(node.name, None)

    def blocker(self, node: BlockNode) -> str | None:
        """The first reason ``node`` is blocked, or None (QEMU's
        bdrv_op_is_blocked: ``Node 'x' is busy: <reason>``)."""
        reasons = self._blockers.get(node.name)
        return reasons[0] if reasons else None

    def deletable(self, name: str) -> BlockNode:
        """The node ``blockdev-del`` may remove: monitor-owned, nobody uses it.

        Raises GenericError with QEMU's text, checks in QEMU's order: no such
        node; attached to a user (``Node x is in use``); op blocker; not
        monitor-owned; still a child of another node (``Block device x is
        in use``).
        """
        node = self.find(name)
        # QEMU's bdrv_has_blk: a BlockBackend, not a job's own edge.
        if any(user.kind == BACKEND_KIND for user in node.users):
            raise GenericError(f"Node {name} is in use")
        reasons = self._blockers.get(name)
        if reasons:
            raise GenericError(f"Node '{name}' is busy: {reasons[0]}")
        if not node.monitor_owned:
            raise GenericError(f"Node {name} is not owned by the monitor")
        if node.parents:
            raise GenericError(f"Block device {name} is in use")
        return node

    def delete(self, name: str) -> None:
        """Remove a :meth:`deletable` node at once, without flushing (tests
        and paths without an event loop; ``blockdev-del`` flushes with
        :meth:`arelease`).  Inline children go with it; named children stay.
        Raises GenericError as :meth:`deletable`."""
        self.release(self.deletable(name))

    def release(self, node: BlockNode) -> None:
        """Close ``node`` and drop its edges; implicit children without other
        parents or users are released too."""
        # The parent closes first: a format node may still write to its
        # children while closing (qcow2 clears its dirty bit).
        node.close()
        for child in self._unlink(node):
            self.release(child)

    async def arelease(self, node: BlockNode) -> None:
        """:meth:`release`, each node flushed before it closes as QEMU's
        bdrv_close does (:meth:`BlockNode.aclose`).  The caller keeps
        others from using the nodes meanwhile (the command lock).  Raises
        nothing: a failed flush is logged and the node closed all the same."""
        await node.aclose()
        for child in self._unlink(node):
            await self.arelease(child)

    def _unlink(self, node: BlockNode) -> list[BlockNode]:
        """Forget closed ``node`` and its edges; return its implicit children
        left without parents or users, which go with it."""
        orphans = []
        for role, child in list(node.children.items()):
            child.remove_parent(node, role)
            if not child.monitor_owned and not child.parents and not child.users:
                orphans.append(child)
            else:
                child.refresh_perms()
        if self._nodes.get(node.name) is node:
            del self._nodes[node.name]
        self._reserved.discard(node.name)
        return orphans

    def discard(self, node: BlockNode) -> None:
        """Forget ``node`` without touching its edges (undoing a failed build)."""
        if self._nodes.get(node.name) is node:
            del self._nodes[node.name]
        self._reserved.discard(node.name)

    def close_order(self) -> list[BlockNode]:
        """Every node, each after all of its parents (QEMU closes a node
        when its last parent lets go of it): a format node may still write
        to its children while it closes."""
        order: list[BlockNode] = []
        waiting = self.newest_first()
        while waiting:
            open_ids = {id(n) for n in waiting}
            ready = [n for n in waiting if not any(id(p) in open_ids for p, _ in n.parents)]
            if not ready:  # a cycle cannot be built; never loop on one
                ready = waiting[:1]
            order += ready
            closed = {id(n) for n in ready}
            waiting = [n for n in waiting if id(n) not in closed]
        return order

    async def aclose_all(self) -> None:
        """Flush and close every node, parents first (daemon shutdown,
        QEMU's bdrv_close_all).  Raises nothing (see BlockNode.aclose)."""
        for node in self.close_order():
            await node.aclose()
        self._nodes.clear()

    def close_all(self) -> None:
        """Close every node at once, without flushing (tests; a daemon
        shuts down with :meth:`aclose_all`)."""
        for node in self.close_order():
            node.close()
        self._nodes.clear()


def _swap(node: BlockNode, old: NodeUser | None, new: NodeUser | None) -> None:
    if old is None and new is not None:
        node.add_user(new)
    elif new is None and old is not None:
        node.remove_user(old)
    elif old is not None and new is not None:
        node.replace_user(old, new)


__all__ = ["MAX_NAME_LEN", "BlockGraph"]
