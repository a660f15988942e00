"""QEMU's JSON message streamer, reproduced byte for byte where a client can see it.

Theory of operation
-------------------
QEMU reads QMP input as a stream of bytes with no framing.  Three layers turn it into
messages (qobject/json-lexer.c, json-streamer.c, json-parser.c):

* a *lexer*, a table-driven state machine, cuts the bytes into tokens.  An impossible
  byte produces an error token (the text so far plus that byte, reported as
  ``stray '...'``) and puts the lexer into *recovery*, where it skips bytes until a
  structural character, a control character other than TAB, or 0xFE/0xFF;
* a *streamer* queues the tokens of the current message, counting ``{``/``}`` and
  ``[``/``]`` separately; when neither count is positive any more (or one went
  negative) the queued tokens form a message and go to the parser.  The streamer also
  enforces three limits (total token bytes, token count, nesting depth); an error from
  the lexer or a limit discards the queued tokens without touching the lexer state;
* a recursive-descent *parser* turns the tokens into a value, or reports the first
  error it meets.

So message boundaries come from bracket counting, never from newlines, and one bad
message can produce several errors (each token after a reset is a fresh start).

:class:`JsonStreamer` has two paths.  The *exact* path (``_lex``/``_token``/``_parse``)
follows QEMU's three layers one token at a time; it is the specification.  The *fast*
path runs only while the exact path holds nothing (lexer in its start state, no queued
token): it hands a complete ``{...}``/``[...]`` to the C scanner of the ``json`` module
and accepts the result only when QEMU would provably have produced the same value (pure
ASCII, no duplicate key, no NaN/Infinity, no lone surrogate or noncharacter from a
``\\u`` escape, integers folded by QEMU's int64/uint64/double rule, limits out of
reach).  Anything else -- an incomplete message, a top-level scalar, single quotes, a
parse error -- goes to the exact path, which hands back as soon as it is idle again.
Tests check that both paths agree on generated input.

Values are Python ``dict`` (key order kept), ``list``, ``str``, ``int``, ``float``,
``bool`` and ``None``; QEMU's "modified UTF-8" NUL (``\\xC0\\x80``) and ``\\u0000`` both
decode to ``"\\x00"``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["JsonParseError", "JsonStreamer"]


@dataclass(frozen=True, slots=True)
class JsonParseError:
    """One error the streamer reports; ``desc`` is QEMU's full error text."""

    desc: str


# -- lexer ---------------------------------------------------------------------------
# Lexer states.  The numbering is ours; the transitions are QEMU's json_lexer[] table.
_START, _RECOVERY, _DQ, _DQ_ESC, _SQ, _SQ_ESC = range(6)
_ZERO, _SIGN, _DIGITS, _MANT, _MANT_DIGITS, _EXP_E, _EXP_SIGN, _EXP_DIGITS = range(6, 14)
_KEYWORD = 14

# Token types.
_LCURLY, _RCURLY, _LSQUARE, _RSQUARE, _COLON, _COMMA = range(6)
_STRING, _INTEGER, _FLOAT, _KW = range(6, 10)

_STRUCTURAL = {
    ord("{"): _LCURLY,
    ord("}"): _RCURLY,
    ord("["): _LSQUARE,
    ord("]"): _RSQUARE,
    ord(":"): _COLON,
    ord(","): _COMMA,
}
_WHITESPACE = frozenset(b" \t\r\n")
_DIGIT = frozenset(b"0123456789")
_LOWER = frozenset(b"abcdefghijklmnopqrstuvwxyz")

