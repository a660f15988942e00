"""QEMU 11.1's JSON lexer, streamer and parser, followed one token at a time.

Theory of operation
-------------------
QEMU reads QMP input as a stream of bytes with no framing.  Three layers turn it into
messages (qobject/json-lexer.c, json-streamer.c, json-parser.c):

* a *lexer*, a table-driven state machine, cuts the bytes into tokens.  An impossible
  byte produces an error token (the text so far plus that byte, reported as
  ``stray '...'``) and puts the lexer into *recovery*, where it skips bytes until a
  structural character, a control character other than TAB, or 0xFE/0xFF;
* a *streamer* counts ``{``/``}`` and ``[``/``]`` separately: a message ends when neither
  count is positive any more, or one went negative.  It also enforces three limits per
  message (total token bytes, token count, nesting depth);
* a *push parser* is fed each token as it arrives and reports the first error at
  once, at the token where it sees it.

After a parse or limit error the message is *failed*: its remaining tokens are dropped
without a word until the bracket counts end it (``{"a" 1, [2]} 5`` gives one error,
then the scalar 5).  A lexer error ends the current message instead, and is reported
only when that message had not failed already.

Every parse error starts with ``line:column: `` of its token: lines and columns count
bytes over the whole connection (only ``\\n`` starts a line; ``\\r``, TAB, 0xFF and each
byte of a UTF-8 sequence are one column each).  One quirk is reproduced: a token whose
first byte was looked at twice -- the byte that ended a number or keyword, or the one
that ended recovery -- is reported one column to the right (``[1}`` says 1:4).  Limit
errors carry no location.  All of this was observed on QEMU 11.1.2.

:class:`ExactStreamer` keeps only absolute byte offsets while it works and turns one
into ``line:column`` when an error needs it, from the newline counts its owner keeps
per chunk (:meth:`ExactStreamer.end_chunk`), so valid input pays next to nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .jsonscalar import Bad, decode_keyword, decode_string, parse_integer, render_c_string

__all__ = ["ExactStreamer", "JsonParseError"]


@dataclass(frozen=True, slots=True)
class JsonParseError:
    """One error the streamer reports; ``desc`` is QEMU's full error text."""

    desc: str


# -- lexer tables ----------------------------------------------------------------------
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

# -- error texts -----------------------------------------------------------------------
_TOKEN_SIZE_ERROR = "JSON token size limit exceeded"
_TOKEN_COUNT_ERROR = "JSON token count limit exceeded"
_NESTING_ERROR = "JSON nesting depth limit exceeded"


def _literal(kind: int, text: bytes) -> object:
    """The value of a scalar token, or a :class:`Bad`."""
    if kind == _STRING:
        return decode_string(text)
    if kind == _KW:
        return decode_keyword(text)
    if kind == _INTEGER:
        return parse_integer(text)
    return float(text)


# -- parser modes ----------------------------------------------------------------------
# What the innermost open container expects next.  A frame is [mode, container, key].
_ARRAY_FIRST, _ARRAY_VALUE, _ARRAY_NEXT = range(3)  # after "[", after ",", after a value
_OBJECT_FIRST, _OBJECT_KEY, _OBJECT_COLON, _OBJECT_VALUE, _OBJECT_NEXT = range(3, 8)


