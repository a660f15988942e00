"""The ``blkdebug`` filter: fault injection as QEMU's block/blkdebug.c does it.

Theory of operation.  A blkdebug node sits between a format node and its
storage (``raw`` -> ``blkdebug`` -> ``file`` is the usual test set-up) and
passes every request to its ``image`` child, unless a rule says to fail it.
Rules are armed by *events*: named points in a request that drivers report
to the node below them (QEMU's ``BLKDBG_EVENT``; in qmpd the
:meth:`~qmpd.block.node.BlockNode.debug_event` hook).  The raw driver
reports ``read_aio`` before each read and ``write_aio`` before each write of
its file child; the qcow2 driver reports QEMU's qcow2 events before its
own requests (``l2_load``, ``l2_update``, ``l2_alloc_write``, ``l1_update``,
``refblock_update_part``, ``cluster_alloc``, ``cow_read``, ``flush_to_os``,
``flush_to_disk``...: see :mod:`.qcow2.storage`); the blkdebug node itself reports ``pwritev`` /
``pwritev_zero`` before and ``pwritev_done`` after each write it receives,
as QEMU's generic block layer does.

The rule engine (:class:`Rules`) is QEMU's, step for step:

* The node has a *state*, 1 at open.  A rule whose ``state`` is 0 applies
  in any state, otherwise only in that one.
* When an event happens, the rules for it that apply in the current state
  act: ``set-state`` rules move the node to ``new_state`` (if several
  apply, the first one given wins), and if any ``inject-error`` rule
  applies, those rules *replace* the set of armed rules.  An event no
  error rule applies to leaves the armed set as it is.
* Each request of kind ``iotype`` (read, write, write-zeroes, discard,
  flush, block-status) is checked against the armed rules in the order
  given: the first whose iotypes include the request's and whose
  ``sector`` (if any) lies in the request fails it with ``errno`` (EIO by
  default; a rule with errno 0 lets the request through).  A ``once`` rule
  is removed after failing one request.  Without ``immediately`` the
  failure is returned after a trip through the event loop, as QEMU's.
  The default iotypes are all but block-status.  A flush reaches the rules
  only when something was written since the last successful flush (QEMU's
  write generation check), and never matches a ``sector`` rule.

qmpd refuses what it does not implement: a ``config`` file (so no
``suspend`` rules either), ``delay-ns``, the limit overrides (``align``,
``max-transfer``...: qmpd neither splits nor pads requests) and negative
errnos.  Zero facts come from the image without consulting the rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, ClassVar

import trio

from ..errors import GenericError
from .extents import Extent
from .node import BlockIOError, BlockNode, CommonOptions, Perm
from .zerostate import KnownZero

#: BlkdebugIOType, in the schema's order.
IOTYPES = ("read", "write", "write-zeroes", "discard", "flush", "block-status")
#: QEMU's default when a rule gives no iotype: everything but block-status.
DEFAULT_IOTYPES = frozenset(IOTYPES[:5])
#: The options QEMU refuses to drop from a ``json:`` filename (its
#: strong_runtime_opts), with the rule lists flattened under them.
_LIMITS = (
    "align",
    "max-transfer",
    "opt-write-zero",
    "max-write-zero",
    "opt-discard",
    "max-discard",
)
_PERMS = {
    "consistent-read": Perm.CONSISTENT_READ,
    "write": Perm.WRITE,
    "write-unchanged": Perm.WRITE_UNCHANGED,
    "resize": Perm.RESIZE,
}
#: The sector value that means "any request" (QEMU stores -1 as "none").
_ANY_SECTOR = -1


# eq=False: rules are compared by identity, two equal rules are two rules.
@dataclass(frozen=True, slots=True, eq=False)
class InjectError:
    """An ``inject-error`` rule (BlkdebugInjectErrorOptions), checked."""

    event: str
    state: int = 0
    iotypes: frozenset[str] = DEFAULT_IOTYPES
    errno: int = 5  # EIO
    #: Byte offset of the sector a request must cover; None: any request.
    offset: int | None = None
    once: bool = False
    immediately: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class SetState:
    """A ``set-state`` rule (BlkdebugSetStateOptions)."""

    event: str
    new_state: int
    state: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`Rules.check` decided: fail with ``errno`` (0: do not),
    ``immediately`` or after a yield."""

    errno: int = 0
    immediately: bool = True