# Number and keyword states: (next state per byte, token type emitted on any other
# byte without consuming it, or None when any other byte is an error).  QEMU's table
# makes every byte 0x00-0xFF a lookahead terminator in the terminal states; _BAD marks
# the one exception (RFC 8259 forbids leading zeros, so "01" is a stray token).
_BAD = -1
_NUMBER_TABLE: dict[int, tuple[dict[int, int], int | None]] = {
    _ZERO: ({ord("."): _MANT, **dict.fromkeys(b"0123456789", _BAD)}, _INTEGER),
    _SIGN: ({ord("0"): _ZERO, **dict.fromkeys(b"123456789", _DIGITS)}, None),
    _DIGITS: (
        {
            **dict.fromkeys(b"0123456789", _DIGITS),
            ord("e"): _EXP_E,
            ord("E"): _EXP_E,
            ord("."): _MANT,
        },
        _INTEGER,
    ),
    _MANT: (dict.fromkeys(b"0123456789", _MANT_DIGITS), None),
    _MANT_DIGITS: (
        {**dict.fromkeys(b"0123456789", _MANT_DIGITS), ord("e"): _EXP_E, ord("E"): _EXP_E},
        _FLOAT,
    ),
    _EXP_E: (
        {ord("-"): _EXP_SIGN, ord("+"): _EXP_SIGN, **dict.fromkeys(b"0123456789", _EXP_DIGITS)},
        None,
    ),
    _EXP_SIGN: (dict.fromkeys(b"0123456789", _EXP_DIGITS), None),
    _EXP_DIGITS: (dict.fromkeys(b"0123456789", _EXP_DIGITS), _FLOAT),
    _KEYWORD: (dict.fromkeys(b"abcdefghijklmnopqrstuvwxyz", _KEYWORD), _KW),
}
# States whose self-loop is a run of one character class, skipped with one regex call.
_RUN_RE = {
    _DIGITS: re.compile(rb"[0-9]*"),
    _MANT_DIGITS: re.compile(rb"[0-9]*"),
    _EXP_DIGITS: re.compile(rb"[0-9]*"),
    _KEYWORD: re.compile(rb"[a-z]*"),
    # Inside strings every byte 0x20-0xFD but the quote and the backslash stays put.
    _DQ: re.compile(rb'[^"\\\x00-\x1f\xfe\xff]*'),
    _SQ: re.compile(rb"[^'\\\x00-\x1f\xfe\xff]*"),
}
_WS_RE = re.compile(rb"[ \t\r\n]*")
# Recovery skips everything but structural chars, control chars other than TAB, and
# the impossible bytes 0xFE/0xFF (QEMU documents \xFF and control chars as the way to
# resynchronise the parser).
_RECOVERY_RE = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}:,]*")

# -- limits and error texts ----------------------------------------------------------
_TOKEN_SIZE_ERROR = "JSON token size limit exceeded"
_TOKEN_COUNT_ERROR = "JSON token count limit exceeded"
_NESTING_ERROR = "JSON nesting depth limit exceeded"
_PREFIX = "JSON parse error, "

_INT64_MIN = -(1 << 63)
_UINT64_LIMIT = 1 << 64

# QEMU's is_valid_codepoint() refuses surrogates and the 66 noncharacters.
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17)
)
_NONCHAR_RE = re.compile(f"[{_NONCHARACTERS}]")
_BAD_CODEPOINT_RE = re.compile(f"[\ud800-\udfff{_NONCHARACTERS}]")
_HEX4_RE = re.compile(rb"[0-9a-fA-F]{4}")
_SIMPLE_ESCAPES = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}


def _valid_codepoint(cp: int) -> bool:
    return (
        0 <= cp <= 0x10FFFF
        and not 0xD800 <= cp <= 0xDFFF
        and not 0xFDD0 <= cp <= 0xFDEF
        and (cp & 0xFFFE) != 0xFFFE
    )


def _decode_raw(seg: bytes) -> str | None:
    """Decode escape-free string bytes as QEMU's modified UTF-8, None if invalid."""
    if b"\xc0\x80" in seg:
        # The overlong NUL is QEMU's encoding of U+0000.  0xC0 never continues a
        # sequence, so replacing the pair cannot make an invalid sequence valid.
        seg = seg.replace(b"\xc0\x80", b"\x00")
    try:
        text = seg.decode("utf-8")  # strict: refuses overlongs, surrogates, > U+10FFFF
    except UnicodeDecodeError:
        return None
    if _NONCHAR_RE.search(text):
        return None
    return text


_BAD_UTF8 = JsonParseError(_PREFIX + "invalid UTF-8 sequence in string")


def _hex4(data: bytes, start: int) -> int:
    """QEMU's cvt4hex(): four hex digits at ``start``, or -1."""
    return int(data[start : start + 4], 16) if _HEX4_RE.fullmatch(data, start, start + 4) else -1


