"""QEMU's JSON output format for QMP messages (qobject/json-writer.c plus the monitor).

What a client sees from QEMU, and so from us:

* pure ASCII: every control character, DEL and non-ASCII code point is written
  ``\\uXXXX`` with upper-case hex (astral code points as a surrogate pair); ``"``,
  ``\\``, backspace, form feed, newline, carriage return and tab use their short
  escapes; ``/`` is not escaped;
* compact separators ``", "`` and ``": "`` (Python's defaults);
* floats as C's ``%.17g``: ``0.1`` -> ``0.10000000000000001``, ``1500.0`` -> ``1500``,
  ``-0.0`` -> ``-0``.  Infinities and NaN come out as QEMU prints them, ``inf``,
  ``-inf`` and ``nan`` -- not valid JSON, but what QEMU sends when a client echoes
  ``1e999`` as an ``id``; reproducing it keeps byte-for-byte parity and no finite
  value is affected;
* each message ends with ``\\r\\n`` (QEMU's monitor turns every ``\\n`` into
  ``\\r\\n``);
* pretty mode (``--monitor ...,pretty=on``): four-space indent, a line break after
  every ``{``/``[`` and before every member, and empty containers printed open, as
  ``{`` line break ``}``.

The common message (no float, not pretty) is produced by the C encoder of the
``json`` module and patched only where it differs from QEMU (lower-case hex, DEL).
Deliberate difference: a Python string holding a lone surrogate or a noncharacter is
written as that code point's escape, where QEMU would write ``\\uFFFD``; our parser
never produces such strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.encoder import encode_basestring_ascii

__all__ = ["encode_message"]

_DUMPS: Callable[[object], str] = json.JSONEncoder(check_circular=False).encode

# json writes a float as its repr, which always has a digit followed by "." or by "e+"
# or "e-", or as Infinity/NaN, and a number always follows "[", " " (of ", " or ": ")
# or starts the text.  Mapping digits to "0" and finding those pairs is far cheaper
# than a regex; a hit inside a string (" 1.5") only costs the slower exact path.
_DIGITS_TO_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else i for i in range(256))
_FLOAT_MARKS = (b"0.", b"0e+", b"0e-")


def _may_hold_float(text: str, data: bytes) -> bool:
    if "Infinity" in text or "NaN" in text:
        return True
    if "." not in text and "e+" not in text and "e-" not in text:
        return False
    digits = data.translate(_DIGITS_TO_ZERO)
    for mark in _FLOAT_MARKS:
        at = digits.find(mark)
        while at >= 0:
            start = at
            while start > 0 and digits[start - 1] == 0x30:
                start -= 1
            if start > 0 and digits[start - 1] == 0x2D:  # minus sign
                start -= 1
            if start == 0 or digits[start - 1] in b"[ ":
                return True
            at = digits.find(mark, at + 1)
    return False


# Escapes come in pairs; matching an escaped backslash first keeps the text backslash,
# "u", "0041" from being mistaken for a \u escape.
_ESCAPE_RE = re.compile(r"\\\\|\\u[0-9a-f]{4}")


def _upper_escape(match: re.Match[str]) -> str:
    text = match.group()
    return text if len(text) == 2 else "\\u" + text[2:].upper()


def _qemu_ascii(text: str) -> str:
    """Patch json's ASCII output into QEMU's: upper-case hex escapes, DEL escaped."""
    if "\\u" in text:
        text = _ESCAPE_RE.sub(_upper_escape, text)
    if "\x7f" in text:
        text = text.replace("\x7f", "\\u007F")
    return text


def _float(value: float) -> str:
    return format(value, ".17g")  # C's %.17g: shortest form that round-trips exactly


def _compact(obj: object, parts: list[str]) -> None:
    if isinstance(obj, str):
        parts.append(encode_basestring_ascii(obj))
    elif obj is None:
        parts.append("null")
    elif obj is True:
        parts.append("true")
    elif obj is False:
        parts.append("false")
    elif isinstance(obj, int):
        parts.append(int.__repr__(obj))
    elif isinstance(obj, float):
        parts.append(_float(obj))
    elif isinstance(obj, dict):
        parts.append("{")
        first = True
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"QMP object keys must be strings, not {type(key).__name__}")
            if not first:
                parts.append(", ")
            first = False
            parts.append(encode_basestring_ascii(key))
            parts.append(": ")
            _compact(value, parts)
        parts.append("}")
    elif isinstance(obj, (list, tuple)):
        parts.append("[")
        for index, value in enumerate(obj):
            if index:
                parts.append(", ")
            _compact(value, parts)
        parts.append("]")
    else:
        raise TypeError(f"{type(obj).__name__} cannot be sent as JSON")


def _pretty(obj: object, parts: list[str], level: int) -> None:
    # QEMU's writer breaks the line before each member and before the closing
    # bracket, so an empty container still spans two lines.
    if isinstance(obj, dict):
        items: list[tuple[str | None, object]] = []
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"QMP object keys must be strings, not {type(key).__name__}")
            items.append((key, value))
        opening, closing = "{", "}"
    elif isinstance(obj, (list, tuple)):
        items = [(None, value) for value in obj]
        opening, closing = "[", "]"
    else:
        _compact(obj, parts)
        return
    inner = "\n" + "    " * (level + 1)
    parts.append(opening)
    for index, (key, value) in enumerate(items):
        parts.append("," + inner if index else inner)
        if key is not None:
            parts.append(encode_basestring_ascii(key))
            parts.append(": ")
        _pretty(value, parts, level + 1)
    parts.append("\n" + "    " * level + closing)


def encode_message(obj: object, *, pretty: bool = False) -> bytes:
    """Serialise one QMP message as QEMU would, ``\\r\\n`` included.

    Raises TypeError for a value JSON cannot carry.  Object keys must be strings
    (QEMU's always are); others get json's conversion or a TypeError.
    """
    if not pretty:
        try:
            text = _DUMPS(obj)
        except (TypeError, ValueError):
            text = ""  # left to the exact path, which names the offending value
        else:
            data = text.encode("ascii")
            if not _may_hold_float(text, data):
                if b"\\u" in data or b"\x7f" in data:
                    data = _qemu_ascii(text).encode("ascii")
                return data + b"\r\n"
    parts: list[str] = []
    if pretty:
        _pretty(obj, parts, 0)
        text = "".join(parts).replace("\n", "\r\n")
    else:
        _compact(obj, parts)
        text = "".join(parts)
    return (_qemu_ascii(text) + "\r\n").encode("ascii")