PASS = Verdict()


class Rules:
    """QEMU's blkdebug rule engine, without I/O (see the module docstring)."""

    def __init__(self, rules: list[InjectError | SetState]) -> None:
        #: In the order given (QEMU keeps them reversed per event).
        self._rules = list(rules)
        #: Armed error rules, in the order given.
        self.armed: list[InjectError] = []
        self.state = 1

    @property
    def rules(self) -> tuple[InjectError | SetState, ...]:
        return tuple(self._rules)

    def event(self, name: str) -> None:
        """``name`` happened: arm error rules, change state."""
        new_state = self.state
        armed: list[InjectError] | None = None
        # QEMU walks the event's rules newest first, so the first given
        # set-state rule is the last to write new_state and wins.
        for rule in reversed(self._rules):
            if rule.event != name or (rule.state and rule.state != self.state):
                continue
            if isinstance(rule, SetState):
                new_state = rule.new_state
            else:
                if armed is None:
                    armed = []
                armed.insert(0, rule)
        if armed is not None:
            self.armed = armed
        self.state = new_state

    def check(self, offset: int, length: int, iotype: str) -> Verdict:
        """The verdict for a request of kind ``iotype`` on ``[offset, offset+length)``."""
        for rule in self.armed:
            if iotype not in rule.iotypes:
                continue
            if rule.offset is None or (length and offset <= rule.offset < offset + length):
                break
        else:
            return PASS
        if not rule.errno:
            # QEMU stops at the first match even when it injects nothing
            # (and a once rule then stays).
            return PASS
        if rule.once:
            self.armed.remove(rule)
            self._rules.remove(rule)
        return Verdict(rule.errno, rule.immediately)


def _refuse(option: str) -> GenericError:
    return GenericError(f"Block protocol 'blkdebug' doesn't support the option '{option}' in qmpd")


def parse_rules(args: dict[str, Any]) -> list[InjectError | SetState]:
    """The rules of checked BlockdevOptionsBlkdebug ``args``, in the order given.

    Raises GenericError for what qmpd refuses (delay-ns, a negative errno).
    """
    rules: list[InjectError | SetState] = []
    for spec in args.get("inject-error") or []:
        if "delay-ns" in spec:
            raise _refuse("inject-error.delay-ns")
        err = spec.get("errno", 5)
        if err < 0:
            raise GenericError("blkdebug: qmpd refuses a negative errno in inject-error")
        sector = spec.get("sector", _ANY_SECTOR)
        iotype = spec.get("iotype")
        rules.append(
            InjectError(
                event=spec["event"],
                state=spec.get("state", 0),
                iotypes=DEFAULT_IOTYPES if iotype is None else frozenset({iotype}),
                errno=err,
                offset=None if sector == _ANY_SECTOR else sector * 512,
                once=spec.get("once", False),
                immediately=spec.get("immediately", False),
            )
        )
    for spec in args.get("set-state") or []:
        rules.append(
            SetState(event=spec["event"], new_state=spec["new_state"], state=spec.get("state", 0))
        )
    return rules


def strong_options(args: dict[str, Any]) -> dict[str, Any]:
    """What a ``json:`` filename keeps of ``args``: QEMU flattens the rule
    lists (``inject-error.0.event``) and keeps config and the limits."""
    out: dict[str, Any] = {}
    for key in ("config", *_LIMITS):
        if key in args:
            out[key] = args[key]
    for key in ("inject-error", "set-state"):
        for i, spec in enumerate(args.get(key) or []):
            for member, value in spec.items():
                out[f"{key}.{i}.{member}"] = value
    # QEMU copies these keys twice through QDicts, each time reversing the
    # keys that share a bucket: there the first given comes first.
    return dict(reversed(out.items()))


def _perm_bits(names: list[str] | None) -> int:
    bits = 0
    for name in names or []:
        bits |= _PERMS[name]
    return bits