def _decode_string(tok: bytes) -> str | JsonParseError:
    """QEMU's parse_string(): the value of a complete string token, or its error."""
    body = tok[1:-1]
    if b"\\" not in body:
        if body.isascii():
            return body.decode("ascii")
        text = _decode_raw(body)
        return _BAD_UTF8 if text is None else text
    # The text QEMU's error messages quote runs on into the closing quote.
    tail = body + tok[:1]
    parts: list[str] = []
    i = 0
    while True:
        j = body.find(b"\\", i)
        seg = body[i:] if j < 0 else body[i:j]
        if seg:
            text = _decode_raw(seg)
            if text is None:
                return _BAD_UTF8
            parts.append(text)
        if j < 0:
            return "".join(parts)
        esc = body[j + 1]  # the lexer never lets a backslash end a string
        simple = _SIMPLE_ESCAPES.get(esc)
        if simple is not None:
            parts.append(simple)
            i = j + 2
            continue
        if esc != ord("u"):
            return JsonParseError(_PREFIX + "invalid escape sequence in string")
        end = j + 6
        cp = _hex4(body, j + 2)
        if 0xD800 <= cp <= 0xDBFF and body[end : end + 2] == b"\\u":
            # A leading surrogate followed by \u must pair with a trailing one.
            low = _hex4(body, end + 2)
            if 0xDC00 <= low <= 0xDFFF:
                cp = 0x10000 + ((cp & 0x3FF) << 10) + (low & 0x3FF)
                end += 6
            else:
                cp = -1
        if not _valid_codepoint(cp):
            quoted = tail[j:end].decode("latin-1")
            return JsonParseError(f"{_PREFIX}{quoted} is not a valid Unicode character")
        parts.append(chr(cp))
        i = end


def _render_c_string(raw: bytes) -> str:
    """How QEMU's JSON writer shows arbitrary bytes held in a C string.

    The text stops at the first NUL; each invalid modified-UTF-8 sequence becomes
    U+FFFD, consuming what QEMU's mod_utf8_codepoint() consumes.
    """
    nul = raw.find(b"\x00")
    if nul >= 0:
        raw = raw[:nul]
    if raw.isascii():
        return raw.decode("ascii")
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        byte = raw[i]
        i += 1
        if byte < 0x80:
            out.append(chr(byte))
            continue
        if byte >= 0xFE or not byte & 0x40:
            out.append("\ufffd")
            continue
        length, mask = 0, 0x80
        while byte & mask:
            length += 1
            mask >>= 1
        cp = byte & (mask - 1)
        for _ in range(length - 1):
            if i >= n or raw[i] & 0xC0 != 0x80:
                cp = -1
                break
            cp = cp << 6 | raw[i] & 0x3F
            i += 1
        min_cp = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)[length - 2]
        if cp < 0 or not _valid_codepoint(cp) or (cp < min_cp and not (cp == 0 and length == 2)):
            out.append("\ufffd")
        else:
            out.append(chr(cp))
    return "".join(out)


def _parse_number(tok: bytes, kind: int) -> int | float:
    """QEMU's rule: int64 if it fits, else uint64 if it fits, else a double."""
    # 22+ characters can't fit 64 bits; skipping int() also dodges its digit cap.
    if kind == _INTEGER and len(tok) <= 21:
        value = int(tok)
        if _INT64_MIN <= value < _UINT64_LIMIT:
            return value
    return float(tok)  # correctly rounded like glibc strtod(); overflow gives inf


