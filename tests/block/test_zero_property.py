"""Stateful property test: random I/O against an in-memory model.

The bug hunted: a node (block status or known_zero) claiming zero for
bytes that hold data.  That would let a mirror skip copying them, silently
corrupting the copy.  The machine runs on a real file node and on raw over
a file with an offset, under random discard and detect-zeroes settings.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from qmpd.block import BlockGraph, BlockNode, blockdev_add
from qmpd.block.zerostate import SCAN_LIMIT

T = TypeVar("T")
MAX_SIZE = 256 * 1024
# Sizes and offsets mix block-aligned values with odd ones, and reach the
# whole range (Hypothesis alone prefers small integers).
SIZES = st.one_of(st.sampled_from([65536, 100_000, 200_704, MAX_SIZE]), st.integers(0, MAX_SIZE))
PREFIX = 4096  # raw's offset into its file; the prefix holds data


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return trio.run(fn, *args)


class ZeroModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="qmpd-zero-"))
        self.graph = BlockGraph()
        self.model = bytearray()
        self.node: BlockNode | None = None

    @initialize(
        size=SIZES,
        layout=st.sampled_from(["file", "raw-offset"]),
        discard=st.sampled_from(["ignore", "unmap"]),
        detect=st.sampled_from(["off", "on", "unmap"]),
    )
    def setup(self, size: int, layout: str, discard: str, detect: str) -> None:
        if detect == "unmap" and discard != "unmap":
            detect = "on"
        path = self.dir / "disk.img"
        with open(path, "wb") as f:
            if layout == "raw-offset":
                f.write(b"\xee" * PREFIX)
            f.truncate(size + (PREFIX if layout == "raw-offset" else 0))
        common = {"node-name": "n", "discard": discard, "detect-zeroes": detect}
        if layout == "file":
            args = {"driver": "file", "filename": str(path), **common}
        else:
            file = {"driver": "file", "filename": str(path)}
            args = {"driver": "raw", "file": file, "offset": PREFIX, **common}
        self.node = blockdev_add(self.graph, args)
        self.model = bytearray(size)

    def teardown(self) -> None:
        self.graph.close_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ----------------------------------------------------------- operations

    @st.composite
    @staticmethod
    def _range(draw: st.DrawFn, size: int) -> tuple[int, int]:
        block = draw(st.integers(0, size // 4096))
        start = draw(st.sampled_from([block * 4096, min(size, block * 4096 + 1)]))
        start = draw(st.one_of(st.just(start), st.integers(0, size)))
        room = size - start
        length = draw(
            st.one_of(
                st.integers(0, min(room, 8192)),
                st.sampled_from([room, min(room, 4096), min(room, 65536)]),
                st.integers(0, min(room, 80 * 1024)),
            )
        )
        return start, length

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data(), fill=st.sampled_from([0, 1, 0x5A, 0xFF]))
    def write(self, data: st.DataObject, fill: int) -> None:
        assert self.node is not None
        start, length = data.draw(self._range(len(self.model)))
        payload = bytes([fill]) * length
        if fill and length > 2:
            payload = payload[:-1] + b"\x00"  # not all equal: a zero byte at the end
        run(self.node.write, start, payload)
        self.model[start : start + length] = payload

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data(), may_unmap=st.booleans())
    def write_zeroes(self, data: st.DataObject, may_unmap: bool) -> None:
        assert self.node is not None
        start, length = data.draw(self._range(len(self.model)))
        run(self.node.write_zeroes, start, length, may_unmap)
        self.model[start : start + length] = bytes(length)

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        assert self.node is not None
        start, length = data.draw(self._range(len(self.model)))
        run(self.node.discard, start, length)
        if self.node.unmap_allowed:
            # A host file's discard punches a hole: the range reads as zero.
            self.model[start : start + length] = bytes(length)

    @precondition(lambda self: self.node is not None)
    @rule(size=SIZES)
    def resize(self, size: int) -> None:
        assert self.node is not None
        run(self.node.truncate, size)
        if size < len(self.model):
            del self.model[size:]
        else:
            self.model.extend(bytes(size - len(self.model)))

    @precondition(lambda self: self.node is not None)
    @rule()
    def make_zero(self) -> None:
        assert self.node is not None
        result = run(self.node.make_zero)
        if result.already_zero:
            assert not any(self.model)
        self.model[:] = bytes(len(self.model))

    # ----------------------------------------------------------- invariants

    @invariant()
    def content_matches(self) -> None:
        if self.node is None:
            return
        assert self.node.size == len(self.model)
        assert run(self.node.read, 0, len(self.model)) == bytes(self.model)

    @invariant()
    def zero_claims_are_true(self) -> None:
        if self.node is None:
            return
        node = self.node
        extents = run(node.block_status, 0, len(self.model))
        for ext in extents:
            if ext.zero:
                chunk = self.model[ext.start : ext.end]
                assert not any(chunk), f"{ext} claims zero over data"
        state = run(node.known_zero)
        all_zero = not any(self.model)
        if state.open.value:
            assert all_zero, f"known_zero {state.open} but the node holds data"
        unknown = sum(e.length for e in extents if not e.zero)
        if all_zero and unknown <= SCAN_LIMIT:
            assert state.open.value, "all zero and cheap to prove, but not known zero"
        assert state.create.value  # a host file starts as holes


ZeroModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestZeroModel = ZeroModel.TestCase