class BlkdebugNode(BlockNode):
    """The filter; see the module docstring."""

    driver = "blkdebug"
    # QEMU's blkdebug is a protocol driver too (``blkdebug:config:image``
    # filenames), which is why a raw node above it takes its filename.
    is_protocol = True
    is_filter: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        options: CommonOptions,
        *,
        image: BlockNode,
        rules: list[InjectError | SetState] | None = None,
        take_perms: int = 0,
        unshare_perms: int = 0,
        strong: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, options)
        self.children["image"] = image  # the graph adds the parent edge
        self.rules = Rules(rules or [])
        self.take_perms = take_perms
        self.unshare_perms = unshare_perms
        self.strong_options = dict(strong or {})
        # QEMU's write generations: a flush reaches the rules only when
        # something was written since the last flush that succeeded.
        self._write_gen = 0
        self._flushed_gen = 0

    @property
    def image(self) -> BlockNode:
        return self.children["image"]

    def debug_event(self, event: str) -> None:
        self.rules.event(event)

    async def _check(self, offset: int, length: int, iotype: str) -> None:
        verdict = self.rules.check(offset, length, iotype)
        if not verdict.errno:
            return
        if not verdict.immediately:
            await trio.lowlevel.checkpoint()
        # The request is failed in place of being made: nothing landed.
        raise BlockIOError(verdict.errno, os.strerror(verdict.errno), issued=False)

    def _size(self) -> int:
        return self.image.size

    async def _read(self, offset: int, length: int) -> bytes:
        await self._check(offset, length, "read")
        return await self.image.read(offset, length)

    async def _write(self, offset: int, data: bytes) -> None:
        self.debug_event("pwritev")
        try:
            await self._check(offset, len(data), "write")
            await self.image.write(offset, data)
        finally:
            self._wrote()

    async def _write_zeroes(self, offset: int, length: int, unmap: bool) -> str:
        self.debug_event("pwritev_zero")
        try:
            await self._check(offset, length, "write-zeroes")
            return await self.image.write_zeroes(offset, length, unmap)
        finally:
            self._wrote()

    def _wrote(self) -> None:
        # QEMU counts every write request as it finishes, failed or not.
        self.debug_event("pwritev_done")
        self._write_gen += 1

    async def _discard(self, offset: int, length: int) -> None:
        try:
            await self._check(offset, length, "discard")
            await self.image.discard(offset, length)
        finally:
            self._write_gen += 1

    async def _flush(self) -> None:
        gen = self._write_gen
        if gen != self._flushed_gen:
            await self._check(0, 0, "flush")
        await self.image.flush()
        self._flushed_gen = gen

    async def _truncate(self, size: int) -> None:
        await self.image.truncate(size)

    async def _block_status(self, offset: int, length: int) -> list[Extent]:
        await self._check(offset, length, "block-status")
        return await self.image.block_status(offset, length)

    def _create_zero(self) -> KnownZero:
        return self.image._create_zero()

    async def _open_zero(self) -> KnownZero:
        return (await self.image.known_zero()).open

    def child_perms(self, role: str) -> tuple[int, int]:
        perm, shared = self.cumulative_perms()
        return perm | self.take_perms, shared & ~self.unshare_perms

    def exact_filename(self) -> str | None:
        # QEMU: ``blkdebug:<config>:<image>`` when nothing but the image
        # (and a config file, refused here) was given.
        below = self.image.exact_filename()
        if self.strong_options or below is None:
            return None
        return f"blkdebug::{below}"

    def limits(self) -> dict[str, int]:
        return self.image.limits()

    def has_dirty_flag(self) -> bool:
        return True


def open_blkdebug(build: Any, name: str, common: CommonOptions, args: dict[str, Any]) -> BlockNode:
    """The DRIVERS entry: checks in QEMU's order (config, rules, image,
    limits).  Raises GenericError; ``build`` is options._Build."""
    config = args.get("config")
    if config is not None:
        try:
            with open(config, "rb"):
                pass
        except OSError as err:
            raise GenericError(
                f"Could not open '{config}': {os.strerror(err.errno or 0)}"
            ) from None
        raise _refuse("config")
    rules = parse_rules(args)
    image = build.child(args["image"], args)
    for key in _LIMITS:
        if key in args:
            raise _refuse(key)
    return BlkdebugNode(
        name,
        common,
        image=image,
        rules=rules,
        take_perms=_perm_bits(args.get("take-child-perms")),
        unshare_perms=_perm_bits(args.get("unshare-child-perms")),
        strong=strong_options(args),
    )


__all__ = [
    "DEFAULT_IOTYPES",
    "IOTYPES",
    "BlkdebugNode",
    "InjectError",
    "Rules",
    "SetState",
    "Verdict",
    "open_blkdebug",
    "parse_rules",
    "strong_options",
]