def _fast_int(text: str) -> int | float:
    """``parse_int`` hook applying the same rule to the C scanner's integers."""
    if len(text) <= 18:
        return int(text)
    return _parse_number(text.encode("ascii"), _INTEGER)


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
            if _BAD_CODEPOINT_RE.search(item):
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
        # lexer
        self._state = _START
        self._tok = bytearray()
        # streamer: token types, the texts of value tokens, and the counters
        self._types = bytearray()
        self._values: list[bytes] = []
        self._token_bytes = 0
        self._braces = 0
        self._brackets = 0

    # -- public API ------------------------------------------------------------------
    def feed(self, data: bytes) -> list[object]:
        """Consume ``data``; return the items it completes, in order."""
        out: list[object] = []
        if not isinstance(data, bytes):
            data = bytes(data)
        n = len(data)
        if not self._fast_path:
            self._lex(data, 0, out, stop_when_idle=False)
            return out
        pos = 0
        text: str | None = None
        non_ascii = careful = False
        while pos < n:
            if self._state == _START and not self._types:
                if text is None:
                    non_ascii = not data.isascii()
                    text = data.decode("latin-1")
                    careful = b"\\u" in data or _NINETEEN_DIGITS in data.translate(_DIGITS_ONLY)
                pos = self._fast(data, text, pos, out, non_ascii, careful)
                if pos >= n:
                    break
            pos = self._lex(data, pos, out, stop_when_idle=True)
        return out

    def feed_eof(self) -> list[object]:
        """The peer closed.  QEMU drops a pending incomplete message silently (its
        monitor resets the parser without flushing it), so this returns nothing and
        leaves the streamer as new."""
        self._state = _START
        self._tok.clear()
        self._reset_message()
        return []

    # -- fast path -------------------------------------------------------------------
    def _fast(
        self, data: bytes, text: str, pos: int, out: list[object], non_ascii: bool, careful: bool
    ) -> int:
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

    # -- exact path: lexer -----------------------------------------------------------
    def _lex(self, data: bytes, pos: int, out: list[object], *, stop_when_idle: bool) -> int:
        """Run QEMU's lexer over ``data[pos:]``; with ``stop_when_idle`` return as soon
        as a token has been handled and the streamer holds nothing."""
        n = len(data)
        tok = self._tok
        limit = self._max_token_bytes
        progressed = False
        while pos < n:
            state = self._state
            if state == _START:
                if progressed and stop_when_idle and not self._types:
                    return pos
                byte = data[pos]
                if byte in _WHITESPACE:
                    pos = _WS_RE.match(data, pos).end()  # type: ignore[union-attr]
                    continue
                progressed = True
                pos += 1
                kind = _STRUCTURAL.get(byte)
                if kind is not None:
                    self._token(kind, b"", out)
                    continue
                tok.append(byte)
                if byte == 0x22:  # "
                    self._state = _DQ
                elif byte == 0x27:  # '
                    self._state = _SQ
                elif byte == 0x30:  # 0
                    self._state = _ZERO
                elif byte in _DIGIT:
                    self._state = _DIGITS
                elif byte == 0x2D:  # -
                    self._state = _SIGN
                elif byte in _LOWER:
                    self._state = _KEYWORD
                else:
                    self._lex_error(out)
                    continue
                if len(tok) > limit:
                    self._oversized_token(out)
                continue
            if state == _RECOVERY:
                pos = _RECOVERY_RE.match(data, pos).end()  # type: ignore[union-attr]
                if pos < n:
                    self._state = _START  # the resynchronising byte is lexed afresh
                continue
            run = _RUN_RE.get(state)
            if run is not None:
                end = run.match(data, pos).end()  # type: ignore[union-attr]
                if end > pos:
                    room = limit + 1 - len(tok)
                    if end - pos >= room:
                        tok += data[pos : pos + room]
                        pos += room
                        self._oversized_token(out)
                        continue
                    tok += data[pos:end]
                    pos = end
                    if pos >= n:
                        break
            byte = data[pos]
            if state in (_DQ, _SQ):
                pos += 1
                tok.append(byte)
                if byte == (0x22 if state == _DQ else 0x27):
                    self._token(_STRING, bytes(tok), out)
                    tok.clear()
                    self._state = _START
                elif byte == 0x5C:  # backslash
                    self._state = _DQ_ESC if state == _DQ else _SQ_ESC
                    if len(tok) > limit:
                        self._oversized_token(out)
                else:
                    self._lex_error(out)
                continue
            if state in (_DQ_ESC, _SQ_ESC):
                pos += 1
                tok.append(byte)
                if 0x20 <= byte <= 0xFD:
                    self._state = _DQ if state == _DQ_ESC else _SQ
                    if len(tok) > limit:
                        self._oversized_token(out)
                else:
                    self._lex_error(out)
                continue
            table, terminal = _NUMBER_TABLE[state]
            nxt = table.get(byte)
            if nxt is not None and nxt != _BAD:
                pos += 1
                tok.append(byte)
                self._state = nxt
                if len(tok) > limit:
                    self._oversized_token(out)
            elif terminal is not None and nxt is None:
                # The byte ends the token without being consumed.
                self._token(terminal, bytes(tok), out)
                tok.clear()
                self._state = _START
            else:
                pos += 1
                tok.append(byte)
                self._lex_error(out)
        return pos

    def _lex_error(self, out: list[object]) -> None:
        """The current token plus the byte just appended is impossible."""
        out.append(JsonParseError(f"{_PREFIX}stray '{_render_c_string(bytes(self._tok))}'"))
        self._tok.clear()
        self._reset_message()
        self._state = _RECOVERY

    def _oversized_token(self, out: list[object]) -> None:
        # QEMU's lexer hands a token that outgrew the limit to the streamer, which
        # refuses it; lexing then restarts in the start state, not in recovery.
        out.append(JsonParseError(_TOKEN_SIZE_ERROR))
        self._tok.clear()
        self._reset_message()
        self._state = _START

    # -- exact path: streamer --------------------------------------------------------
    def _reset_message(self) -> None:
        self._types.clear()
        self._values.clear()
        self._token_bytes = 0
        self._braces = 0
        self._brackets = 0

    def _token(self, kind: int, text: bytes, out: list[object]) -> None:
        """QEMU's json_message_process_token() for one complete token."""
        if kind < _STRING:
            size = 1
            if kind == _LCURLY:
                self._braces += 1
            elif kind == _RCURLY:
                self._braces -= 1
            elif kind == _LSQUARE:
                self._brackets += 1
            elif kind == _RSQUARE:
                self._brackets -= 1
        else:
            size = len(text)
        error = None
        if self._token_bytes + size + 1 > self._max_token_bytes:
            error = _TOKEN_SIZE_ERROR
        elif len(self._types) + 1 > self._max_tokens:
            error = _TOKEN_COUNT_ERROR
        elif self._braces + self._brackets > self._max_depth:
            error = _NESTING_ERROR
        if error is not None:
            out.append(JsonParseError(error))
            self._reset_message()
            return
        self._types.append(kind)
        if kind >= _STRING:
            self._values.append(text)
        self._token_bytes += size
        braces, brackets = self._braces, self._brackets
        if (braces > 0 or brackets > 0) and braces >= 0 and brackets >= 0:
            return
        out.append(_parse(self._types, self._values))
        self._reset_message()

    # JsonStreamer is deliberately not thread-safe; one per connection.


