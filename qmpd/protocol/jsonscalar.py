"""QEMU's rules for the values of JSON tokens (qobject/json-parser.c, util/unicode.c).

Strings are QEMU's "modified UTF-8" (``\\xC0\\x80`` is U+0000) with the usual escapes
plus ``\\'``; surrogates and noncharacters are refused whether raw or escaped.  Integers
become int64, else uint64, else a double.  Stray bytes in error messages are shown the
way QEMU's JSON writer shows a C string.  Each decoder returns the value or a
:class:`Bad` carrying the text that follows ``JSON parse error, ``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BAD_CODEPOINT_RE",
    "Bad",
    "decode_keyword",
    "decode_string",
    "parse_integer",
    "render_c_string",
]

_INT64_MIN = -(1 << 63)
_UINT64_LIMIT = 1 << 64


@dataclass(frozen=True, slots=True)
class Bad:
    """Why a token's value is refused: the detail after ``JSON parse error, ``."""

    detail: str


# QEMU's is_valid_codepoint() refuses surrogates and the 66 noncharacters.
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17)
)
_NONCHAR_RE = re.compile(f"[{_NONCHARACTERS}]")
BAD_CODEPOINT_RE = re.compile(f"[\ud800-\udfff{_NONCHARACTERS}]")
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
_BAD_UTF8 = Bad("invalid UTF-8 sequence in string")


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


def _hex4(data: bytes, start: int) -> int:
    """QEMU's cvt4hex(): four hex digits at ``start``, or -1."""
    return int(data[start : start + 4], 16) if _HEX4_RE.fullmatch(data, start, start + 4) else -1


def decode_string(tok: bytes) -> str | Bad:
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
            return Bad("invalid escape sequence in string")
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
            # QEMU quotes the raw bytes, shown like any C string in its replies.
            quoted = render_c_string(tail[j:end])
            return Bad(f"{quoted} is not a valid Unicode character")
        parts.append(chr(cp))
        i = end


def render_c_string(raw: bytes) -> str:
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


def parse_integer(tok: bytes) -> int | float:
    """QEMU's rule for an integer token: int64 if it fits, else uint64, else a double."""
    # 22+ characters can't fit 64 bits; skipping int() also dodges its digit cap.
    if len(tok) <= 21:
        value = int(tok)
        if _INT64_MIN <= value < _UINT64_LIMIT:
            return value
    return float(tok)  # correctly rounded like glibc strtod(); overflow gives inf


def decode_keyword(text: bytes) -> bool | Bad | None:
    """The value of a keyword token: only lower-case true, false and null exist."""
    if text == b"true":
        return True
    if text == b"false":
        return False
    if text == b"null":
        return None
    return Bad(f"invalid keyword '{text.decode('ascii')}'")
