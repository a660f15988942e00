"""Phase 1 of the schema pipeline: read QAPI schema files into expressions.

The QAPI schema language is JSON-like but not JSON: a file is a sequence of
top-level objects, strings use single quotes and know no escapes, the only
keywords are ``true`` and ``false``, and ``#`` starts a comment.  A comment
block opened and closed by a line holding just ``##`` is documentation; when
its first line reads ``# @Name:`` it documents the definition that must come
next.  Two directives are handled here and never reach later phases:
``{ 'include': 'file.json' }`` (path relative to the including file; a file
already read is skipped, a file including itself is an error) and
``{ 'pragma': {...} }`` (rule exceptions, collected in :class:`Pragma`).

Every object remembers where it starts and on which line each of its keys
sits (:class:`Node`), so that later phases can name file and line for a
precise spot, not just the expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SchemaError


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """A place in a schema file; ``filename`` is relative to the root file's directory."""

    filename: str
    line: int

    def error(self, message: str) -> SchemaError:
        """The SchemaError for ``message`` at this place (returned, not raised)."""
        return SchemaError(self.filename, self.line, message)


class Node(dict[str, Any]):
    """A parsed ``{...}``: a plain dict that also knows where it and its keys are."""

    __slots__ = ("info", "key_lines")

    def __init__(self, info: SourceInfo) -> None:
        super().__init__()
        self.info = info
        self.key_lines: dict[str, int] = {}

    def key_info(self, key: str) -> SourceInfo:
        """Where ``key`` is written (the object's own place if unknown)."""
        line = self.key_lines.get(key)
        return self.info if line is None else SourceInfo(self.info.filename, line)


@dataclass(frozen=True, slots=True)
class Doc:
    """A documentation block; ``symbol`` is set when it documents a definition."""

    symbol: str | None
    text: str
    info: SourceInfo


@dataclass(frozen=True, slots=True)
class Expression:
    """One top-level definition with its place and its documentation block."""

    data: Node
    info: SourceInfo
    doc: Doc | None


@dataclass(slots=True)
class Pragma:
    """Exceptions to the naming rules, as granted by ``pragma`` directives."""

    doc_required: bool = False
    command_name_exceptions: set[str] = field(default_factory=set)
    command_returns_exceptions: set[str] = field(default_factory=set)
    member_name_exceptions: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class ParsedSchema:
    expressions: list[Expression]
    pragma: Pragma


_PRAGMA_LISTS = {
    "command-name-exceptions": "command_name_exceptions",
    "command-returns-exceptions": "command_returns_exceptions",
    "member-name-exceptions": "member_name_exceptions",
    # Accepted for compatibility with QEMU's schema; qmpd checks no docs.
    "documentation-exceptions": None,
}

_DOC_SYMBOL = re.compile(r"@([^:\s]+):\s*$")


