"""The parser: QAPI syntax, places of expressions and keys, directives."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpd.errors import SchemaError
from qmpd.qapi.parser import Node, parse_schema


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_places_of_expressions_and_keys(tmp_path: Path) -> None:
    root = write(
        tmp_path / "root.json",
        "# comment\n"
        "{ 'struct': 'Foo',   # trailing comment\n"
        "  'data': { 'a': 'str',\n"
        "            '*b': [ 'int' ] } }\n"
        "{ 'command': 'go', 'boxed': true }\n",
    )
    parsed = parse_schema(root)
    foo, go = parsed.expressions
    assert (foo.info.filename, foo.info.line) == ("root.json", 2)
    data = foo.data["data"]
    assert isinstance(data, Node)
    assert data.key_info("*b").line == 4
    assert data["*b"] == ["int"]
    assert go.info.line == 5
    assert go.data["boxed"] is True


def test_includes_are_read_once_and_relative(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(
        tmp_path / "sub" / "b.json", "{ 'include': '../c.json' }\n{ 'enum': 'Bee', 'data': [] }\n"
    )
    write(tmp_path / "c.json", "{ 'enum': 'Sea', 'data': [] }\n")
    root = write(
        tmp_path / "root.json",
        "{ 'include': 'sub/b.json' }\n{ 'include': 'c.json' }\n{ 'enum': 'Root', 'data': [] }\n",
    )
    parsed = parse_schema(root)
    assert [e.data["enum"] for e in parsed.expressions] == ["Sea", "Bee", "Root"]
    assert [e.info.filename for e in parsed.expressions] == ["c.json", "sub/b.json", "root.json"]


def test_doc_blocks_attach_to_the_next_definition(tmp_path: Path) -> None:
    root = write(
        tmp_path / "root.json",
        "##\n# = A section\n##\n\n##\n# @Foo:\n#\n# Some words.\n##\n"
        "{ 'enum': 'Foo', 'data': [ 'x' ] }\n",
    )
    (expr,) = parse_schema(root).expressions
    assert expr.doc is not None
    assert expr.doc.symbol == "Foo"
    assert "Some words." in expr.doc.text


def test_pragma(tmp_path: Path) -> None:
    root = write(
        tmp_path / "root.json",
        "{ 'pragma': { 'command-name-exceptions': [ 'a_b' ], 'doc-required': false } }\n",
    )
    parsed = parse_schema(root)
    assert parsed.pragma.command_name_exceptions == {"a_b"}
    assert parsed.expressions == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{ 'a': 1 }", "root.json:1: stray character '1'"),
        ("{ 'a': 'x\\'y' }", "root.json:1: backslash escapes are not supported in schema strings"),
        ("{ 'a': 'x' }\n[ ]", "root.json:2: expected '{' to start a top-level expression"),
        ("{ 'a': 'x',\n}", "root.json:2: expected a string key"),
        ("{ 'a' 'x' }", "root.json:1: expected ':'"),
        (
            "##\n# @Foo:\n##\n",
            "root.json:1: documentation for 'Foo' is not followed by its definition",
        ),
        ("##\n# never closed\n", "root.json:1: documentation block is not closed"),
        (
            "{ 'pragma': { 'bogus': [] } }",
            "root.json:1: unknown pragma 'bogus'; valid pragmas are "
            "'command-name-exceptions', 'command-returns-exceptions', 'doc-required', "
            "'documentation-exceptions', 'member-name-exceptions'",
        ),
    ],
)
def test_syntax_errors(tmp_path: Path, text: str, message: str) -> None:
    root = write(tmp_path / "root.json", text)
    with pytest.raises(SchemaError) as excinfo:
        parse_schema(root)
    assert str(excinfo.value) == message
