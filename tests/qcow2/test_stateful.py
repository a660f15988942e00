"""Stateful property test: random I/O on a qcow2 node against a byte model.

The machine varies the version, cluster size, backing file (a raw file
with data, or none), lazy refcounts and the discard policy; it writes,
zero-writes, discards, grows, flushes and reopens the image, makes writes
fail on purpose (blkdebug, armed by one of QEMU's qcow2 events), and
closes the image after a failed flush.  Invariants: the
content
matches the model; no block-status extent and no known-zero answer claims
zero over data.  At the end the image must pass ``qemu-img check`` on
every installed QEMU, with no leaks.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from qmpd.block import BlockGraph, BlockIOError, blockdev_add
from qmpd.block.blkdebug import BlkdebugNode, InjectError, Rules
from qmpd.block.qcow2 import Qcow2Node
from qmpd.block.qcow2.format import ClusterKind, parse_header
from qmpd.block.qcow2.zero import flag_valid
from qmpd.block.zerostate import ZeroState
from tests.support.node_model import NodeModel, run

from .conftest import IMGS, check_clean, check_consistent, create_image

MAX_SIZE = 384 * 1024
#: QEMU's qcow2 events that precede a write qcow2 makes of its file.
FAULT_EVENTS = [
    "cluster_alloc",
    "refblock_update_part",
    "refblock_alloc",
    "l2_alloc_write",
    "l2_update",
    "write_aio",
    "cow_write",
    "l1_update",
    "pwritev",
]


@st.composite
def _range(draw: st.DrawFn, size: int) -> tuple[int, int]:
    start = draw(st.one_of(st.integers(0, size), st.sampled_from([0, size // 2, 4096])))
    start = min(start, size)
    room = size - start
    length = draw(
        st.one_of(st.integers(0, min(room, 9000)), st.sampled_from([room, min(room, 65536)]))
    )
    return start, length


class Qcow2Model(NodeModel):
    prefix = "qmpd-qcow2-"

    def __init__(self) -> None:
        super().__init__()
        self.backing = b""
        self.version = "v3"
        self.cluster = 65536
        self.discard_mode = "ignore"
        self.lazy = False
        self.faulted = False

    @initialize(
        size=st.integers(1, MAX_SIZE // 512).map(lambda n: n * 512),
        version=st.sampled_from(["v2", "v3"]),
        cluster=st.sampled_from([512, 4096, 65536]),
        backed=st.booleans(),
        discard=st.sampled_from(["ignore", "unmap"]),
        seed=st.integers(0, 255),
        lazy=st.booleans(),
    )
    def setup(
        self,
        size: int,
        version: str,
        cluster: int,
        backed: bool,
        discard: str,
        seed: int,
        lazy: bool,
    ) -> None:
        self.version, self.cluster, self.discard_mode = version, cluster, discard
        self.lazy = lazy and version == "v3"
        opts: dict[str, Any] = {"size": size, "version": version, "cluster-size": cluster}
        if self.lazy:
            opts["lazy-refcounts"] = True
        if backed:
            base = self.dir / "base.raw"
            data = bytearray(size)
            for i in range(0, size, 1536):  # stripes of data and zero
                data[i : i + 700] = bytes([(seed + i) % 251 + 1]) * len(data[i : i + 700])
            base.write_bytes(data)
            self.backing = bytes(data)
            opts.update({"backing-file": str(base), "backing-fmt": "raw"})
        self.path = self.dir / "top.qcow2"
        run(self._create, opts)
        self.model = bytearray(self.backing or bytes(size))
        self._open()

    async def _create(self, opts: dict[str, Any]) -> None:
        await create_image(self.path, **{k.replace("-", "_"): v for k, v in opts.items()})

    def _open(self) -> None:
        file = {"driver": "file", "filename": str(self.path)}
        debug = {"driver": "blkdebug", "node-name": "dbg", "image": file}
        args = {"driver": "qcow2", "node-name": "q", "file": debug, "discard": self.discard_mode}
        self.node = blockdev_add(self.graph, args)

    def teardown(self) -> None:
        self.graph.close_all()
        if self.node is not None and IMGS:
            # A failed write may leave leaked clusters, never more.
            (check_consistent if self.faulted else check_clean)(self.path)
        super().teardown()

    def ranges(self, size: int) -> st.SearchStrategy[tuple[int, int]]:
        return _range(size)

    # ----------------------------------------------------------- operations

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        assert self.node is not None
        start, length = data.draw(self.ranges(len(self.model)))
        run(self.node.discard, start, length)
        if not self.node.unmap_allowed:
            return
        # Whole clusters only; they read as zero, except that a version 2
        # image with a backing file shows the backing again.
        cs = self.cluster
        end = start + length
        first = -(-start // cs) * cs
        # A partial cluster at the very end of the image counts as whole.
        last = -(-end // cs) * cs if end == len(self.model) else end // cs * cs
        for pos in range(first, last, cs):
            if self.version == "v2" and self.backing:
                chunk = self.backing[pos : pos + cs]
                chunk += bytes(min(cs, len(self.model) - pos) - len(chunk))
            else:
                chunk = bytes(min(cs, len(self.model) - pos))
            self.model[pos : pos + len(chunk)] = chunk

    @precondition(lambda self: self.node is not None)
    @rule(grow=st.integers(0, 256))
    def resize(self, grow: int) -> None:
        assert self.node is not None
        size = min(MAX_SIZE, len(self.model) + grow * 512)
        run(self.node.truncate, size)
        self.model.extend(bytes(size - len(self.model)))

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data())
    def write_while_asking(self, data: st.DataObject) -> None:
        """A zero query while a write is in flight (issue 10, defect 3): the
        answer may show the node before or after the write, and nothing it
        leaves behind may outlive the write (the invariants ask again)."""
        assert self.node is not None
        node = self.node
        start, length = data.draw(self.ranges(len(self.model)))
        payload = b"\x5a" * length
        zero_before = not any(self.model)

        async def both() -> ZeroState:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node.write, start, payload)
                await trio.testing.wait_all_tasks_blocked()
                state = await node.known_zero()
            return state

        state = run(both)
        self.model[start : start + length] = payload
        if state.open.value:
            assert zero_before or not any(self.model), f"{state.open} while data was written"

    @precondition(lambda self: self.node is not None)
    @rule()
    def flush(self) -> None:
        assert self.node is not None
        run(self.node.flush)

    @invariant()
    def all_zero_bit_is_true(self) -> None:
        """qmpd's bit promises that the layer alone holds no non-zero byte,
        whatever the backing file holds (issue 10, defect 4: copy-on-write
        brings the backing's bytes in)."""
        node = self.node
        if not isinstance(node, Qcow2Node) or not flag_valid(node.header):
            return

        async def layer_data() -> list[int]:
            assert isinstance(node, Qcow2Node)
            found = []
            for cluster in range(-(-node.size // node.cluster_size)):
                _, entry = await node.l2_entry(cluster)
                if entry.kind is ClusterKind.COMPRESSED or (
                    entry.kind is ClusterKind.NORMAL
                    and any(await node.store.read(entry.host, node.cluster_size))
                ):
                    found.append(cluster)
            return found

        assert run(layer_data) == [], "the all-zero bit is set over data"

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data(), event=st.sampled_from(FAULT_EVENTS))
    def failing_write(self, data: st.DataObject, event: str) -> None:
        """A write whose request after ``event`` fails (issue 10, defect 8):
        whatever it left, memory and disk must agree on it, so the node
        reads the same before and after a reopen, and the image stays
        valid (checked at the end)."""
        assert self.node is not None
        start, length = data.draw(self.ranges(len(self.model)))
        debug = self.graph.find("dbg")
        assert isinstance(debug, BlkdebugNode)
        debug.rules = Rules([InjectError(event, iotypes=frozenset({"write"}), once=True)])
        try:
            run(self.node.write, start, b"\xe7" * length)
            self.model[start : start + length] = b"\xe7" * length
        except BlockIOError:
            self.faulted = True
            self.model[start : start + length] = run(self.node.read, start, length)
        finally:
            debug.rules = Rules([])
        self.reopen()

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data(), lasting=st.booleans())
    def close_after_failed_flush(self, data: st.DataObject, lasting: bool) -> None:
        """A write, then a close whose flush fails (review R2): with a rule
        that keeps failing flushes, QEMU's second write-back at close fails
        too and the image stays dirty, if it was; a rule used up by the
        first flush lets the close mark it clean.  Either way the image is
        valid (checked now, dirty or not) and holds what was written."""
        assert self.node is not None
        start, length = data.draw(self.ranges(len(self.model)))
        run(self.node.write, start, b"\x6c" * length)
        self.model[start : start + length] = b"\x6c" * length
        debug = self.graph.find("dbg")
        assert isinstance(debug, BlkdebugNode)
        rule = InjectError("flush_to_disk", iotypes=frozenset({"flush"}), once=not lasting)
        debug.rules = Rules([rule])
        dirty = parse_header(self.path.read_bytes()[:65536]).dirty
        run(self.graph.aclose_all)
        self.graph = BlockGraph()
        assert parse_header(self.path.read_bytes()[:65536]).dirty == (dirty and lasting)
        assert not dirty or self.lazy, "only lazy refcounts set the dirty bit"
        if IMGS:
            check_consistent(self.path)
        self._open()  # a dirty image is repaired here, as QEMU does

    @precondition(lambda self: self.node is not None)
    @rule()
    def reopen(self) -> None:
        self.graph.close_all()
        self.graph = BlockGraph()
        self._open()


Qcow2Model.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQcow2Model = Qcow2Model.TestCase
