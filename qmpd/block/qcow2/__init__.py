"""The qcow2 format driver.

Modules: :mod:`.format` (header, extensions, table entries; pure),
:mod:`.storage` (the file child as bytes), :mod:`.tables` (L1, L2 cache),
:mod:`.refcount` (refcounts, allocation, rebuild), :mod:`.repair` (what a
crashed image references), :mod:`.zero` (qmpd's all-zero bit and the
scan), :mod:`.node` (the block node), :mod:`.open` (``blockdev-add``) and
:mod:`.create` (``blockdev-create``).
"""

from __future__ import annotations

from .create import check_options, create_qcow2
from .node import Qcow2Node
from .open import open_qcow2

__all__ = ["Qcow2Node", "check_options", "create_qcow2", "open_qcow2"]
