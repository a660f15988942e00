"""Stateful property test: random I/O against an in-memory model.

The bug hunted: a node (block status or known_zero) claiming zero for
bytes that hold data.  That would let a mirror skip copying them, silently
corrupting the copy.  The machine runs on a real file node, on one whose
file ``blockdev-create`` made (fully preallocated: it is known zero by the
create job's record) and on raw over a file with an offset, under random
discard and detect-zeroes settings; another process's writes to the file
come in between.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule

from qmpd.block import blockdev_add
from qmpd.block.create import FileCreateOptions, close_created, open_and_lock, shape_file
from qmpd.block.zerostate import SCAN_LIMIT, ZeroState
from tests.support.node_model import NodeModel, run

MAX_SIZE = 256 * 1024
# Sizes and offsets mix block-aligned values with odd ones, and reach the
# whole range (Hypothesis alone prefers small integers).
SIZES = st.one_of(st.sampled_from([65536, 100_000, 200_704, MAX_SIZE]), st.integers(0, MAX_SIZE))
PREFIX = 4096  # raw's offset into its file; the prefix holds data


def _sectors(size: int) -> int:
    return -(-size // 512) * 512


@st.composite
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


class ZeroModel(NodeModel):
    prefix = "qmpd-zero-"

    @initialize(
        size=SIZES,
        layout=st.sampled_from(["file", "created", "raw-offset"]),
        discard=st.sampled_from(["ignore", "unmap"]),
        detect=st.sampled_from(["off", "on", "unmap"]),
    )
    def setup(self, size: int, layout: str, discard: str, detect: str) -> None:
        if detect == "unmap" and discard != "unmap":
            detect = "on"
        path = self.path = self.dir / "disk.img"
        self.base = PREFIX if layout == "raw-offset" else 0
        if layout == "created":
            opts = FileCreateOptions(str(path), size, preallocation="full")
            fd = open_and_lock(opts)
            shape_file(fd, opts)  # the zero-fill record
            close_created(fd)
        else:
            with open(path, "wb") as f:
                f.write(b"\xee" * self.base)
                f.truncate(size + self.base)
        common = {"node-name": "n", "discard": discard, "detect-zeroes": detect}
        args: dict[str, Any]
        if layout != "raw-offset":
            args = {"driver": "file", "filename": str(path), **common}
        else:
            file = {"driver": "file", "filename": str(path)}
            args = {"driver": "raw", "file": file, "offset": PREFIX, **common}
        self.node = blockdev_add(self.graph, args)
        # QEMU's (and qmpd's) nodes are whole 512-byte sectors long; the
        # tail past the file's end reads as zero.
        self.model = bytearray(_sectors(size))

    def ranges(self, size: int) -> st.SearchStrategy[tuple[int, int]]:
        return _range(size)

    # ----------------------------------------------------------- operations

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        assert self.node is not None
        start, length = data.draw(self.ranges(len(self.model)))
        run(self.node.discard, start, length)
        if self.node.unmap_allowed:
            # A host file's discard punches a hole: the range reads as zero.
            self.model[start : start + length] = bytes(length)

    @precondition(lambda self: self.node is not None)
    @rule(data=st.data())
    def outside_write(self, data: st.DataObject) -> None:
        """Another process writes the file (inside its current length)."""
        before = os.stat(self.path)
        length = min(len(self.model), before.st_size - self.base)
        start, n = data.draw(self.ranges(max(length, 0)))
        assume(n > 0)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, b"\x0b" * n, self.base + start)
        finally:
            os.close(fd)
        after = os.stat(self.path)
        # A kernel without multigrain ctime may not show a write in the
        # same tick; such a change is outside what the record can see.
        assume((after.st_mtime_ns, after.st_ctime_ns) != (before.st_mtime_ns, before.st_ctime_ns))
        self.model[start : start + n] = b"\x0b" * n

    @precondition(lambda self: self.node is not None)
    @rule(size=SIZES)
    def resize(self, size: int) -> None:
        assert self.node is not None
        run(self.node.truncate, size)
        kept = self.model[:size]
        self.model = kept + bytes(_sectors(size) - len(kept))

    @precondition(lambda self: self.node is not None)
    @rule()
    def make_zero(self) -> None:
        assert self.node is not None
        result = run(self.node.make_zero)
        if result.already_zero:
            assert not any(self.model)
        self.model[:] = bytes(len(self.model))

    def check_zero_answer(self, state: ZeroState, not_known_zero: int) -> None:
        if not any(self.model) and not_known_zero <= SCAN_LIMIT:
            assert state.open.value, "all zero and cheap to prove, but not known zero"
        assert state.create.value  # a host file starts as holes


ZeroModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestZeroModel = ZeroModel.TestCase
