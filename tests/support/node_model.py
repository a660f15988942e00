"""A Hypothesis state machine base: random I/O on one block node against a
byte model.

Subclasses set the node up (``@initialize``), choose the request ranges
(:meth:`NodeModel.ranges`) and add what their driver does differently
(discard, resize, reopen...).  The shared rules write data and zeroes; the
shared invariants are the ones every driver owes: the node reads as the
model, and neither block status nor the known-zero answer ever claims zero
over data (a mirror would skip those bytes and corrupt the copy).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from qmpd.block import BlockGraph, BlockNode
from qmpd.block.zerostate import ZeroState

__all__ = ["NodeModel", "run"]

T = TypeVar("T")


def run(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """One request, in its own trio run (Hypothesis rules are synchronous)."""
    return trio.run(fn, *args)


class NodeModel(RuleBasedStateMachine):
    """The shared part; see the module docstring."""

    #: The temporary directory's name prefix.
    prefix = "qmpd-model-"

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.graph = BlockGraph()
        self.model = bytearray()
        self.node: BlockNode | None = None

    def teardown(self) -> None:
        self.graph.close_all()
        shutil.rmtree(self.dir, ignore_errors=True)

    def ranges(self, size: int) -> st.SearchStrategy[tuple[int, int]]:
        """``(start, length)`` inside a node of ``size`` bytes."""
        raise NotImplementedError

    # ----------------------------------------------------------- operations

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data(), fill=st.sampled_from([0, 1, 0x5A, 0xFF]))
    def write(self, data: st.DataObject, fill: int) -> None:
        assert self.node is not None
        start, length = data.draw(self.ranges(len(self.model)))
        payload = bytes([fill]) * length
        if fill and length > 2:
            payload = payload[:-1] + b"\x00"  # not all equal: a zero byte at the end
        run(self.node.write, start, payload)
        self.model[start : start + length] = payload

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data(), may_unmap=st.booleans())
    def write_zeroes(self, data: st.DataObject, may_unmap: bool) -> None:
        assert self.node is not None
        start, length = data.draw(self.ranges(len(self.model)))
        run(self.node.write_zeroes, start, length, may_unmap)
        self.model[start : start + length] = bytes(length)

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
        extents = run(self.node.block_status, 0, len(self.model))
        for ext in extents:
            if ext.zero:
                assert not any(self.model[ext.start : ext.end]), f"{ext} claims zero over data"
        state = run(self.node.known_zero)
        if state.open.value:
            assert not any(self.model), f"known zero ({state.open}) but the node holds data"
        unknown = sum(e.length for e in extents if not e.zero)
        self.check_zero_answer(state, unknown)

    def check_zero_answer(self, state: ZeroState, not_known_zero: int) -> None:
        """A driver's further promises about its known-zero answer, given
        how many bytes block status did not call zero."""
