"""Describing nodes to clients: BlockDeviceInfo, ImageInfo, json: filenames.

The shapes are QEMU 11.1's (``query-named-block-nodes`` as observed on
qemu-storage-daemon 11.1.2).  Throttling is not implemented, so its six
limits are always 0 and the optional ``*_max`` members are absent.

Two habits of QEMU's show here.  It keeps a node's length in 512-byte
sectors, rounded up (as :attr:`BlockNode.size` does), so ``virtual-size``
is a multiple of 512 even for a 1000-byte file.  And it keeps a node's
children newest first: a qcow2 node lists ``backing`` (attached after
the image was read) before ``file``.  With ``flat`` it does not walk the backing chain at all, so
``backing_file_depth`` is 0 there.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from ..protocol.hashorder import qdict_order
from .node import BlockNode

# One encoder for every call: json.dumps would build a new one each time.
_ENCODER = json.JSONEncoder(separators=(", ", ": "))


@functools.lru_cache(maxsize=256)
def _key_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    # Nodes of one driver share their option keys: hashing them once per
    # key set, not per node, makes listing 10,000 nodes about twice as fast.
    return tuple(qdict_order(keys))


def _qdict_sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _qdict_sorted(value[key]) for key in _key_order(tuple(value))}
    return value


def json_filename(options: dict[str, Any]) -> str:
    """QEMU's ``json:{...}`` pseudo-filename: keys in QDict order, ``", "`` and ``": "``."""
    return "json:" + _ENCODER.encode(_qdict_sorted(options))


def backing_image(node: BlockNode) -> BlockNode | None:
    """The node ``backing-image`` describes, and ``backing_file_depth``
    counts: a filter's filtered child (blkdebug's ``image``, mirror_top's
    ``backing``), else the COW ``backing`` (QEMU's bdrv_filter_or_cow_bs)."""
    if getattr(type(node), "is_filter", False) and len(node.children) == 1:
        return next(iter(node.children.values()))
    return node.children.get("backing")


def cow_backing(node: BlockNode) -> BlockNode | None:
    """The COW backing (QEMU's bdrv_cow_bs): a filter's ``backing`` is the
    data it passes through, not a backing file."""
    if getattr(type(node), "is_filter", False):
        return None
    return node.children.get("backing")


def image_info(node: BlockNode, *, flat: bool, filename: str | None = None) -> dict[str, Any]:
    """ImageInfo of ``node``; with ``flat`` no nested ``backing-image``.

    ``filename``: ``node.filename()`` when the caller has it already.
    """
    info: dict[str, Any] = {
        "filename": node.filename() if filename is None else filename,
        "format": node.driver,
        "virtual-size": node.size,
    }
    # What the driver reads from its own metadata: cluster size, and the
    # backing file the image header names (whatever node is attached).
    header_info = getattr(node, "header_info", None)
    if header_info is not None:
        info.update(header_info())
    if node.has_dirty_flag():
        info["dirty-flag"] = False
    actual = node.actual_size()
    if actual is not None:
        info["actual-size"] = actual
    info["limits"] = node.limits()
    specific = node.format_specific()
    if specific is not None:
        info["format-specific"] = specific
    backing = backing_image(node)
    if backing is not None and not flat:
        info["backing-image"] = image_info(backing, flat=False)
    return info


def block_device_info(node: BlockNode, *, flat: bool) -> dict[str, Any]:
    """BlockDeviceInfo of ``node`` (the element of query-named-block-nodes)."""
    depth = 0
    below = None if flat else backing_image(node)
    while below is not None:
        depth += 1
        below = backing_image(below)
    opts = node.options
    filename = node.filename()
    info: dict[str, Any] = {
        "file": filename,
        "node-name": node.name,
        "ro": node.read_only,
        "drv": node.driver,
        "backing_file_depth": depth,
        "children": [
            {"child": role, "node-name": c.name} for role, c in reversed(node.children.items())
        ],
        "active": opts.active,
        "encrypted": False,
        "detect_zeroes": opts.detect_zeroes,
        "bps": 0,
        "bps_rd": 0,
        "bps_wr": 0,
        "iops": 0,
        "iops_rd": 0,
        "iops_wr": 0,
        "image": image_info(node, flat=flat, filename=filename),
        # Queried without a BlockBackend QEMU reports writeback caching.
        "cache": {"writeback": True, "direct": opts.cache_direct, "no-flush": opts.cache_no_flush},
        "write_threshold": 0,
    }
    cow = cow_backing(node)
    if cow is not None:
        info["backing_file"] = cow.filename()
    # Nodes carrying dirty bitmaps (a mirror's filter) describe them.
    bitmaps = getattr(node, "dirty_bitmaps_info", None)
    if bitmaps is not None:
        info["dirty-bitmaps"] = bitmaps()
    return info


__all__ = [
    "backing_image",
    "block_device_info",
    "cow_backing",
    "image_info",
    "json_filename",
]