# -- exact path: parser --------------------------------------------------------------
_IN_ARRAY, _WANT_KEY, _WANT_VALUE = range(3)


def _literal(kind: int, text: bytes) -> object:
    if kind == _STRING:
        return _decode_string(text)
    if kind == _KW:
        if text == b"true":
            return True
        if text == b"false":
            return False
        if text == b"null":
            return None
        return JsonParseError(f"{_PREFIX}invalid keyword '{text.decode('ascii')}'")
    return _parse_number(text, kind)


def _parse(types: bytearray, values: list[bytes]) -> object:
    """QEMU's json_parser_parse() over one message's tokens, without recursion.

    Each stack frame is ``[mode, container, pending key]``; the first error met is
    the one reported, as QEMU keeps only the first.
    """
    n = len(types)
    pos = 0
    vpos = 0
    stack: list[list[object]] = []
    eoi = JsonParseError(_PREFIX + "premature EOI")
    while True:
        # Parse one value starting at pos (QEMU's parse_value()).
        if pos >= n:
            return eoi
        kind = types[pos]
        value: object
        if kind in (_LCURLY, _LSQUARE):
            pos += 1
            if pos >= n:
                return eoi
            if types[pos] == (_RCURLY if kind == _LCURLY else _RSQUARE):
                pos += 1
                value = {} if kind == _LCURLY else []
            else:
                if kind == _LCURLY:
                    stack.append([_WANT_KEY, {}, None])
                else:
                    stack.append([_IN_ARRAY, [], None])
                continue
        elif kind >= _STRING:
            value = _literal(kind, values[vpos])
            pos += 1
            vpos += 1
            if isinstance(value, JsonParseError):
                return value
        else:
            return JsonParseError(_PREFIX + "expecting value")
        # Hand the value to the enclosing containers, closing those that end here.
        while True:
            if not stack:
                return value
            frame = stack[-1]
            mode = frame[0]
            if mode == _WANT_KEY:
                if not isinstance(value, str):
                    return JsonParseError(_PREFIX + "key is not a string in object")
                if pos >= n:
                    return eoi
                if types[pos] != _COLON:
                    return JsonParseError(_PREFIX + "missing : in object pair")
                pos += 1
                frame[0] = _WANT_VALUE
                frame[2] = value
                break
            container = frame[1]
            if mode == _WANT_VALUE:
                assert isinstance(container, dict)
                key = frame[2]
                if key in container:
                    return JsonParseError(_PREFIX + "duplicate key")
                container[key] = value
                close, separator_error = _RCURLY, "expected separator in dict"
            else:
                assert isinstance(container, list)
                container.append(value)
                close, separator_error = _RSQUARE, "expected separator in list"
            if pos >= n:
                return eoi
            kind = types[pos]
            pos += 1
            if kind == close:
                stack.pop()
                value = container
                continue
            if kind != _COMMA:
                return JsonParseError(_PREFIX + separator_error)
            if mode == _WANT_VALUE:
                frame[0] = _WANT_KEY
            break
