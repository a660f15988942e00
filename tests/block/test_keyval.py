"""Dotted --blockdev options: schema-aware conversion and start-up errors.

Expected texts observed on qemu-storage-daemon 11.1.2 with the same argument
(``qemu-storage-daemon: --blockdev ARG: MSG``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from qmpd.app import App
from qmpd.cli import parse_args
from qmpd.daemon import add_blockdevs
from qmpd.errors import GenericError, StartupError
from qmpd.qapi.keyval import keyval_to_qapi, parse_keyval


def convert(app: App, text: str) -> Any:
    arg_type = app.schema.model.commands["blockdev-add"].arg_type
    assert arg_type is not None
    return keyval_to_qapi(app.schema.model, arg_type, parse_keyval(text))


def test_parse_keyval() -> None:
    assert parse_keyval("raw,node-name=r,file.driver=file,file.filename=/a,,b") == {
        "driver": "raw",
        "node-name": "r",
        "file": {"driver": "file", "filename": "/a,b"},
    }
    assert parse_keyval("null-co,node-name=a,node-name=b")["node-name"] == "b"
    with pytest.raises(
        GenericError, match=re.escape("Expected '=' after parameter 'cache.direct'")
    ):
        parse_keyval("null-co,cache.direct")


def test_conversion_follows_the_schema(app: App) -> None:
    assert convert(app, "null-co,node-name=n,size=0x1000,read-zeroes=yes,latency-ns=010") == {
        "driver": "null-co",
        "node-name": "n",
        "size": 4096,
        "read-zeroes": True,
        "latency-ns": 8,
    }
    # Enum values and strings stay strings, even when they look like booleans.
    converted = convert(app, "file,node-name=f,filename=on,locking=off,cache.direct=on")
    assert converted["locking"] == "off"
    assert converted["filename"] == "on"
    assert converted["cache"] == {"direct": True}
    # A string BlockdevRef is a node name, an object an inline node.
    assert convert(app, "raw,node-name=r,file=f0")["file"] == "f0"
    assert convert(app, "raw,node-name=r,file.driver=null-co,file.size=512")["file"] == {
        "driver": "null-co",
        "size": 512,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("null-co,node-name=n,size=abc", "Parameter 'size' expects integer"),
        ("null-co,node-name=n,size=1k", "Parameter 'size' expects integer"),
        ("null-co,node-name=n,read-zeroes=maybe", "Parameter 'read-zeroes' expects 'on' or 'off'"),
        ("null-co,node-name=n,bogus=1", "Parameter 'bogus' is unexpected"),
        ("null-co,size=1", "'node-name' must be specified for the root node"),
        ("driver=nope,node-name=n", "Parameter 'driver' does not accept value 'nope'"),
        ("null-co,node-name=n,latency-ns=-5", "latency-ns is invalid"),
        ("raw,node-name=r,file=nonode", "Cannot find device='nonode' nor node-name='nonode'"),
        ("null-co,node-name=n,cache=x", "Invalid parameter type for 'cache', expected: object"),
        (
            '{"driver":"null-co","node-name":"n","size":"5"}',
            "Invalid parameter type for 'size', expected: integer",
        ),
    ],
)
def test_startup_errors(app: App, text: str, message: str) -> None:
    with pytest.raises(StartupError) as exc:
        add_blockdevs(app, [text])
    assert str(exc.value) == f"--blockdev {text}: {message}"
    assert len(app.graph) == 0


def test_startup_adds_nodes(app: App, tmp_path: Path) -> None:
    path = tmp_path / "d.img"
    path.write_bytes(bytes(4096))
    argv = [
        "--socket",
        str(tmp_path / "s"),
        "--blockdev",
        f"file,node-name=f,filename={path}",
        '--blockdev={"driver": "raw", "node-name": "r", "file": "f"}',
    ]
    texts = parse_args(argv).blockdevs
    assert texts == (argv[3], argv[4].partition("=")[2])
    add_blockdevs(app, texts)
    assert [n.name for n in app.graph.newest_first()] == ["r", "f"]
    assert app.graph.find("r").monitor_owned
    app.graph.close_all()
