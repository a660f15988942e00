"""Tests for qmpd.protocol.jsonstream: QEMU 11.1's JSON streamer, byte for byte."""

from __future__ import annotations

import json
import math
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmpd.protocol.jsonstream import JsonParseError, JsonStreamer
from tests.support.daemons import RawClient, qsd_new_kind, running, why_missing

E = JsonParseError
INF = math.inf


def canon(item: object) -> object:
    """A comparable form that tells bool, int and float apart (and -0.0 from 0.0)."""
    if isinstance(item, JsonParseError):
        return ("error", item.desc)
    if isinstance(item, bool) or item is None:
        return ("const", item)
    if isinstance(item, int):
        return ("int", item)
    if isinstance(item, float):
        return ("float", item.hex())
    if isinstance(item, str):
        return ("str", item)
    if isinstance(item, dict):
        return ("dict", tuple((key, canon(value)) for key, value in item.items()))
    if isinstance(item, list):
        return ("list", tuple(canon(value) for value in item))
    raise AssertionError(f"unexpected item {item!r}")


def items(data: bytes, **kwargs: object) -> list[object]:
    return [canon(item) for item in JsonStreamer(**kwargs).feed(data)]  # type: ignore[arg-type]


def bytewise(data: bytes, **kwargs: object) -> list[object]:
    streamer = JsonStreamer(**kwargs)  # type: ignore[arg-type]
    out: list[object] = []
    for index in range(len(data)):
        out += streamer.feed(data[index : index + 1])
    return [canon(item) for item in out]


