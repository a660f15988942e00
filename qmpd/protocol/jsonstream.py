"""QEMU 11.1's JSON message streamer, reproduced byte for byte where a client can see it.

Theory of operation
-------------------
:mod:`qmpd.protocol.jsonexact` follows QEMU's lexer, streamer and push parser one token
at a time; it is the specification, and it says how messages are delimited (bracket
counting, never newlines), when errors are reported and where (``line:column`` over the
whole connection).

:class:`JsonStreamer` adds a *fast* path that runs only while the exact path is idle
(between messages, no token half-read): it hands a complete ``{...}``/``[...]`` to the C
scanner of the ``json`` module and accepts the result only when QEMU would provably have
produced the same value (pure ASCII, no duplicate key, no NaN/Infinity, no lone
surrogate or noncharacter from a ``\\u`` escape, integers folded by QEMU's
int64/uint64/double rule, limits out of reach).  Anything else -- an incomplete message,
a top-level scalar, single quotes, any error -- goes to the exact path, which hands back
as soon as it is idle again.  Tests check that both paths agree on generated input.

Locations cost valid input almost nothing: per chunk the streamer counts newlines and
finds the last one (two C-speed scans); columns are worked out only for an error.

Values are Python ``dict`` (key order kept), ``list``, ``str``, ``int``, ``float``,
``bool`` and ``None``; QEMU's "modified UTF-8" NUL (``\\xC0\\x80``) and ``\\u0000`` both
decode to ``"\\x00"``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable

from .jsonexact import ExactStreamer, JsonParseError
from .jsonscalar import BAD_CODEPOINT_RE, parse_integer

__all__ = ["JsonParseError", "JsonStreamer"]


def _fast_int(text: str) -> int | float:
    """``parse_int`` hook applying QEMU's integer rule to the C scanner's integers."""
    if len(text) <= 18:
        return int(text)
    return parse_integer(text.encode("ascii"))


class _Refused(ValueError):
    """The fast path declines a message; the exact path will decide."""


def _refuse(_text: str) -> object:
    raise _Refused


def _pairs_without_duplicates(
    pairs: list[tuple[str, object]], _dict: type[dict[str, object]] = dict, _len: object = len
) -> dict[str, object]:
    # Called once per object by the C scanner: locals instead of globals save time.
    obj = _dict(pairs)
    if _len(obj) == _len(pairs):  # type: ignore[operator]
        return obj
    raise _Refused


# scan_once(text, index) -> (value, end) is the C scanner behind json.loads(): it
# parses one value at ``index`` and says where it ended.
_Scanner = Callable[[str, int], tuple[object, int]]
_FAST_SCAN: _Scanner = json.JSONDecoder(  # type: ignore[attr-defined]
    object_pairs_hook=_pairs_without_duplicates, parse_constant=_refuse
).scan_once
_CAREFUL_SCAN: _Scanner = json.JSONDecoder(  # type: ignore[attr-defined]
    object_pairs_hook=_pairs_without_duplicates, parse_constant=_refuse, parse_int=_fast_int
).scan_once
_NON_ASCII_RE = re.compile("[\x80-\xff]")
# Integers of 19+ digits may leave int64 and need QEMU's folding rule.  Mapping digits
# to "0" and the rest to " " and searching is ten times cheaper than a regex.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_NINETEEN_DIGITS = b"0" * 19
_WS_STR_RE = re.compile("[ \t\r\n]*")


def _strings_valid(obj: object) -> bool:
    """No key or string holds what QEMU refuses from a \\u escape."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if BAD_CODEPOINT_RE.search(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _depth_at_most(obj: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        children: list[object]
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


