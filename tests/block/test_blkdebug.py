"""The blkdebug filter: QEMU's rule engine, the node over a real file, and
what blockdev-add accepts and refuses."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from qmpd.block import BlockGraph, BlockIOError, Perm, blockdev_add
from qmpd.block.blkdebug import BlkdebugNode, InjectError, Rules, SetState, strong_options
from qmpd.block.info import block_device_info
from qmpd.errors import GenericError

from .conftest import make_image


def emit(node: Any, event: str) -> None:
    # The hook raw calls on its child (BlockNode.debug_event); called
    # directly here so these tests do not depend on the raw driver.
    node.debug_event(event)


# -- the rule engine ----------------------------------------------------------------


def test_a_rule_arms_on_its_event_only() -> None:
    rules = Rules([InjectError("read_aio")])
    assert rules.check(0, 512, "read").errno == 0
    rules.event("write_aio")
    assert rules.check(0, 512, "read").errno == 0
    rules.event("read_aio")
    verdict = rules.check(0, 512, "read")
    assert (verdict.errno, verdict.immediately) == (errno.EIO, False)
    # Not once: it stays armed, and the default iotypes include flush...
    assert rules.check(0, 0, "flush").errno == errno.EIO
    # ...but not block-status.
    assert rules.check(0, 512, "block-status").errno == 0


def test_sector_iotype_once_and_errno() -> None:
    rule = InjectError("write_aio", iotypes=frozenset({"write"}), errno=28, offset=1024, once=True)
    rules = Rules([rule])
    rules.event("write_aio")
    assert rules.check(0, 1024, "write").errno == 0  # ends before the sector
    assert rules.check(0, 1025, "read").errno == 0  # another iotype
    assert rules.check(0, 0, "flush").errno == 0
    assert rules.check(512, 1024, "write").errno == 28
    # once: gone from the armed set and from the rules
    assert rules.check(512, 1024, "write").errno == 0
    assert rules.rules == ()
    rules.event("write_aio")
    assert rules.check(512, 1024, "write").errno == 0


def test_an_event_with_error_rules_replaces_the_armed_set() -> None:
    a = InjectError("read_aio", errno=1)
    b = InjectError("write_aio", errno=2)
    rules = Rules([a, b])
    rules.event("read_aio")
    assert rules.armed == [a]
    rules.event("flush_to_os")  # no rule for it: armed set unchanged
    assert rules.armed == [a]
    rules.event("write_aio")
    assert rules.armed == [b]


def test_first_matching_rule_decides_even_with_errno_zero() -> None:
    quiet = InjectError("read_aio", errno=0, once=True)
    loud = InjectError("read_aio", errno=5)
    rules = Rules([quiet, loud])
    rules.event("read_aio")
    assert rules.armed == [quiet, loud]
    assert rules.check(0, 512, "read").errno == 0
    assert rules.rules == (quiet, loud)  # QEMU keeps a once rule that injected nothing


def test_states() -> None:
    rules = Rules(
        [
            SetState("read_aio", new_state=2, state=1),
            SetState("read_aio", new_state=7, state=1),
            InjectError("write_aio", state=2),
        ]
    )
    assert rules.state == 1
    rules.event("write_aio")  # wrong state: not armed
    assert rules.check(0, 512, "write").errno == 0
    rules.event("read_aio")  # the first set-state rule given wins
    assert rules.state == 2
    rules.event("write_aio")
    assert rules.check(0, 512, "write").errno == errno.EIO


def test_strong_options_flatten_rules() -> None:
    args = {
        "image": "f",
        "inject-error": [{"event": "read_aio", "sector": 1}],
        "set-state": [{"event": "read_aio", "new_state": 2}],
        "take-child-perms": ["write"],
    }
    assert strong_options(args) == {
        "inject-error.0.event": "read_aio",
        "inject-error.0.sector": 1,
        "set-state.0.event": "read_aio",
        "set-state.0.new_state": 2,
    }


# -- nodes over a real file ----------------------------------------------------------


def _add(graph: BlockGraph, image: Path, **blkdebug: Any) -> BlkdebugNode:
    node = blockdev_add(
        graph,
        {
            "driver": "blkdebug",
            "node-name": "dbg",
            "image": {"driver": "file", "filename": str(image)},
            **blkdebug,
        },
    )
    assert isinstance(node, BlkdebugNode)
    return node


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return make_image(tmp_path / "d.img", 1 << 20, {0: b"\xab" * 4096})


async def test_io_passes_through_and_fails_as_the_rules_say(disk: Path) -> None:
    node = _add(
        BlockGraph(),
        disk,
        **{"inject-error": [{"event": "read_aio", "sector": 2, "once": True, "immediately": True}]},
    )
    assert await node.read(0, 4) == b"\xab" * 4
    emit(node, "read_aio")
    assert await node.read(0, 1024) == b"\xab" * 1024  # sector 2 is bytes 1024..1535
    with pytest.raises(BlockIOError) as info:
        await node.read(1024, 512)
    assert info.value.errno == errno.EIO
    assert str(info.value) == "Input/output error"
    assert await node.read(1024, 512) == b"\xab" * 512


async def test_writes_emit_pwritev_events(disk: Path) -> None:
    node = _add(
        BlockGraph(),
        disk,
        **{
            "inject-error": [
                {"event": "pwritev", "errno": 28, "iotype": "write"},
                {"event": "pwritev_zero", "errno": 1, "iotype": "write-zeroes"},
            ]
        },
    )
    with pytest.raises(BlockIOError) as info:
        await node.write(0, b"x")
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(BlockIOError) as info:
        await node.write_zeroes(0, 512)
    assert info.value.errno == errno.EPERM
    # pwritev_done arms no rule; the armed set is the last event's.
    assert await node.read(0, 1) == b"\xab"


async def test_flush_reaches_rules_only_after_writes(disk: Path) -> None:
    node = _add(BlockGraph(), disk, **{"inject-error": [{"event": "read_aio", "iotype": "flush"}]})
    emit(node, "read_aio")
    await node.flush()  # nothing written since open
    await node.write(0, b"y")  # no error: the rule is for flushes
    with pytest.raises(BlockIOError):
        await node.flush()


def test_description_as_qemu(disk: Path) -> None:
    graph = BlockGraph()
    plain = _add(graph, disk)
    assert plain.filename() == f"blkdebug::{disk}"
    info = block_device_info(plain, flat=True)
    assert info["drv"] == "blkdebug"
    assert info["children"] == [{"child": "image", "node-name": plain.image.name}]
    assert "actual-size" not in info["image"]
    graph2 = BlockGraph()
    ruled = _add(graph2, disk, **{"inject-error": [{"event": "read_aio"}]})
    name = ruled.filename()
    assert name.startswith("json:")
    assert json.loads(name[5:]) == {
        "driver": "blkdebug",
        "inject-error.0.event": "read_aio",
        "image": {"driver": "file", "filename": str(disk)},
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"align": 4096}, "Block protocol 'blkdebug' doesn't support the option 'align' in qmpd"),
        (
            {"max-transfer": 65536},
            "Block protocol 'blkdebug' doesn't support the option 'max-transfer' in qmpd",
        ),
        (
            {"inject-error": [{"event": "read_aio", "delay-ns": 5}]},
            "Block protocol 'blkdebug' doesn't support the option 'inject-error.delay-ns' in qmpd",
        ),
        (
            {"config": "/nonexistent/blkdebug.cfg"},
            "Could not open '/nonexistent/blkdebug.cfg': No such file or directory",
        ),
    ],
)
def test_refusals(disk: Path, options: dict[str, Any], message: str) -> None:
    graph = BlockGraph()
    with pytest.raises(GenericError) as info:
        _add(graph, disk, **options)
    assert str(info.value) == message
    with pytest.raises(GenericError):
        graph.lookup("dbg")  # nothing left behind


def test_config_file_refused(disk: Path, tmp_path: Path) -> None:
    config = tmp_path / "rules.cfg"
    config.write_text('[inject-error]\nevent = "read_aio"\n')
    with pytest.raises(GenericError, match="doesn't support the option 'config'"):
        _add(BlockGraph(), disk, config=str(config))


def test_child_permissions(disk: Path) -> None:
    graph = BlockGraph()
    node = _add(graph, disk, **{"take-child-perms": ["resize"], "unshare-child-perms": ["write"]})
    perm, shared = node.child_perms("image")
    assert perm & Perm.RESIZE
    assert not shared & Perm.WRITE
