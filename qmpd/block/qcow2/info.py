"""How a qcow2 node describes itself: filenames, ImageInfo members, limits.

Everything here is read from the header or the children, never from the
image's tables, so it is cheap and synchronous.  The shapes are QEMU
11.1's as observed on its qemu-storage-daemon: members it shows only for
qcow2 (``cluster-size``, the header's backing file in three spellings)
come from :meth:`Qcow2Info.header_info`, which :mod:`..info` asks for.
"""

from __future__ import annotations

import os
from typing import Any

from ..node import BlockNode
from .format import INCOMPAT_CORRUPT, Header

#: Limits a parent takes from the children it reads data through
#: (QEMU's bdrv_merge_limits): the strictest memory alignment, the
#: fewest I/O vectors.
_LARGEST = ("min-mem-alignment", "opt-mem-alignment")
_SMALLEST = ("max-iov",)


def _has_protocol(path: str) -> bool:
    # QEMU's path_has_protocol: a colon before any slash ("nbd:...").
    colon = path.find(":")
    return colon > 0 and "/" not in path[:colon]


class Qcow2Info(BlockNode):
    """The descriptive half of :class:`.node.Qcow2Node`."""

    driver = "qcow2"
    header: Header
    #: Whether the backing child is the one the header names (or none is
    #: attached because the header names none): json: filenames omit it.
    backing_default: bool

    @property
    def file(self) -> BlockNode:
        return self.children["file"]

    @property
    def backing(self) -> BlockNode | None:
        return self.children.get("backing")

    @property
    def cluster_size(self) -> int:
        return self.header.cluster_size

    def exact_filename(self) -> str | None:
        if self.strong_options or not self.backing_default or not self.file.is_protocol:
            return None
        return self.file.exact_filename()

    def full_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"driver": self.driver, **self.strong_options}
        opts["file"] = self.file.full_options()
        if self.backing is not None and not self.backing_default:
            opts["backing"] = self.backing.full_options()
        elif self.backing is None and self.header.backing_file:
            opts["backing"] = None
        return opts

    def actual_size(self) -> int | None:
        return self.file.actual_size()

    def has_dirty_flag(self) -> bool:
        return True

    def limits(self) -> dict[str, int]:
        limits = super().limits()
        for child in self.children.values():
            theirs = child.limits()
            for key in _LARGEST:
                limits[key] = max(limits[key], theirs.get(key, 0))
            for key in _SMALLEST:
                if theirs.get(key):
                    limits[key] = min(limits[key], theirs[key])
        # Zeroes and discards go by whole clusters (no subclusters here:
        # extended L2 entries are refused).
        limits["write-zeroes-alignment"] = self.cluster_size
        limits["discard-alignment"] = self.cluster_size
        return limits

    def header_info(self) -> dict[str, Any]:
        """ImageInfo members from the header: the cluster size, and the
        backing file it names, as written, resolved, and its format.
        They describe the header even when another backing is attached
        (or none, with ``backing: null``)."""
        info: dict[str, Any] = {"cluster-size": self.cluster_size}
        name = self.header.backing_file
        if not name:
            return info
        info["backing-filename"] = name
        if self.header.backing_format:
            info["backing-filename-format"] = self.header.backing_format
        full = self._full_backing_filename(name)
        if full is not None:
            info["full-backing-filename"] = full
        return info

    def _full_backing_filename(self, name: str) -> str | None:
        # Relative names are relative to the image file's directory; with
        # no plain filename to take it from QEMU reports none.
        if os.path.isabs(name) or _has_protocol(name):
            return name
        base = self.file.exact_filename()
        if not base or base.startswith("json:"):
            return None
        return base[: base.rfind("/") + 1] + name

    def format_specific(self) -> dict[str, Any] | None:
        # QEMU 11.1's ImageInfoSpecificQCow2.  An autoclear bit or header
        # extension QEMU does not know (qmpd's all-zero marker) shows
        # nowhere; external data files and extended L2 are refused, so
        # ``data-file`` never appears and ``extended-l2`` is always false.
        h = self.header
        data: dict[str, Any] = {"compat": "1.1" if h.version >= 3 else "0.10"}
        data["compression-type"] = "zlib" if h.compression_type == 0 else "zstd"
        if h.version >= 3:
            data["lazy-refcounts"] = h.lazy_refcounts
        data["refcount-bits"] = h.refcount_bits
        if h.version >= 3:
            data["corrupt"] = bool(h.incompatible & INCOMPAT_CORRUPT)
            data["extended-l2"] = False
        return {"type": "qcow2", "data": data}


__all__ = ["Qcow2Info"]