class JsonStreamer:
    """Feed bytes, get QEMU's top-level items: parsed values or :class:`JsonParseError`.

    One streamer serves one connection: error locations count from its first byte.
    ``max_token_bytes``, ``max_tokens`` and ``max_depth`` are QEMU's per-message limits
    (64 MiB, 2 Mi tokens, 1024).  ``fast_path=False`` runs the exact path alone, the
    reference the fast path is tested against.  Nothing is raised for bad input.
    """

    def __init__(
        self,
        *,
        max_token_bytes: int = 64 << 20,
        max_tokens: int = 2 << 20,
        max_depth: int = 1024,
        fast_path: bool = True,
    ) -> None:
        self._max_token_bytes = max_token_bytes
        self._max_tokens = max_tokens
        self._max_depth = max_depth
        self._fast_path = fast_path
        # A message this short cannot reach any limit: each token takes a byte, and
        # depth d needs d opening brackets and d closing ones.
        self._always_within = min(2 * max_depth + 1, max_tokens, max_token_bytes - 1)
        self._exact = ExactStreamer(
            max_token_bytes=max_token_bytes, max_tokens=max_tokens, max_depth=max_depth
        )
        # Whether the exact path holds nothing (asked of it only after it ran).
        self._idle = True

    # -- public API ------------------------------------------------------------------
    def feed(self, data: bytes) -> list[object]:
        """Consume ``data``; return the items it completes, in order."""
        out: list[object] = []
        if not isinstance(data, bytes):
            data = bytes(data)
        exact = self._exact
        if not self._fast_path:
            exact.lex(data, 0, out, stop_when_idle=False)
            exact.end_chunk(data)
            return out
        n = len(data)
        pos = 0
        text: str | None = None
        non_ascii = careful = False
        idle = self._idle
        while pos < n:
            if idle:
                if text is None:
                    non_ascii = not data.isascii()
                    text = data.decode("latin-1")
                    careful = b"\\u" in data or _NINETEEN_DIGITS in data.translate(_DIGITS_ONLY)
                pos = self._fast(text, pos, out, non_ascii, careful)
                if pos >= n:
                    break
            pos = exact.lex(data, pos, out, stop_when_idle=True)
            # lex() returns early only once idle; having used up the data, it may not be.
            idle = pos < n or exact.idle
        self._idle = idle
        exact.end_chunk(data)
        return out

    def feed_eof(self) -> list[object]:
        """The peer closed.  QEMU drops a pending incomplete message silently (its
        monitor resets the parser without flushing it), so this returns nothing and
        leaves the streamer as new."""
        self._exact.reset()
        self._idle = True
        return []

    # -- fast path -------------------------------------------------------------------
    def _fast(self, text: str, pos: int, out: list[object], non_ascii: bool, careful: bool) -> int:
        """Parse whole objects/arrays with the C scanner; return where it stopped."""
        scan = _CAREFUL_SCAN if careful else _FAST_SCAN
        n = len(text)
        while pos < n:
            char = text[pos]
            if char == "{" or char == "[":
                try:
                    obj, end = scan(text, pos)
                except (ValueError, RecursionError, StopIteration):
                    return pos
                if non_ascii and _NON_ASCII_RE.search(text, pos, end):
                    return pos
                if careful and "\\u" in text[pos:end] and not _strings_valid(obj):
                    return pos
                if end - pos > self._always_within and not self._fast_limits_ok(obj, end - pos):
                    return pos
                out.append(obj)
                pos = end
            elif char in " \t\r\n":
                pos = _WS_STR_RE.match(text, pos).end()  # type: ignore[union-attr]
            else:
                return pos
        return pos

    def _fast_limits_ok(self, obj: object, length: int) -> bool:
        # Token bytes and token count never exceed the message length.
        if length >= self._max_token_bytes or length > self._max_tokens:
            return False
        # The C scanner recurses once per nesting level, so whatever it parsed nests
        # less deeply than the recursion limit.
        return sys.getrecursionlimit() <= self._max_depth or _depth_at_most(obj, self._max_depth)

    # JsonStreamer is deliberately not thread-safe; one per connection.
