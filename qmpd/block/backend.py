"""BlockBackends and the guest devices that hold them.

Theory of operation.  A :class:`BlockBackend` is QEMU's BlockBackend in
miniature: the one way something outside the graph (a guest device, a
qemu-io command, later a job or an export) does I/O on a *root* node.  It
is registered on that node as a :class:`~.node.NodeUser`, so the node's
permissions include the backend's and ``blockdev-del`` answers ``Node x
is in use`` while it is attached.  The backend looks its node up on every
request, so a job that swaps the root (a mirror's pivot, a filter put on
top) calls :meth:`BlockBackend.replace_node` and every later write goes
to the new node.

Attaching, changing permissions and moving go through the graph
(:meth:`~.graph.BlockGraph.change_users`), which checks QEMU's rules on
the node and everything below it (:meth:`~.node.BlockNode.check_perms`)
before anything changes.

:class:`DeviceSet` holds the guest devices ``device_add`` creates.  qmpd
has no machine, so it models only what a management client can observe:
QOM paths (``/machine/peripheral/ID`` or ``/machine/peripheral-anon/
device[N]``), the part holding the backend (virtio devices keep it on an
internal ``virtio-backend`` child, which is what ``query-block`` names as
``qdev``), buses by name, and the DEVICE_DELETED events of an unplug.
With no guest to acknowledge it, every unplug completes at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import DeviceNotFound, GenericError
from .graph import BlockGraph
from .node import BACKEND_KIND, BlockNode, NodeUser, Perm

# What a guest disk asks of its node and lets others do (QEMU's
# blkconf_apply_backend_options for a resizable, writable disk without
# share-rw).
DISK_PERM = Perm.CONSISTENT_READ | Perm.WRITE
DISK_SHARED = Perm.CONSISTENT_READ | Perm.WRITE_UNCHANGED | Perm.RESIZE


@dataclass(eq=False)
class BlockBackend:
    """An attachment of a user to a root node; see the module docstring.

    ``name`` is the backend's name ("" for anonymous ones); ``owner`` is
    what permission errors call it (a device's QOM path, or "").
    """

    name: str
    node: BlockNode
    user: NodeUser

    @classmethod
    def attach(
        cls, graph: BlockGraph, node: BlockNode, owner: str, perm: int, shared: int, name: str = ""
    ) -> BlockBackend:
        """Attach a new backend to ``node``.

        Raises GenericError for a permission conflict (QEMU's text), a
        write permission on a read-only node, or another process's lock.
        """
        user = NodeUser(owner, BACKEND_KIND, perm, shared)
        graph.attach(node, user)
        return cls(name, node, user)

    def detach(self, graph: BlockGraph) -> None:
        graph.detach(self.node, self.user)

    def set_perm(self, graph: BlockGraph, perm: int, shared: int) -> None:
        """Change what the backend asks and shares (qemu-io asks for write
        before writing).  Raises GenericError as :meth:`attach`; the
        backend keeps its old permissions then."""
        new = NodeUser(self.user.name, self.user.kind, perm, shared)
        graph.change_users([(self.node, self.user, new)])
        self.user = new

    def replace_node(self, graph: BlockGraph, node: BlockNode) -> None:
        """Point the backend at ``node`` instead (a job's pivot).

        Raises GenericError when ``node`` cannot grant the permissions;
        the backend stays where it was then.
        """
        graph.change_users([(self.node, self.user, None), (node, None, self.user)])
        self.node = node

    # The I/O entry points: the current root node's, at the moment of use.

    async def read(self, offset: int, length: int) -> bytes:
        return await self.node.read(offset, length)

    async def write(self, offset: int, data: bytes) -> None:
        await self.node.write(offset, data)

    async def write_zeroes(self, offset: int, length: int, may_unmap: bool = False) -> str:
        return await self.node.write_zeroes(offset, length, may_unmap)

    async def discard(self, offset: int, length: int) -> None:
        await self.node.discard(offset, length)

    async def flush(self) -> None:
        await self.node.flush()

    async def truncate(self, size: int) -> None:
        await self.node.truncate(size)


# ----------------------------------------------------------------- devices


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """What qmpd knows of one device type.

    ``qom_type`` names the object holding the ``drive`` property in
    errors; ``backend_child`` is the QOM child that holds the backend
    (virtio); ``bus`` is the kind of bus it plugs into; ``provides`` the
    kind of bus it creates (controllers); ``follows_read_only``: on a
    read-only node the disk becomes read-only (QEMU's virtio-blk and
    scsi-hd), instead of failing (ide-hd).
    """

    qom_type: str
    bus: str
    has_drive: bool = True
    backend_child: str | None = None
    provides: str | None = None
    follows_read_only: bool = False


MODELS: dict[str, DeviceModel] = {
    "virtio-blk-pci": DeviceModel(
        "virtio-blk-device", "PCI", backend_child="virtio-backend", follows_read_only=True
    ),
    "scsi-hd": DeviceModel("scsi-hd", "SCSI", follows_read_only=True),
    "ide-hd": DeviceModel("ide-hd", "IDE"),
    "virtio-scsi-pci": DeviceModel("virtio-scsi-pci", "PCI", has_drive=False, provides="SCSI"),
}
#: QEMU's aliases on x86 (qdev-monitor.c).
ALIASES = {"virtio-blk": "virtio-blk-pci", "virtio-scsi": "virtio-scsi-pci"}
#: The buses a pc machine without devices has.
MACHINE_BUSES = {"pci.0": "PCI", "ide.0": "IDE", "ide.1": "IDE"}


def _wellformed_id(name: str) -> bool:
    # QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'.
    return (
        bool(name)
        and name[0].isascii()
        and name[0].isalpha()
        and all(c.isascii() and (c.isalnum() or c in "-._") for c in name)
    )


@dataclass(eq=False)
class Device:
    """One plugged device."""

    id: str | None
    driver: str
    model: DeviceModel
    path: str
    bus: str
    backend: BlockBackend | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def backend_path(self) -> str:
        """The QOM path of the part holding the backend."""
        if self.model.backend_child:
            return f"{self.path}/{self.model.backend_child}"
        return self.path

    @property
    def qdev(self) -> str:
        """``query-block``'s ``qdev``: the holder's id, else its QOM path."""
        if self.model.backend_child or self.id is None:
            return self.backend_path
        return self.id

    def deleted_events(self) -> list[dict[str, Any]]:
        """DEVICE_DELETED data for an unplug, in QEMU's order (internal
        children first, they have no id)."""
        events: list[dict[str, Any]] = []
        if self.model.backend_child:
            events.append({"path": self.backend_path})
        events.append({"device": self.id, "path": self.path} if self.id else {"path": self.path})
        return events


class DeviceSet:
    """The guest's devices, in the order they were plugged."""

    def __init__(self) -> None:
        self._devices: list[Device] = []
        self._anon = 0

    def __iter__(self) -> Iterator[Device]:
        return iter(list(self._devices))

    def find(self, name: str) -> Device:
        """A device by id or QOM path.  Raises DeviceNotFound."""
        for dev in self._devices:
            if name in (dev.id, dev.path):
                return dev
        raise DeviceNotFound(f"Device '{name}' not found")

    def find_backend(self, name: str) -> BlockBackend:
        """The backend of the object ``name`` (an id or QOM path) names, as
        ``qemu-io -d`` looks it up.  Raises GenericError."""
        for dev in self._devices:
            if dev.backend is None:
                continue
            # A virtio disk keeps its backend on a child object: its own
            # id or path finds the device, but one without a backend.
            if name == dev.backend_path or (dev.model.backend_child is None and name == dev.id):
                return dev.backend
        try:
            self.find(name)
        except DeviceNotFound as err:
            raise GenericError(err.desc) from None
        raise GenericError("Device does not have a block device backend")

    def backends(self) -> list[BlockBackend]:
        return [dev.backend for dev in self._devices if dev.backend is not None]

    def backends_on(self, node: BlockNode) -> list[BlockBackend]:
        """The device backends whose root is ``node`` (for a job's pivot)."""
        return [b for b in self.backends() if b.node is node]

    def device_of(self, backend: BlockBackend) -> Device | None:
        for dev in self._devices:
            if dev.backend is backend:
                return dev
        return None

    # ------------------------------------------------------------- plugging

    def _bus_for(self, model: DeviceModel, driver: str, bus: Any) -> str:
        buses = dict(MACHINE_BUSES)
        for dev in self._devices:
            if dev.model.provides:
                buses[f"{dev.id or dev.path}.0"] = dev.model.provides
        if isinstance(bus, str):
            if bus not in buses:
                raise GenericError(f"Bus '{bus}' not found")
            if buses[bus] != model.bus:
                raise GenericError(f"Device '{driver}' can't go on {buses[bus]} bus")
            return bus
        for name, kind in buses.items():
            if kind == model.bus:
                return name
        raise GenericError(f"No '{model.bus}' bus found for device '{driver}'")

    def add(self, graph: BlockGraph, props: dict[str, Any]) -> Device:
        """``device_add``: plug a device described by QMP's arguments.

        Raises GenericError with QEMU's texts, in QEMU's order: no driver;
        unknown driver; bad id; duplicate id; no suitable bus; property
        problems (unknown property, drive not a string or not found, no
        drive); a permission conflict on the node.
        """
        props = dict(props)
        driver = props.pop("driver", None)
        if not isinstance(driver, str):
            raise GenericError("Parameter 'driver' is missing")
        model = MODELS.get(ALIASES.get(driver, driver))
        if model is None:
            raise GenericError(f"'{driver}' is not a valid device model name")
        bus = self._bus_for(model, driver, props.pop("bus", None))
        # A non-string id is ignored as QEMU's qdict_get_try_str ignores it.
        dev_id = props.pop("id", None)
        dev_id = dev_id if isinstance(dev_id, str) else None
        if dev_id is not None:
            if not _wellformed_id(dev_id):
                raise GenericError(f"Invalid qdev ID '{dev_id}'")
            if any(d.id == dev_id for d in self._devices):
                raise GenericError(f"Duplicate device ID '{dev_id}'")
        drive = props.pop("drive", None)
        share_rw = props.pop("share-rw", False)
        known = {"serial", "bootindex", "write-cache", "addr", "num-queues"}
        for name in props:
            if name not in known:
                raise GenericError(f"Property '{driver}.{name}' not found")
        if dev_id is not None:
            path = f"/machine/peripheral/{dev_id}"
        else:
            path = f"/machine/peripheral-anon/device[{self._anon}]"
            self._anon += 1
        dev = Device(dev_id, driver, model, path, bus, properties=props)
        if model.has_drive:
            if drive is not None and not isinstance(drive, str):
                raise GenericError("Invalid parameter type for 'drive', expected: string")
            if drive is None:
                raise GenericError("drive property not set")
            node = graph.get(drive)
            if node is None:
                raise GenericError(f"Property '{model.qom_type}.drive' can't find value '{drive}'")
            shared = DISK_SHARED | (Perm.WRITE if share_rw is True else 0)
            # QEMU's blkconf_apply_backend_options: a read-only disk only
            # reads; a writable one on a read-only node fails in
            # graph.attach with QEMU's "Block node is read-only".
            perm = DISK_PERM
            if node.read_only and model.follows_read_only:
                perm = Perm.CONSISTENT_READ
            # Errors and the graph name it as QEMU does: by id, else QOM path.
            dev.backend = BlockBackend.attach(graph, node, dev.qdev, perm, shared)
        self._devices.append(dev)
        return dev

    def delete(self, graph: BlockGraph, name: str) -> list[dict[str, Any]]:
        """``device_del``: unplug at once; returns DEVICE_DELETED data to
        emit, in order.  A controller takes its disks with it (first).

        Raises DeviceNotFound.
        """
        dev = self.find(name)
        events: list[dict[str, Any]] = []
        if dev.model.provides:
            own = {f"{dev.id or dev.path}.0"}
            for child in [d for d in self._devices if d.bus in own]:
                events += self._unplug(graph, child)
        events += self._unplug(graph, dev)
        return events

    def _unplug(self, graph: BlockGraph, dev: Device) -> list[dict[str, Any]]:
        if dev.backend is not None:
            dev.backend.detach(graph)
            dev.backend = None
        self._devices.remove(dev)
        return dev.deleted_events()


__all__ = [
    "BACKEND_KIND",
    "DISK_PERM",
    "DISK_SHARED",
    "MODELS",
    "BlockBackend",
    "Device",
    "DeviceModel",
    "DeviceSet",
]
