"""STYLE principle 1: the protocol core imports no trio and does no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import qmpd.protocol

FORBIDDEN = {"trio", "socket", "asyncio", "selectors", "os", "subprocess"}


def test_protocol_package_imports_no_io() -> None:
    root = Path(qmpd.protocol.__file__).parent
    files = sorted(root.glob("*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
