"""qmpd's block layer: nodes on real storage, the graph, and zero state.

Modules by concept: :mod:`.extents` (block-status records),
:mod:`.zerostate` (what is known about zeroes), :mod:`.node` (the node
contract and generic rules), the drivers :mod:`.file`, :mod:`.null`,
:mod:`.raw`, :mod:`.graph` (names, edges, users, deletion), :mod:`.options`
(blockdev-add arguments to nodes) and :mod:`.info` (what clients see).
"""

from __future__ import annotations

from .extents import Extent, merge_extents
from .file import FileNode
from .graph import BlockGraph
from .info import block_device_info, image_info, json_filename
from .node import BACKEND_KIND, PERM_ALL, BlockIOError, BlockNode, CommonOptions, NodeUser, Perm
from .null import NullAioNode, NullNode
from .options import DRIVERS, blockdev_add
from .raw import RawNode
from .zerostate import KnownZero, MakeZeroResult, ZeroState

__all__ = [
    "BACKEND_KIND",
    "DRIVERS",
    "PERM_ALL",
    "BlockGraph",
    "BlockIOError",
    "BlockNode",
    "CommonOptions",
    "Extent",
    "FileNode",
    "KnownZero",
    "MakeZeroResult",
    "NodeUser",
    "NullAioNode",
    "NullNode",
    "Perm",
    "RawNode",
    "ZeroState",
    "block_device_info",
    "blockdev_add",
    "image_info",
    "json_filename",
    "merge_extents",
]