# Each input was sent to a fresh QEMU 11.1.2 (qemu-storage-daemon 11.1.2) monitor,
# not negotiated, and the replies read back; every literal below was observed there.
# An error reply without id is a JsonParseError here; a reply of "QMP input must be a
# JSON object" is the top-level scalar we yield (the session layer words that error);
# any other reply means QEMU parsed an object (its values follow QEMU's number and
# string rules, the same in 7.2 and 11.1).  Inputs ending mid-token got no reply (QEMU
# waits).  Locations count bytes from the start of the connection.
LIVE_QEMU_11_1 = [
    (b"42\n", [42]),
    (b"42", []),
    (b'"str"', ["str"]),
    (b"true ", [True]),
    (b"tru\n", [E("1:1: JSON parse error, invalid keyword 'tru'")]),
    (b"nul\n", [E("1:1: JSON parse error, invalid keyword 'nul'")]),
    (b"[1,]", [E("1:4: JSON parse error, expecting value")]),
    (b'{"a":1,}', [E("1:8: JSON parse error, expecting key")]),
    (b'{"a":1,"a":2}', [E("1:12: JSON parse error, duplicate key")]),
    (b"{'execute':'query-version','id':'x\\'y'}", [{"execute": "query-version", "id": "x'y"}]),
    (b'{"execute":"x\\u00e9"}', [{"execute": "xé"}]),
    (
        b'{"execute":"\\ud800"}',
        [E("1:12: JSON parse error, \\ud800 is not a valid Unicode character")],
    ),
    (
        b'{"execute":"\\uD800\\u0041"}',
        [E("1:12: JSON parse error, \\uD800 is not a valid Unicode character")],
    ),
    (
        b'{"execute":"\\udc00"}',
        [E("1:12: JSON parse error, \\udc00 is not a valid Unicode character")],
    ),
    (
        b'{"execute":"\\ufffe"}',
        [E("1:12: JSON parse error, \\ufffe is not a valid Unicode character")],
    ),
    (
        b'{"execute":"\\u12"}',
        [E('1:12: JSON parse error, \\u12" is not a valid Unicode character')],
    ),
    (
        b'{"execute":"\\u12zz"}',
        [E("1:12: JSON parse error, \\u12zz is not a valid Unicode character")],
    ),
    (
        b'{"execute":"\\uD83F\\uDFFE"}',
        [E("1:12: JSON parse error, \\uD83F\\uDFFE is not a valid Unicode character")],
    ),
    (b'{"execute":"\\q"}', [E("1:12: JSON parse error, invalid escape sequence in string")]),
    (b'{"execute":"a\xc0\x80b"}', [{"execute": "a\x00b"}]),
    (
        b'{"execute":"a\xef\xbf\xbeb"}',
        [E("1:12: JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (b'{"execute":"a\xc3b"}', [E("1:12: JSON parse error, invalid UTF-8 sequence in string")]),
    (b'{"execute":"\\ud83d\\ude00"}', [{"execute": "😀"}]),
    (
        b'{"execute":"a\tb"}',
        [E("1:12: JSON parse error, stray '\"a\t'"), E("1:18: JSON parse error, expecting value")],
    ),
    (b'{"id":-0,"execute":"x"}', [{"id": 0, "execute": "x"}]),
    (
        b'{"id":123456789012345678901234567890,"execute":"x"}',
        [{"id": 1.2345678901234568e29, "execute": "x"}],
    ),
    (b'{"id":18446744073709551615,"execute":"x"}', [{"id": 18446744073709551615, "execute": "x"}]),
    (b'{"id":-9223372036854775809,"execute":"x"}', [{"id": -9.223372036854776e18, "execute": "x"}]),
    (b'{"id":1e999,"execute":"x"}', [{"id": INF, "execute": "x"}]),
    (b'{"id":0.1,"execute":"x"}', [{"id": 0.1, "execute": "x"}]),
    (b'{"id":1.5e3,"execute":"x"}', [{"id": 1500.0, "execute": "x"}]),
    (b'{"id":-0.0,"execute":"x"}', [{"id": -0.0, "execute": "x"}]),
    (b'{"id":1E2,"execute":"x"}', [{"id": 100.0, "execute": "x"}]),
    (b'{"id":1e-400,"execute":"x"}', [{"id": 0.0, "execute": "x"}]),
    (b'{"id":5e-324,"execute":"x"}', [{"id": 5e-324, "execute": "x"}]),
    (b"{1:2}", [E("1:2: JSON parse error, expecting key")]),
    (b'{"a" 1}', [E("1:6: JSON parse error, expecting ':'")]),
    (b'{"a":1 "b":2}', [E("1:8: JSON parse error, expected ',' or '}'")]),
    (b"[1 2]", [E("1:4: JSON parse error, expected ',' or ']'")]),
    (b'{"a":1]', [E("1:8: JSON parse error, expected ',' or '}'")]),
    (b"[1}", [E("1:4: JSON parse error, expected ',' or ']'")]),
    (b"{]", [E("1:2: JSON parse error, expecting key")]),
    (b"[}", [E("1:2: JSON parse error, expecting value")]),
    (b"}", [E("1:1: JSON parse error, expecting value")]),
    (b"]", [E("1:1: JSON parse error, expecting value")]),
    (b":", [E("1:1: JSON parse error, expecting value")]),
    (b",", [E("1:1: JSON parse error, expecting value")]),
    (b"{[1]:2}", [E("1:2: JSON parse error, expecting key")]),
    (b'{"a":[}]', [E("1:7: JSON parse error, expecting value")]),
    (b"%d\n", [E("1:1: JSON parse error, stray '%'")]),
    (b"NaN\n", [E("1:1: JSON parse error, stray 'N'")]),
    (b"Infinity\n", [E("1:1: JSON parse error, stray 'I'")]),
    (b"-x", [E("1:1: JSON parse error, stray '-x'")]),
    (b"-\n", [E("1:1: JSON parse error, stray '-\n'")]),
    (b"1.\n", [E("1:1: JSON parse error, stray '1.\n'")]),
    (b"1.e5\n", [E("1:1: JSON parse error, stray '1.e'")]),
    (b"1e\n", [E("1:1: JSON parse error, stray '1e\n'")]),
    (b"1e+\n", [E("1:1: JSON parse error, stray '1e+\n'")]),
    (b"1.5x", [1.5]),
    (b"0x10\n", [0, E("1:3: JSON parse error, invalid keyword 'x'"), 10]),
    (
        b'{"id":01}',
        [E("1:7: JSON parse error, stray '01'"), E("1:10: JSON parse error, expecting value")],
    ),
    (
        b"[1,2\x01,3]",
        [
            E("1:6: JSON parse error, stray '\x01'"),
            E("1:7: JSON parse error, expecting value"),
            3,
            E("1:9: JSON parse error, expecting value"),
        ],
    ),
    (
        b'[1,"a\x01b",3]',
        [
            E("1:4: JSON parse error, stray '\"a\x01'"),
            E("1:10: JSON parse error, expecting value"),
            3,
            E("1:12: JSON parse error, expecting value"),
        ],
    ),
    (b'["a\x7fb"]\n', [["a\x7fb"]]),
    (b'{"execute":"x\x7f"}', [{"execute": "x\x7f"}]),
    (
        b'{"id":"\xff"}',
        [E("1:7: JSON parse error, stray '\"�'"), E("1:11: JSON parse error, expecting value")],
    ),
    (b"\xfe", [E("1:1: JSON parse error, stray '�'")]),
    (b'{"a":tru}', [E("1:6: JSON parse error, invalid keyword 'tru'")]),
    (b'{"a":truex}', [E("1:6: JSON parse error, invalid keyword 'truex'")]),
    (
        b'{"a":True}',
        [E("1:6: JSON parse error, stray 'T'"), E("1:11: JSON parse error, expecting value")],
    ),
    (
        b'{"a":nulL}',
        [
            E("1:6: JSON parse error, invalid keyword 'nul'"),
            E("1:11: JSON parse error, expecting value"),
        ],
    ),
    (b"[[[]]]]", [[[[]]], E("1:7: JSON parse error, expecting value")]),
    (b'"ab\\', []),
    (b'{"execute": "x", "id": {}}', [{"execute": "x", "id": {}}]),
    (b'{"execute":"x","id":[]}', [{"execute": "x", "id": []}]),
    (
        b'{"execute":"x","id":"\\/\\b\\f\\n\\r\\t\\"\\\\\\\'"}',
        [{"execute": "x", "id": "/\x08\x0c\n\r\t\"\\'"}],
    ),
    (b'{"execute":"x","id":\'a"b\'}', [{"execute": "x", "id": 'a"b'}]),
    (
        b'{"execute":"x","id":"\\u0000\\u001f\\u007f\\u0080"}',
        [{"execute": "x", "id": "\x00\x1f\x7f\x80"}],
    ),
    (b'{"execute":"x","id":"\xc3\xa9\xf0\x9f\x98\x80"}', [{"execute": "x", "id": "é😀"}]),
    (
        b'{"execute":"x","id":"\xed\xa0\x80"}',
        [E("1:21: JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\xe0\x80\x80"}',
        [E("1:21: JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\xc1\x81"}',
        [E("1:21: JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\xf8\x88\x80\x80\x80"}',
        [E("1:21: JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\xef\xb7\x90"}',
        [E("1:21: JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\xf4\x90\x80\x80"}',
        [E("1:21: JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\\uFDD0"}',
        [E("1:21: JSON parse error, \\uFDD0 is not a valid Unicode character")],
    ),
    (
        b'{"execute":"x","id":"\\uFFFF"}',
        [E("1:21: JSON parse error, \\uFFFF is not a valid Unicode character")],
    ),
    (b'{"execute":"x","id":"\\u00E9\\u00e9"}', [{"execute": "x", "id": "éé"}]),
    (
        b'{"execute":"x","id":"a\\\xc3\xa9"}',
        [E("1:21: JSON parse error, invalid escape sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\\u"}',
        [E('1:21: JSON parse error, \\u" is not a valid Unicode character')],
    ),
    (b'{"a":"\\u12"}', [E('1:6: JSON parse error, \\u12" is not a valid Unicode character')]),
    (b'{"execute":"x", "id": "\\ud800\\udc00"}', [{"execute": "x", "id": "𐀀"}]),
    (b'{"a"  :  1  ,  "a"  : [1,]}', [E("1:26: JSON parse error, expecting value")]),
    (b'{"a":[1,],"a":1}', [E("1:9: JSON parse error, expecting value")]),
    (b'{"a":1,"a":[1,]}', [E("1:15: JSON parse error, expecting value")]),
    (
        b'{"a":\xff1}',
        [E("1:6: JSON parse error, stray '�'"), E("1:9: JSON parse error, expecting value")],
    ),
    (
        b'{"a" : \x01 "b"}',
        [E("1:8: JSON parse error, stray '\x01'"), E("1:14: JSON parse error, expecting value")],
    ),
    (b"[1,2]\x01", [[1, 2], E("1:6: JSON parse error, stray '\x01'")]),
    (b'  \t\r\n  {"execute":"x"}', [{"execute": "x"}]),
    (b'\x00{"execute":"x"}', [E("1:1: JSON parse error, stray ''"), {"execute": "x"}]),
    (
        b'{"execute":"x"\x00}',
        [E("1:15: JSON parse error, stray ''"), E("1:17: JSON parse error, expecting value")],
    ),
    (
        b'{"execute":"x"} {"execute":"y"}{"execute":"z"}',
        [{"execute": "x"}, {"execute": "y"}, {"execute": "z"}],
    ),
    (b'"\xc3"', [E("1:1: JSON parse error, invalid UTF-8 sequence in string")]),
    (b"[[1]", []),
    (b"1 2 3 ", [1, 2, 3]),
    (b"-0 ", [0]),
    (b"-01", [E("1:1: JSON parse error, stray '-01'")]),
    (b"00", [E("1:1: JSON parse error, stray '00'")]),
    (b"0.0e0 ", [0.0]),
    (b'{"a":1}{"b":2}', [{"a": 1}, {"b": 2}]),
    # 11.1's wording, and a trailing or leading comma in an object wants a key.
    (b"{,} 5 ", [E("1:2: JSON parse error, expecting key"), 5]),
    (b'{"a":1,} 5 ', [E("1:8: JSON parse error, expecting key"), 5]),
    # Mismatched brackets are reported at once; the message still ends where the
    # bracket counts say, and its other tokens are dropped.
    (b'{"id": [1}', [E("1:11: JSON parse error, expected ',' or ']'")]),
    (b'{"id": [1}]5 ', [E("1:11: JSON parse error, expected ',' or ']'"), 5]),
    (b"[{]} 5 ", [E("1:3: JSON parse error, expecting key"), 5]),
    (b"{]5 ", [E("1:2: JSON parse error, expecting key"), 5]),
    (
        b"[1,]]5 ",
        [
            E("1:4: JSON parse error, expecting value"),
            E("1:5: JSON parse error, expecting value"),
            5,
        ],
    ),
    (
        b"[[1 2]}}]]5 ",
        [
            E("1:5: JSON parse error, expected ',' or ']'"),
            E("1:8: JSON parse error, expecting value"),
            E("1:9: JSON parse error, expecting value"),
            E("1:10: JSON parse error, expecting value"),
            5,
        ],
    ),
    # After the first error the rest of the message goes unreported, lexer errors
    # included, though a lexer error still ends the message.
    (b'{"a" 1, [1, 2], {"b": 3}} 5 ', [E("1:6: JSON parse error, expecting ':'"), 5]),
    (b'{"a" 1 "\\x" tru } 5 ', [E("1:6: JSON parse error, expecting ':'"), 5]),
    (
        b'{"a" 1 @ } 5 ',
        [
            E("1:6: JSON parse error, expecting ':'"),
            E("1:11: JSON parse error, expecting value"),
            5,
        ],
    ),
    (b"[1 2 \xff 5 ", [E("1:4: JSON parse error, expected ',' or ']'")]),
    # A token starting on the byte that ended a number, a keyword or recovery is
    # reported one column to the right.
    (b"[1}", [E("1:4: JSON parse error, expected ',' or ']'")]),
    (b"[1 }", [E("1:4: JSON parse error, expected ',' or ']'")]),
    (b"[true}", [E("1:7: JSON parse error, expected ',' or ']'")]),
    (b'[1"a" 2]', [E("1:4: JSON parse error, expected ',' or ']'")]),
    (b'["a"}', [E("1:5: JSON parse error, expected ',' or ']'")]),
    (b"[1@ 5 ", [E("1:4: JSON parse error, stray '@'")]),
    (b"[1-x 5 ", [E("1:4: JSON parse error, stray '-x'")]),
    (b"@}", [E("1:1: JSON parse error, stray '@'"), E("1:3: JSON parse error, expecting value")]),
    (
        b"@ x }",
        [E("1:1: JSON parse error, stray '@'"), E("1:6: JSON parse error, expecting value")],
    ),
    (b"@\x01", [E("1:1: JSON parse error, stray '@'"), E("1:3: JSON parse error, stray '\x01'")]),
    # Lines and columns: only \n starts a line; \r, TAB, 0xFF and every byte of a
    # UTF-8 sequence are a column each.
    (b"[1\n\n  2]", [E("3:3: JSON parse error, expected ',' or ']'")]),
    (b"[1\r2]", [E("1:4: JSON parse error, expected ',' or ']'")]),
    (b"\t\t[1 2]", [E("1:6: JSON parse error, expected ',' or ']'")]),
    (
        '["\u00e9\u00e9\u00e9\U0001f600" 1]'.encode(),
        [E("1:15: JSON parse error, expected ',' or ']'")],
    ),
    (
        b"\xff [1 2]",
        [
            E("1:1: JSON parse error, stray '\ufffd'"),
            E("1:6: JSON parse error, expected ',' or ']'"),
        ],
    ),
    (
        b"[1]\n \xff\n [1 2]",
        [
            [1],
            E("2:2: JSON parse error, stray '\ufffd'"),
            E("3:5: JSON parse error, expected ',' or ']'"),
        ],
    ),
    # A duplicate key is reported at the last token of the second value.
    (b'{"a":1,"a":"x"}', [E("1:12: JSON parse error, duplicate key")]),
    (b'{"a":1,"a":[1,[]]  }', [E("1:17: JSON parse error, duplicate key")]),
    (b'{"a":1,"a":[1,2]}', [E("1:17: JSON parse error, duplicate key")]),
]


@pytest.mark.parametrize(("data", "expected"), LIVE_QEMU_11_1)
@pytest.mark.parametrize("fast_path", [True, False])
def test_live_qemu_cases(data: bytes, expected: list[object], fast_path: bool) -> None:
    want = [canon(item) for item in expected]
    assert items(data, fast_path=fast_path) == want
    assert bytewise(data, fast_path=fast_path) == want
    # Trailing data can complete a pending item but never changes earlier ones.
    trailing = items(data + b'\n{"execute": "t"}\x01[]', fast_path=fast_path)
    assert trailing[: len(want)] == want


def test_no_newline_needed_and_back_to_back() -> None:
    streamer = JsonStreamer()
    assert streamer.feed(b'{"execute":"a"}') == [{"execute": "a"}]
    assert streamer.feed(b'{"a":1}{"b":2}  [3]') == [{"a": 1}, {"b": 2}, [3]]


def test_top_level_scalars_wait_for_their_end() -> None:
    streamer = JsonStreamer()
    assert streamer.feed(b"42") == []
    assert streamer.feed(b"7 ") == [427]
    assert streamer.feed(b'"s"') == ["s"]
    assert streamer.feed(b"null") == []
    assert streamer.feed(b"\n") == [None]


def test_eof_drops_incomplete_message() -> None:
    # QEMU 7.2 and 11.1.2: "42", '"ab', '{"execute":"x"' and "tru" followed by a
    # half-close got no reply at all.
    for data in (b"42", b'"ab', b'{"execute":"x"', b"tru"):
        streamer = JsonStreamer()
        assert streamer.feed(data) == []
        assert streamer.feed_eof() == []
        assert streamer.feed(b"[1]") == [[1]]


def test_numbers_follow_qemu_rule() -> None:
    got = JsonStreamer().feed(
        b"[9223372036854775807, -9223372036854775808, 9223372036854775808,"
        b" 18446744073709551616, -9223372036854775809, -0, -0.0, 1.0, 1E2, 1e-400,"
        b" " + b"9" * 5000 + b"]"
    )
    assert canon(got[0]) == canon(
        [
            9223372036854775807,
            -9223372036854775808,
            9223372036854775808,
            18446744073709551616.0,
            -9223372036854775809.0,
            0,
            -0.0,
            1.0,
            100.0,
            0.0,
            INF,
        ]
    )


ERROR_TEXTS = [
    (b"]", "1:1: JSON parse error, expecting value"),
    (b"@", "1:1: JSON parse error, stray '@'"),
    (b'{"a":1,"a":1}', "1:12: JSON parse error, duplicate key"),
    (b"[nul]", "1:2: JSON parse error, invalid keyword 'nul'"),
    (b"{1:1}", "1:2: JSON parse error, expecting key"),
    (b'{"a" 1}', "1:6: JSON parse error, expecting ':'"),
    (b'{"a":1 "b":1}', "1:8: JSON parse error, expected ',' or '}'"),
    (b"[1 1]", "1:4: JSON parse error, expected ',' or ']'"),
    (b'["\\x"]', "1:2: JSON parse error, invalid escape sequence in string"),
    (b'["\xc3("]', "1:2: JSON parse error, invalid UTF-8 sequence in string"),
    (b'["\\uDFFF"]', "1:2: JSON parse error, \\uDFFF is not a valid Unicode character"),
]


@pytest.mark.parametrize(("data", "desc"), ERROR_TEXTS)
@pytest.mark.parametrize("fast_path", [True, False])
def test_error_texts(data: bytes, desc: str, fast_path: bool) -> None:
    assert JsonStreamer(fast_path=fast_path).feed(data)[0] == JsonParseError(desc)


def test_first_error_wins_in_token_order() -> None:
    # Tokens are parsed as they come, so the first bad token decides.
    assert items(b'{"a":1,"a":[1,]}') == [canon(E("1:15: JSON parse error, expecting value"))]
    assert items(b'{"a":1,"a":2,"b":[1,]}') == [canon(E("1:12: JSON parse error, duplicate key"))]
    assert items(b'{"\\ud800":[1,]}') == [
        canon(E("1:2: JSON parse error, \\ud800 is not a valid Unicode character"))
    ]


def test_stray_text_is_rendered_like_qemus_writer() -> None:
    # NUL ends the C string; invalid UTF-8 shows as U+FFFD; \xC0\x80 is U+0000.
    assert items(b"\x00") == [canon(E("1:1: JSON parse error, stray ''"))]
    assert items(b'"\xc0\x80\x01') == [canon(E("1:1: JSON parse error, stray '\"\x00\x01'"))]
    assert items(b'"\xe9\xc3\xa9\xf0\x9f\x98\x80\x02') == [
        canon(E("1:1: JSON parse error, stray '\"\ufffd\xe9\U0001f600\x02'"))
    ]
    # The bytes a bad \u escape quotes are shown the same way (live on QEMU 11.1.2).
    assert items(b'["\\u00e\xc0\x809"]') == [
        canon(E("1:2: JSON parse error, \\u00e\ufffd is not a valid Unicode character"))
    ]


# -- locations ---------------------------------------------------------------------------
def test_locations_count_over_the_whole_connection() -> None:
    # QEMU 11.1.2 after qmp_capabilities (31 bytes) on the same connection.
    streamer = JsonStreamer()
    assert streamer.feed(b'{"execute": "qmp_capabilities"}') == [{"execute": "qmp_capabilities"}]
    assert streamer.feed(b'{"id": 01}') == [
        E("1:39: JSON parse error, stray '01'"),
        E("1:42: JSON parse error, expecting value"),
    ]
    assert streamer.feed(b'\n\n{"execute": "x", "id": 1}\n   {"a" 1}') == [
        {"execute": "x", "id": 1},
        E("4:9: JSON parse error, expecting ':'"),
    ]
    # A new connection (after EOF) counts from 1:1 again.
    assert streamer.feed_eof() == []
    assert streamer.feed(b'{"a" 1}') == [E("1:6: JSON parse error, expecting ':'")]


@pytest.mark.parametrize("fast_path", [True, False])
def test_locations_survive_chunking(fast_path: bool) -> None:
    # Live on QEMU 11.1.2: an error token holding a newline, recovery ending on the
    # next line, tokens that start on a re-read byte (shifted one column right).
    data = b'{"a": 1}\n["x\xc3\xa9\n", 12345}\n  {"k": tru,\n "v": "\\q"}\n[1}'
    want = [
        {"a": 1},
        E("2:2: JSON parse error, stray '\"x\xe9\n'"),
        E("3:3: JSON parse error, expecting value"),
        12345,
        E("3:10: JSON parse error, expecting value"),
        E("4:9: JSON parse error, invalid keyword 'tru'"),
        E("6:4: JSON parse error, expected ',' or ']'"),
    ]
    want = [canon(item) for item in want]
    got = items(data, fast_path=fast_path)
    assert got == want
    assert bytewise(data, fast_path=fast_path) == want
    for cut in range(len(data) + 1):
        streamer = JsonStreamer(fast_path=fast_path)
        halves = streamer.feed(data[:cut]) + streamer.feed(data[cut:])
        assert [canon(item) for item in halves] == want, cut


# -- limits ----------------------------------------------------------------------------
@pytest.mark.parametrize("fast_path", [True, False])
def test_real_depth_limit(fast_path: bool) -> None:
    # QEMU 11.1.2: depth 1024 parses, 1025 fails once, without a location; the rest of
    # the message is dropped until the bracket counts end it.
    (deepest,) = JsonStreamer(fast_path=fast_path).feed(b"[" * 1024 + b"]" * 1024)
    assert _depth(deepest) == 1024
    nesting = canon(E("JSON nesting depth limit exceeded"))
    got = items(b"[" * 1025 + b"]" * 1025 + b" 5 ", fast_path=fast_path)
    assert got == [nesting, canon(5)]
    got = items(b"[" * 1024 + b"{}" + b"]" * 1024 + b"\xff 5 ", fast_path=fast_path)
    assert got == [nesting, canon(E("1:2051: JSON parse error, stray '\ufffd'"))]
    # A lexer error ends the failed message silently ("[1 2]" follows at column 1027).
    got = items(b"[" * 1025 + b"\xff[1 2]", fast_path=fast_path)
    assert got == [nesting, canon(E("1:1030: JSON parse error, expected ',' or ']'"))]
    # In a message that failed already the limit goes unreported.
    got = items(b"[1 2 " + b"[" * 1030 + b"]" * 1031 + b" 5 ", fast_path=fast_path)
    assert got == [canon(E("1:4: JSON parse error, expected ',' or ']'")), canon(5)]


def _depth(value: object) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


@pytest.mark.parametrize("fast_path", [True, False])
def test_small_depth_limit(fast_path: bool) -> None:
    assert items(b'{"a":[[1]]}', max_depth=3, fast_path=fast_path) == [canon({"a": [[1]]})]
    assert items(b'{"a":[[[1]]]} 7 ', max_depth=3, fast_path=fast_path) == [
        canon(E("JSON nesting depth limit exceeded")),
        canon(7),
    ]


@pytest.mark.parametrize("fast_path", [True, False])
def test_token_count_limit(fast_path: bool) -> None:
    # Live on QEMU 11.1.2 with the real limit: a 2097152-token array parsed; one of
    # 2097153 tokens, and one of 2097159, gave "JSON token count limit exceeded" (no
    # location), and a scalar 5 after them was still answered.
    five = b"[1,2]"
    assert items(five, max_tokens=5, fast_path=fast_path) == [canon([1, 2])]
    error = canon(E("JSON token count limit exceeded"))
    assert items(b"[1,2,3]\n", max_tokens=6, fast_path=fast_path) == [error]
    # The 7th token (",") fails; "4" and "]" belong to the failed message.
    assert items(b"[1,2,3,4]\n5 ", max_tokens=6, fast_path=fast_path) == [error, canon(5)]


@pytest.mark.parametrize("fast_path", [True, False])
def test_token_size_limit(fast_path: bool) -> None:
    # The message's token bytes (whitespace excluded) must stay below the limit:
    # QEMU refuses a token when the bytes so far plus it plus one exceed it.
    assert items(b'[ "abc" ,  1 ]', max_token_bytes=10, fast_path=fast_path) == [canon(["abc", 1])]
    assert items(b'["abcd",1] 5 ', max_token_bytes=10, fast_path=fast_path) == [
        canon(E("JSON token size limit exceeded")),
        canon(5),
    ]
    # A single token longer than the limit is cut by the lexer, which lexes the rest
    # afresh; the message fails and ends where the bracket counts say.  Scaled down
    # from QEMU 11.1.2 with the real limit ('["' + 64 MiB and 5 "a" + ...): the rest
    # of the string is a keyword, its closing quote opens a string.
    tail = b' {"id":7} " {"id":9} ] {"id":11} '
    got = items(b'["' + b"a" * 15 + b'"]' + tail, max_token_bytes=10, fast_path=fast_path)
    assert got == [canon(E("JSON token size limit exceeded")), canon({"id": 11})]
    got = items(b'["' + b"a" * 15 + b"]" + tail, max_token_bytes=10, fast_path=fast_path)
    assert got == [
        canon(E("JSON token size limit exceeded")),
        canon({"id": 7}),
        canon(" {"),
        canon(E("1:33: JSON parse error, invalid keyword 'id'")),
        canon(":9} ] {"),
        canon(E("1:44: JSON parse error, invalid keyword 'id'")),
    ]
    # At top level the message ends with the cut token, and the rest is a new one,
    # located where the cut token began (scaled down from QEMU 11.1.2 again).
    got = items(b'"' + b"a" * 15 + b'" {"id":7} ', max_token_bytes=10, fast_path=fast_path)
    assert got == [
        canon(E("JSON token size limit exceeded")),
        canon(E("1:1: JSON parse error, invalid keyword 'aaaaa'")),
        canon(" {"),
        canon(E("1:21: JSON parse error, invalid keyword 'id'")),
    ]
    # However the bytes are split.
    data = b'[1]\n "' + b"a" * 15 + b'" {"id":7} '
    got = items(data, max_token_bytes=10, fast_path=fast_path)
    assert got[2] == canon(E("2:2: JSON parse error, invalid keyword 'aaaaa'"))
    for cut in range(len(data) + 1):
        streamer = JsonStreamer(max_token_bytes=10, fast_path=fast_path)
        halves = streamer.feed(data[:cut]) + streamer.feed(data[cut:])
        assert [canon(item) for item in halves] == got, cut


def test_memory_stays_bounded_on_garbage() -> None:
    streamer = JsonStreamer(max_token_bytes=4096)
    tracemalloc.start()
    try:
        streamer.feed(b"@")  # into recovery
        for _ in range(64):
            streamer.feed(b"x" * 65536)  # skipped
        streamer.feed(b"[")
        for _ in range(64):
            streamer.feed(b" \n" * 32768)  # whitespace is never kept
        streamer.feed(b"[1 2")  # a failed message: its tokens are dropped
        for _ in range(16):
            streamer.feed(b"[1, {}, " * 2048)
        streamer.feed(b'\x01"')
        for _ in range(64):
            streamer.feed(b"s" * 65536)  # cut at the token limit, lexed afresh
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20


# -- properties --------------------------------------------------------------------------
SNIPPETS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b" ",
    b"\n",
    b"\t",
    b"\x01",
    b"\x00",
    b"\xff",
    b"\xfe",
    b'"a"',
    b"'b'",
    b'"',
    b"'",
    b"\\",
    b'\\"',
    b"\\'",
    b'"\\u00e9"',
    b'"\\ud800"',
    b'"\\ud83d\\ude00"',
    b'"\\uFFFF"',
    b'"\\u0000"',
    b'"\xc3\xa9"',
    b'"\xc0\x80"',
    b'"\xed\xa0\x80"',
    b"0",
    b"1",
    b"-",
    b"-0",
    b"01",
    b"1.5",
    b".",
    b"e",
    b"1e5",
    b"1E+2",
    b"true",
    b"tru",
    b"null",
    b"false",
    b"NaN",
    b"Infinity",
    b"12345678901234567890",
    b"-9223372036854775809",
    b'{"execute":"x"}',
    b'{"a":1,"a":2}',
    b'{"a":[1,]}',
    b'{"id":01}',
    b"%d",
    b"\x7f",
]
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
JSON_TEXTS = st.builds(
    lambda value, ascii_only: __import__("json").dumps(value, ensure_ascii=ascii_only).encode(),
    JSON_VALUES,
    st.booleans(),
)
STREAMS = st.lists(st.sampled_from(SNIPPETS) | st.binary(max_size=4) | JSON_TEXTS, max_size=25).map(
    b"".join
)
LIMITS = st.sampled_from(
    [
        {},
        {"max_depth": 2},
        {"max_tokens": 7},
        {"max_token_bytes": 12},
        {"max_depth": 1, "max_tokens": 3},
    ]
)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(STREAMS, LIMITS)
def test_fast_path_agrees_with_exact_path(data: bytes, limits: dict[str, int]) -> None:
    assert items(data, **limits) == items(data, fast_path=False, **limits)


@PROPERTY
@given(
    STREAMS,
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    st.booleans(),
    LIMITS,
)
def test_any_split_yields_the_same_items(
    data: bytes, cuts: list[int], fast_path: bool, limits: dict[str, int]
) -> None:
    # Error locations included: they count bytes, however the bytes came.
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    streamer = JsonStreamer(fast_path=fast_path, **limits)  # type: ignore[arg-type]
    out: list[object] = []
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        out += streamer.feed(data[start:end])
    assert [canon(item) for item in out] == items(data, fast_path=fast_path, **limits)


@PROPERTY
@given(st.binary(max_size=200))
def test_random_bytes_never_raise(data: bytes) -> None:
    for item in JsonStreamer().feed(data):
        canon(item)  # raises on anything but a JSON value or a JsonParseError


def _qemu_number_rule(value: object) -> object:
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else float(value)
    if isinstance(value, list):
        return [_qemu_number_rule(item) for item in value]
    assert isinstance(value, dict)
    return {key: _qemu_number_rule(item) for key, item in value.items()}


# Noncharacters are unassigned (category Cn) in Unicode's database, like the rest.
VALID_STRINGS = st.text(st.characters(blacklist_categories=["Cs", "Cn"]), max_size=8)


@PROPERTY
@given(
    st.dictionaries(
        VALID_STRINGS,
        st.recursive(
            JSON_LEAVES.filter(lambda leaf: not isinstance(leaf, str)) | VALID_STRINGS,
            lambda inner: (
                st.lists(inner, max_size=3) | st.dictionaries(VALID_STRINGS, inner, max_size=3)
            ),
            max_leaves=10,
        ),
        max_size=4,
    ),
    st.booleans(),
)
def test_valid_json_parses_to_its_value(value: dict[str, object], ascii_only: bool) -> None:
    text = __import__("json").dumps(value, ensure_ascii=ascii_only).encode()
    want = [canon(_qemu_number_rule(value))]
    assert items(text) == want
    assert items(text, fast_path=False) == want


# -- against the real thing ------------------------------------------------------------
# A control byte ends whatever the input left pending (in a string, a number, recovery
# or a failed message); the object after it is answered with a known id.
_SENTINEL = b'\x01{"execute": "x", "id": "sentinel"}'


@pytest.fixture(scope="module")
def qemu_monitor() -> Iterator[str]:
    kind = qsd_new_kind()
    if kind is None:
        pytest.skip(why_missing("qsd-new"))
    with running(kind) as daemon:
        yield daemon.sockets[0]


def _outline(items: list[object]) -> list[str]:
    """What a QMP client tells apart: each parse error's text, scalar or object."""
    return [
        item.desc
        if isinstance(item, JsonParseError)
        else "object"
        if isinstance(item, dict)
        else "scalar"
        for item in items
    ]


def _qemu_outline(path: str, data: bytes) -> list[str]:
    with RawClient(path) as client:
        client.greeting()
        client.send(data + _SENTINEL)
        got: list[str] = []
        while True:
            line = client.readline()
            try:
                reply = json.loads(line)
            except ValueError:  # an echoed id QEMU wrote as "inf"
                got.append("object")
                continue
            if reply.get("id") == "sentinel":
                return got
            desc = reply.get("error", {}).get("desc", "") if "id" not in reply else ""
            if desc == "QMP input must be a JSON object":
                got.append("scalar")
            elif "JSON" in desc:
                got.append(desc)
            else:
                got.append("object")


@pytest.mark.qemu
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STREAMS)
def test_agrees_with_live_qemu(qemu_monitor: str, data: bytes) -> None:
    # Each example is a fresh connection, so locations count from 1:1 on both sides.
    ours = _outline(JsonStreamer().feed(data + _SENTINEL))
    assert ours[-1] == "object"
    assert ours[:-1] == _qemu_outline(qemu_monitor, data)