class ExactStreamer:
    """QEMU's lexer, streamer and push parser over a connection's bytes.

    :meth:`lex` consumes a chunk (or the part the caller's fast path left) and appends
    values and :class:`JsonParseError` to ``out``; :meth:`end_chunk` must follow each
    chunk, whoever consumed it, so that error locations stay right.  Nothing is raised
    for bad input.
    """

    def __init__(self, *, max_token_bytes: int, max_tokens: int, max_depth: int) -> None:
        self._max_token_bytes = max_token_bytes
        self._max_tokens = max_tokens
        self._max_depth = max_depth
        self.reset()

    def reset(self) -> None:
        """Forget everything, the location count included (a new connection)."""
        # lexer
        self._state = _START
        self._tok = bytearray()
        self._tok_start = 0  # absolute offset of the current token's first byte
        self._tok_shift = 0  # 1 when that byte had been looked at before (the quirk)
        self._refed_at = -1  # absolute offset of the last byte handed back for a re-read
        self._after_cut = False  # an oversized token was just cut (a location quirk)
        # locations: the chunk being lexed starts at absolute offset _base; _lines
        # newlines came before it, the last one ending just before offset _line_start
        self._data = b""
        self._base = 0
        self._lines = 0
        self._line_start = 0
        self._tok_where = (1, 1)  # the current token's location, once its chunk is gone
        # streamer and parser: the message in progress
        self._stack: list[list[object]] = []
        self._tokens = 0
        self._token_bytes = 0
        self._braces = 0
        self._brackets = 0
        self._failed = False  # an error was reported: drop tokens until the end

    @property
    def idle(self) -> bool:
        """Between messages, with no token half-read (nor a location pending)."""
        return (
            self._state == _START and not self._tokens and not self._failed and not self._after_cut
        )

    # -- locations -----------------------------------------------------------------------
    def end_chunk(self, data: bytes) -> None:
        """``data``, the chunk just fed, is over: move the location count past it.

        This runs for every chunk, valid or not, so it does no more than two scans
        at C speed (and none when the chunk has no newline).
        """
        if (self._tok or self._after_cut) and self._tok_start >= self._base:
            # The token goes on in the next chunk (or the next one inherits its
            # location): locate its start while we can.
            self._data = data
            self._tok_where = self._where(self._tok_start)
        last = data.rfind(b"\n")
        if last >= 0:
            self._lines += data.count(b"\n")
            self._line_start = self._base + last + 1
        self._base += len(data)

    def _where(self, offset: int) -> tuple[int, int]:
        """(line, column) of an absolute offset in the current chunk or of the token
        still being read when the previous chunk ended."""
        rel = offset - self._base
        if rel < 0:
            return self._tok_where
        data = self._data
        newlines = data.count(b"\n", 0, rel)
        if newlines:
            return self._lines + newlines + 1, rel - data.rfind(b"\n", 0, rel)
        return self._lines + 1, offset - self._line_start + 1

    def _located(self, detail: str, offset: int, shift: int) -> JsonParseError:
        line, column = self._where(offset)
        return JsonParseError(f"{line}:{column + shift}: JSON parse error, {detail}")

    # -- lexer -----------------------------------------------------------------------------
    def lex(self, data: bytes, pos: int, out: list[object], *, stop_when_idle: bool) -> int:
        """Run QEMU's lexer over ``data[pos:]``; with ``stop_when_idle`` return as soon
        as a token has been handled and no message is in progress."""
        self._data = data
        base = self._base
        n = len(data)
        tok = self._tok
        limit = self._max_token_bytes
        progressed = False
        while pos < n:
            state = self._state
            if state == _START:
                if progressed and stop_when_idle and self.idle:
                    return pos
                byte = data[pos]
                if byte in _WHITESPACE:
                    pos = _WS_RE.match(data, pos).end()  # type: ignore[union-attr]
                    self._after_cut = False
                    continue
                progressed = True
                if self._after_cut:
                    # QEMU 11.1.2 locates the token right after a cut where the cut
                    # token began (see _oversized_token).
                    self._after_cut = False
                    start, shift = self._tok_start, self._tok_shift
                else:
                    self._tok_start = start = base + pos
                    self._tok_shift = shift = 1 if start == self._refed_at else 0
                pos += 1
                kind = _STRUCTURAL.get(byte)
                if kind is not None:
                    self._token(kind, b"", start, shift, out)
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
                    # The resynchronising byte is lexed afresh.
                    self._state = _START
                    self._refed_at = base + pos
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
                    self._state = _START
                    self._token(_STRING, bytes(tok), self._tok_start, self._tok_shift, out)
                    tok.clear()
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
                # The byte ends the token without being consumed: it is read again.
                self._state = _START
                self._refed_at = base + pos
                self._token(terminal, bytes(tok), self._tok_start, self._tok_shift, out)
                tok.clear()
            else:
                pos += 1
                tok.append(byte)
                self._lex_error(out)
        return pos

    def _lex_error(self, out: list[object]) -> None:
        """The current token plus the byte just appended is impossible.

        The message in progress ends; the error is news only if it had not failed.
        """
        if not self._failed:
            detail = f"stray '{render_c_string(bytes(self._tok))}'"
            out.append(self._located(detail, self._tok_start, self._tok_shift))
        self._tok.clear()
        self._reset_message()
        self._state = _RECOVERY

    def _oversized_token(self, out: list[object]) -> None:
        # QEMU's lexer hands a token that outgrew the limit to the streamer, which
        # refuses it like any limit breach; lexing then restarts in the start state,
        # not in recovery (QEMU 11.1.2: '["' + 64 MiB + 5 "a" + '"] {...} " {...} ]'
        # answered only the limit and the object after the second "]").  The restart
        # skips QEMU's location bookkeeping: the next token, unless whitespace comes
        # first, is located where the cut one began ('"' + 64 MiB + 5 "a" + '"' said
        # "1:1: ... invalid keyword 'aaaaa'").
        self._tok.clear()
        self._state = _START
        self._after_cut = True
        if not self._failed:
            out.append(JsonParseError(_TOKEN_SIZE_ERROR))
            self._failed = True
            self._stack.clear()
        self._end_if_closed()

    # -- streamer --------------------------------------------------------------------------
    def _reset_message(self) -> None:
        self._stack.clear()
        self._tokens = 0
        self._token_bytes = 0
        self._braces = 0
        self._brackets = 0
        self._failed = False

    def _token(self, kind: int, text: bytes, start: int, shift: int, out: list[object]) -> None:
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
        if not self._failed:
            error: JsonParseError | None = None
            if self._token_bytes + size + 1 > self._max_token_bytes:
                error = JsonParseError(_TOKEN_SIZE_ERROR)
            elif self._tokens + 1 > self._max_tokens:
                error = JsonParseError(_TOKEN_COUNT_ERROR)
            elif self._braces + self._brackets > self._max_depth:
                error = JsonParseError(_NESTING_ERROR)
            else:
                self._tokens += 1
                self._token_bytes += size
                detail = self._parse(kind, text, out)
                if detail is None:
                    return
                error = self._located(detail, start, shift)
            out.append(error)
            self._failed = True
            self._stack.clear()
        self._end_if_closed()

    def _end_if_closed(self) -> None:
        """A failed message still ends where the bracket counts say."""
        braces, brackets = self._braces, self._brackets
        if braces < 0 or brackets < 0 or (braces == 0 and brackets == 0):
            self._reset_message()

    # -- parser ----------------------------------------------------------------------------
    def _parse(self, kind: int, text: bytes, out: list[object]) -> str | None:
        """Feed one token to the push parser; return the error detail, if any.

        A finished top-level value goes to ``out`` and ends the message.
        """
        stack = self._stack
        if stack:
            frame = stack[-1]
            mode = frame[0]
            if mode == _ARRAY_NEXT:
                if kind == _COMMA:
                    frame[0] = _ARRAY_VALUE
                    return None
                if kind == _RSQUARE:
                    stack.pop()
                    return self._finish(frame[1], out)
                return "expected ',' or ']'"
            if mode == _OBJECT_NEXT:
                if kind == _COMMA:
                    frame[0] = _OBJECT_KEY
                    return None
                if kind == _RCURLY:
                    stack.pop()
                    return self._finish(frame[1], out)
                return "expected ',' or '}'"
            if mode == _OBJECT_COLON:
                if kind == _COLON:
                    frame[0] = _OBJECT_VALUE
                    return None
                return "expecting ':'"
            if mode in (_OBJECT_FIRST, _OBJECT_KEY):
                if kind == _RCURLY and mode == _OBJECT_FIRST:
                    stack.pop()
                    return self._finish({}, out)
                if kind != _STRING:
                    return "expecting key"
                key = decode_string(text)
                if isinstance(key, Bad):
                    return key.detail
                frame[0] = _OBJECT_COLON
                frame[2] = key
                return None
            if mode == _ARRAY_FIRST and kind == _RSQUARE:
                stack.pop()
                return self._finish([], out)
        # A value is expected: at top level, in an array, or after a key's colon.
        if kind == _LCURLY:
            stack.append([_OBJECT_FIRST, {}, None])
            return None
        if kind == _LSQUARE:
            stack.append([_ARRAY_FIRST, [], None])
            return None
        if kind < _STRING:
            return "expecting value"
        value = _literal(kind, text)
        if isinstance(value, Bad):
            return value.detail
        return self._finish(value, out)

    def _finish(self, value: object, out: list[object]) -> str | None:
        """A value is complete: store it in its container, or hand it out."""
        stack = self._stack
        if not stack:
            out.append(value)
            self._reset_message()
            return None
        frame = stack[-1]
        container = frame[1]
        if frame[0] == _OBJECT_VALUE:
            assert isinstance(container, dict)
            key = frame[2]
            if key in container:
                return "duplicate key"
            container[key] = value
            frame[0] = _OBJECT_NEXT
        else:
            assert isinstance(container, list)
            container.append(value)
            frame[0] = _ARRAY_NEXT
        return None