class _Lexer:
    """Tokens of one file: punctuation, strings, ``true``/``false``; tracks lines."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.pos = 0
        self.line = 1
        self.line_start = 0
        # Set by next(): the token kind ('{', '}', '[', ']', ':', ',', 'str',
        # 'bool', 'eof'), its value and its line.
        self.tok = ""
        self.val: Any = None
        self.tok_line = 1
        # Documentation blocks met since the last expression.
        self.docs: list[Doc] = []

    def info(self, line: int | None = None) -> SourceInfo:
        return SourceInfo(self.filename, self.tok_line if line is None else line)

    def fail(self, message: str) -> SchemaError:
        return SchemaError(self.filename, self.line, message)

    def next(self) -> None:
        text = self.text
        while True:
            if self.pos >= len(text):
                self.tok, self.val, self.tok_line = "eof", None, self.line
                return
            ch = text[self.pos]
            if ch == "\n":
                self.pos += 1
                self.line += 1
                self.line_start = self.pos
            elif ch in " \t\r":
                self.pos += 1
            elif ch == "#":
                self._comment()
            elif ch in "{}[]:,":
                self.tok, self.val, self.tok_line = ch, None, self.line
                self.pos += 1
                return
            elif ch == "'":
                self.tok, self.val, self.tok_line = "str", self._string(), self.line
                return
            elif text.startswith("true", self.pos) or text.startswith("false", self.pos):
                word = "true" if text.startswith("true", self.pos) else "false"
                self.tok, self.val, self.tok_line = "bool", word == "true", self.line
                self.pos += len(word)
                return
            else:
                raise self.fail(f"stray character {ch!r}")

    def _rest_of_line(self) -> str:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        line = self.text[self.pos : end]
        self.pos = end
        return line

    def _comment(self) -> None:
        at_line_start = self.text[self.line_start : self.pos].strip() == ""
        start_line = self.line
        first = self._rest_of_line()
        if not (at_line_start and first.rstrip() == "##"):
            return  # an ordinary comment
        # A documentation block: '#' lines up to a closing '##' line.
        lines: list[str] = []
        while True:
            self.pos += 1  # the newline
            if self.pos >= len(self.text):
                raise SchemaError(self.filename, start_line, "documentation block is not closed")
            self.line += 1
            self.line_start = self.pos
            body = self._rest_of_line()
            stripped = body.strip()
            if stripped == "##":
                break
            if not stripped.startswith("#"):
                raise self.fail("documentation block lines must start with '#'")
            lines.append(stripped[1:].strip())
        symbol = None
        if lines:
            match = _DOC_SYMBOL.fullmatch(lines[0])
            if match:
                symbol = match.group(1)
        self.docs.append(Doc(symbol, "\n".join(lines), SourceInfo(self.filename, start_line)))

    def _string(self) -> str:
        self.pos += 1  # opening quote
        start = self.pos
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.fail("string is missing its closing quote")
            ch = self.text[self.pos]
            if ch == "'":
                value = self.text[start : self.pos]
                self.pos += 1
                return value
            # QAPI strings have no escapes, and names are ASCII anyway.
            if ch == "\\":
                raise self.fail("backslash escapes are not supported in schema strings")
            if not " " <= ch <= "~":
                raise self.fail("only printable ASCII is allowed in schema strings")
            self.pos += 1


class _FileParser:
    def __init__(self, text: str, filename: str) -> None:
        self.lex = _Lexer(text, filename)
        self.lex.next()

    def _expect(self, tok: str, what: str) -> None:
        if self.lex.tok != tok:
            raise self.lex.info().error(f"expected {what}")
        self.lex.next()

    def value(self) -> Any:
        lex = self.lex
        if lex.tok == "{":
            return self.obj()
        if lex.tok == "[":
            return self.array()
        if lex.tok in ("str", "bool"):
            val = lex.val
            lex.next()
            return val
        raise lex.info().error("expected a value: string, true, false, '{' or '['")

    def obj(self) -> Node:
        lex = self.lex
        node = Node(lex.info())
        lex.next()
        if lex.tok == "}":
            lex.next()
            return node
        while True:
            if lex.tok != "str":
                raise lex.info().error("expected a string key")
            key, line = lex.val, lex.tok_line
            if key in node:
                raise lex.info().error(f"duplicate key '{key}'")
            lex.next()
            self._expect(":", "':'")
            node[key] = self.value()
            node.key_lines[key] = line
            if lex.tok == "}":
                lex.next()
                return node
            self._expect(",", "',' or '}'")

    def array(self) -> list[Any]:
        lex = self.lex
        lex.next()
        items: list[Any] = []
        if lex.tok == "]":
            lex.next()
            return items
        while True:
            items.append(self.value())
            if lex.tok == "]":
                lex.next()
                return items
            self._expect(",", "',' or ']'")

    def top_level(self) -> list[tuple[Node, Doc | None]]:
        """Every top-level object with the doc block (if any) that documents it."""
        lex = self.lex
        result: list[tuple[Node, Doc | None]] = []
        while True:
            docs, lex.docs = lex.docs, []
            if lex.tok == "eof":
                pending = [d for d in docs if d.symbol is not None]
                if pending:
                    last = pending[-1]
                    raise last.info.error(
                        f"documentation for '{last.symbol}' is not followed by its definition"
                    )
                return result
            if lex.tok != "{":
                raise lex.info().error("expected '{' to start a top-level expression")
            for doc in docs[:-1]:
                if doc.symbol is not None:
                    raise doc.info.error(
                        f"documentation for '{doc.symbol}' is not followed by its definition"
                    )
            attached = docs[-1] if docs and docs[-1].symbol is not None else None
            result.append((self.obj(), attached))


def _read(path: Path, root_dir: Path, info: SourceInfo | None) -> tuple[str, str]:
    try:
        rel = str(path.relative_to(root_dir))
    except ValueError:
        rel = str(path)
    try:
        return path.read_text(encoding="utf-8"), rel
    except OSError as exc:
        where = info if info is not None else SourceInfo(rel, 0)
        reason = exc.strerror or str(exc)
        raise SchemaError(
            where.filename, info.line if info else None, f"can't read schema file '{rel}': {reason}"
        ) from exc


def _apply_pragma(pragma: Pragma, node: Node) -> None:
    value = node["pragma"]
    if len(node) != 1:
        raise node.info.error("'pragma' directive must have no other keys")
    if not isinstance(value, dict):
        raise node.info.error("value of 'pragma' must be an object")
    for key, item in value.items():
        where = value.key_info(key) if isinstance(value, Node) else node.info
        if key == "doc-required":
            if not isinstance(item, bool):
                raise where.error("pragma 'doc-required' must be true or false")
            pragma.doc_required = item
        elif key in _PRAGMA_LISTS:
            if not isinstance(item, list) or not all(isinstance(s, str) for s in item):
                raise where.error(f"pragma '{key}' must be a list of strings")
            attr = _PRAGMA_LISTS[key]
            if attr is not None:
                getattr(pragma, attr).update(item)
        else:
            valid = ", ".join(f"'{k}'" for k in sorted([*_PRAGMA_LISTS, "doc-required"]))
            raise where.error(f"unknown pragma '{key}'; valid pragmas are {valid}")


def parse_schema(path: Path) -> ParsedSchema:
    """Parse ``path`` and everything it includes, in reading order.

    Raises SchemaError (file and line) on a syntax error, a bad directive,
    an include loop or an unreadable file.
    """
    path = path.resolve()
    root_dir = path.parent
    pragma = Pragma()
    expressions: list[Expression] = []
    seen: set[Path] = set()

    def visit(file: Path, stack: tuple[Path, ...], included_at: SourceInfo | None) -> None:
        if file in stack:
            assert included_at is not None
            raise included_at.error(f"inclusion loop: '{file.name}' includes itself")
        if file in seen:
            return  # like QEMU: each file is read once, the first time
        seen.add(file)
        text, rel = _read(file, root_dir, included_at)
        for node, doc in _FileParser(text, rel).top_level():
            if "include" in node:
                target = node["include"]
                if len(node) != 1:
                    raise node.info.error("'include' directive must have no other keys")
                if not isinstance(target, str):
                    raise node.info.error("value of 'include' must be a string")
                visit((file.parent / target).resolve(), (*stack, file), node.info)
            elif "pragma" in node:
                _apply_pragma(pragma, node)
            else:
                expressions.append(Expression(node, node.info, doc))

    visit(path, (), None)
    return ParsedSchema(expressions, pragma)


__all__ = ["Doc", "Expression", "Node", "ParsedSchema", "Pragma", "SourceInfo", "parse_schema"]
