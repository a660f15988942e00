"""Tests for qmpd.protocol.jsonstream: QEMU's JSON streamer, byte for byte."""

from __future__ import annotations

import math
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmpd.protocol.jsonstream import JsonParseError, JsonStreamer

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


# Each input was sent to a fresh QSD 7.2 (qemu-storage-daemon 7.2.22) monitor and the
# replies read back.  An error reply without id is a JsonParseError here; a reply of
# "QMP input must be a JSON object" is the top-level scalar we yield (the session layer
# words that error); any other reply means QEMU parsed an object, whose echoed "id"
# matched the value below.  Inputs ending mid-token got no reply (QEMU waits).
LIVE_QEMU_7_2 = [
    (b"42\n", [42]),
    (b"42", []),
    (b'"str"', ["str"]),
    (b"true ", [True]),
    (b"tru\n", [E("JSON parse error, invalid keyword 'tru'")]),
    (b"nul\n", [E("JSON parse error, invalid keyword 'nul'")]),
    (b"[1,]", [E("JSON parse error, expecting value")]),
    (b'{"a":1,}', [E("JSON parse error, expecting value")]),
    (b'{"a":1,"a":2}', [E("JSON parse error, duplicate key")]),
    (b"{'execute':'query-version','id':'x\\'y'}", [{"execute": "query-version", "id": "x'y"}]),
    (b'{"execute":"x\\u00e9"}', [{"execute": "x\xe9"}]),
    (b'{"execute":"\\ud800"}', [E("JSON parse error, \\ud800 is not a valid Unicode character")]),
    (
        b'{"execute":"\\uD800\\u0041"}',
        [E("JSON parse error, \\uD800 is not a valid Unicode character")],
    ),
    (b'{"execute":"\\udc00"}', [E("JSON parse error, \\udc00 is not a valid Unicode character")]),
    (b'{"execute":"\\ufffe"}', [E("JSON parse error, \\ufffe is not a valid Unicode character")]),
    (b'{"execute":"\\u12"}', [E('JSON parse error, \\u12" is not a valid Unicode character')]),
    (b'{"execute":"\\u12zz"}', [E("JSON parse error, \\u12zz is not a valid Unicode character")]),
    (
        b'{"execute":"\\uD83F\\uDFFE"}',
        [E("JSON parse error, \\uD83F\\uDFFE is not a valid Unicode character")],
    ),
    (b'{"execute":"\\q"}', [E("JSON parse error, invalid escape sequence in string")]),
    (b'{"execute":"a\xc0\x80b"}', [{"execute": "a\x00b"}]),
    (b'{"execute":"a\xef\xbf\xbeb"}', [E("JSON parse error, invalid UTF-8 sequence in string")]),
    (b'{"execute":"a\xc3b"}', [E("JSON parse error, invalid UTF-8 sequence in string")]),
    (b'{"execute":"\\ud83d\\ude00"}', [{"execute": "\U0001f600"}]),
    (
        b'{"execute":"a\tb"}',
        [E("JSON parse error, stray '\"a\t'"), E("JSON parse error, expecting value")],
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
    (b"{1:2}", [E("JSON parse error, key is not a string in object")]),
    (b'{"a" 1}', [E("JSON parse error, missing : in object pair")]),
    (b'{"a":1 "b":2}', [E("JSON parse error, expected separator in dict")]),
    (b"[1 2]", [E("JSON parse error, expected separator in list")]),
    (b'{"a":1]', [E("JSON parse error, expected separator in dict")]),
    (b"[1}", [E("JSON parse error, expected separator in list")]),
    (b"{]", [E("JSON parse error, expecting value")]),
    (b"[}", [E("JSON parse error, expecting value")]),
    (b"}", [E("JSON parse error, expecting value")]),
    (b"]", [E("JSON parse error, expecting value")]),
    (b":", [E("JSON parse error, expecting value")]),
    (b",", [E("JSON parse error, expecting value")]),
    (b"{[1]:2}", [E("JSON parse error, key is not a string in object")]),
    (b'{"a":[}]', [E("JSON parse error, expecting value")]),
    (b"%d\n", [E("JSON parse error, stray '%'")]),
    (b"NaN\n", [E("JSON parse error, stray 'N'")]),
    (b"Infinity\n", [E("JSON parse error, stray 'I'")]),
    (b"-x", [E("JSON parse error, stray '-x'")]),
    (b"-\n", [E("JSON parse error, stray '-\n'")]),
    (b"1.\n", [E("JSON parse error, stray '1.\n'")]),
    (b"1.e5\n", [E("JSON parse error, stray '1.e'")]),
    (b"1e\n", [E("JSON parse error, stray '1e\n'")]),
    (b"1e+\n", [E("JSON parse error, stray '1e+\n'")]),
    (b"1.5x", [1.5]),
    (b"0x10\n", [0, E("JSON parse error, invalid keyword 'x'"), 10]),
    (b'{"id":01}', [E("JSON parse error, stray '01'"), E("JSON parse error, expecting value")]),
    (
        b"[1,2\x01,3]",
        [
            E("JSON parse error, stray '\x01'"),
            E("JSON parse error, expecting value"),
            3,
            E("JSON parse error, expecting value"),
        ],
    ),
    (
        b'[1,"a\x01b",3]',
        [
            E("JSON parse error, stray '\"a\x01'"),
            E("JSON parse error, expecting value"),
            3,
            E("JSON parse error, expecting value"),
        ],
    ),
    (b'["a\x7fb"]\n', [["a\x7fb"]]),
    (b'{"execute":"x\x7f"}', [{"execute": "x\x7f"}]),
    (
        b'{"id":"\xff"}',
        [E("JSON parse error, stray '\"�'"), E("JSON parse error, expecting value")],
    ),
    (b"\xfe", [E("JSON parse error, stray '�'")]),
    (b'{"a":tru}', [E("JSON parse error, invalid keyword 'tru'")]),
    (b'{"a":truex}', [E("JSON parse error, invalid keyword 'truex'")]),
    (b'{"a":True}', [E("JSON parse error, stray 'T'"), E("JSON parse error, expecting value")]),
    (b'{"a":nulL}', [E("JSON parse error, stray 'L'"), E("JSON parse error, expecting value")]),
    (b"[[[]]]]", [[[[]]], E("JSON parse error, expecting value")]),
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
    (
        b'{"execute":"x","id":"\xc3\xa9\xf0\x9f\x98\x80"}',
        [{"execute": "x", "id": "\xe9\U0001f600"}],
    ),
    (
        b'{"execute":"x","id":"\xed\xa0\x80"}',
        [E("JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\xe0\x80\x80"}',
        [E("JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (b'{"execute":"x","id":"\xc1\x81"}', [E("JSON parse error, invalid UTF-8 sequence in string")]),
    (
        b'{"execute":"x","id":"\xf8\x88\x80\x80\x80"}',
        [E("JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\xef\xb7\x90"}',
        [E("JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\xf4\x90\x80\x80"}',
        [E("JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        b'{"execute":"x","id":"\\uFDD0"}',
        [E("JSON parse error, \\uFDD0 is not a valid Unicode character")],
    ),
    (
        b'{"execute":"x","id":"\\uFFFF"}',
        [E("JSON parse error, \\uFFFF is not a valid Unicode character")],
    ),
    (b'{"execute":"x","id":"\\u00E9\\u00e9"}', [{"execute": "x", "id": "\xe9\xe9"}]),
    (
        b'{"execute":"x","id":"a\\\xc3\xa9"}',
        [E("JSON parse error, invalid escape sequence in string")],
    ),
    (b'{"execute":"x","id":"\\u"}', [E('JSON parse error, \\u" is not a valid Unicode character')]),
    (b'{"a":"\\u12"}', [E('JSON parse error, \\u12" is not a valid Unicode character')]),
    (b'{"execute":"x", "id": "\\ud800\\udc00"}', [{"execute": "x", "id": "\U00010000"}]),
    (b'{"a"  :  1  ,  "a"  : [1,]}', [E("JSON parse error, expecting value")]),
    (b'{"a":[1,],"a":1}', [E("JSON parse error, expecting value")]),
    (b'{"a":1,"a":[1,]}', [E("JSON parse error, expecting value")]),
    (b'{"a":\xff1}', [E("JSON parse error, stray '�'"), E("JSON parse error, expecting value")]),
    (
        b'{"a" : \x01 "b"}',
        [E("JSON parse error, stray '\x01'"), E("JSON parse error, expecting value")],
    ),
    (b"[1,2]\x01", [[1, 2], E("JSON parse error, stray '\x01'")]),
    (b'  \t\r\n  {"execute":"x"}', [{"execute": "x"}]),
    (b'\x00{"execute":"x"}', [E("JSON parse error, stray ''"), {"execute": "x"}]),
    (
        b'{"execute":"x"\x00}',
        [E("JSON parse error, stray ''"), E("JSON parse error, expecting value")],
    ),
    (
        b'{"execute":"x"} {"execute":"y"}{"execute":"z"}',
        [{"execute": "x"}, {"execute": "y"}, {"execute": "z"}],
    ),
    (b'"\xc3"', [E("JSON parse error, invalid UTF-8 sequence in string")]),
    (b"[[1]", []),
    (b"1 2 3 ", [1, 2, 3]),
    (b"-0 ", [0]),
    (b"-01", [E("JSON parse error, stray '-01'")]),
    (b"00", [E("JSON parse error, stray '00'")]),
    (b"0.0e0 ", [0.0]),
    (b'{"a":1}{"b":2}', [{"a": 1}, {"b": 2}]),
]


@pytest.mark.parametrize(("data", "expected"), LIVE_QEMU_7_2)
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
    # QEMU 7.2: "42", '"ab', '{"execute":"x"' and "tru" followed by a half-close got
    # no reply at all.
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
    (b"]", "JSON parse error, expecting value"),
    (b"@", "JSON parse error, stray '@'"),
    (b'{"a":1,"a":1}', "JSON parse error, duplicate key"),
    (b"[nul]", "JSON parse error, invalid keyword 'nul'"),
    (b"{1:1}", "JSON parse error, key is not a string in object"),
    (b'{"a" 1}', "JSON parse error, missing : in object pair"),
    (b'{"a":1 "b":1}', "JSON parse error, expected separator in dict"),
    (b"[1 1]", "JSON parse error, expected separator in list"),
    (b'["\\x"]', "JSON parse error, invalid escape sequence in string"),
    (b'["\xc3("]', "JSON parse error, invalid UTF-8 sequence in string"),
    (b'["\\uDFFF"]', "JSON parse error, \\uDFFF is not a valid Unicode character"),
]


@pytest.mark.parametrize(("data", "desc"), ERROR_TEXTS)
@pytest.mark.parametrize("fast_path", [True, False])
def test_error_texts(data: bytes, desc: str, fast_path: bool) -> None:
    assert JsonStreamer(fast_path=fast_path).feed(data)[0] == JsonParseError(desc)


def test_first_error_wins_in_token_order() -> None:
    # The duplicate is found after its value parsed; an error inside the value wins.
    assert items(b'{"a":1,"a":[1,]}') == [canon(E("JSON parse error, expecting value"))]
    assert items(b'{"a":1,"a":2,"b":[1,]}') == [canon(E("JSON parse error, duplicate key"))]
    assert items(b'{"\\ud800":[1,]}') == [
        canon(E("JSON parse error, \\ud800 is not a valid Unicode character"))
    ]


def test_stray_text_is_rendered_like_qemus_writer() -> None:
    # NUL ends the C string; invalid UTF-8 shows as U+FFFD; \xC0\x80 is U+0000.
    assert items(b"\x00") == [canon(E("JSON parse error, stray ''"))]
    assert items(b'"\xc0\x80\x01') == [canon(E("JSON parse error, stray '\"\x00\x01'"))]
    assert items(b'"\xe9\xc3\xa9\xf0\x9f\x98\x80\x02') == [
        canon(E("JSON parse error, stray '\"\ufffd\xe9\U0001f600\x02'"))
    ]


# -- limits ----------------------------------------------------------------------------
@pytest.mark.parametrize("fast_path", [True, False])
def test_real_depth_limit(fast_path: bool) -> None:
    # QEMU 7.2: depth 1024 parses, 1025 fails, and every "]" left over is then its own
    # message ("expecting value"), 1025 of them.
    (deepest,) = JsonStreamer(fast_path=fast_path).feed(b"[" * 1024 + b"]" * 1024)
    assert _depth(deepest) == 1024
    got = items(b"[" * 1025 + b"]" * 1025, fast_path=fast_path)
    assert got[0] == canon(E("JSON nesting depth limit exceeded"))
    assert got[1:] == [canon(E("JSON parse error, expecting value"))] * 1025
    # QEMU 7.2 again: after the overflow, "1" is a scalar and the command still runs.
    got = items(b"[" * 1025 + b"1]]]" + b'{"execute":"x"}', fast_path=fast_path)
    assert got == [
        canon(E("JSON nesting depth limit exceeded")),
        canon(1),
        *[canon(E("JSON parse error, expecting value"))] * 3,
        canon({"execute": "x"}),
    ]


def _depth(value: object) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    return depth


@pytest.mark.parametrize("fast_path", [True, False])
def test_small_depth_limit(fast_path: bool) -> None:
    assert items(b'{"a":[[1]]}', max_depth=3, fast_path=fast_path) == [canon({"a": [[1]]})]
    assert items(b'{"a":[[[1]]]}', max_depth=3, fast_path=fast_path) == [
        canon(E("JSON nesting depth limit exceeded")),
        canon(1),
        *[canon(E("JSON parse error, expecting value"))] * 4,
    ]


@pytest.mark.parametrize("fast_path", [True, False])
def test_token_count_limit(fast_path: bool) -> None:
    # Live on QEMU 7.2 with the real limit: "[0,0,...,0]" of 2097151 tokens parsed,
    # of 2097153 tokens gave "JSON token count limit exceeded" at the final "]".
    five = b"[1,2]"
    assert items(five, max_tokens=5, fast_path=fast_path) == [canon([1, 2])]
    error = canon(E("JSON token count limit exceeded"))
    assert items(b"[1,2,3]\n", max_tokens=6, fast_path=fast_path) == [error]
    # The 7th token (",") fails; "4" and "]" are then messages of their own.
    assert items(b"[1,2,3,4]\n", max_tokens=6, fast_path=fast_path) == [
        error,
        canon(4),
        canon(E("JSON parse error, expecting value")),
    ]


@pytest.mark.parametrize("fast_path", [True, False])
def test_token_size_limit(fast_path: bool) -> None:
    # The message's token bytes (whitespace excluded) must stay below the limit:
    # QEMU refuses a token when the bytes so far plus it plus one exceed it.
    assert items(b'[ "abc" ,  1 ]', max_token_bytes=10, fast_path=fast_path) == [canon(["abc", 1])]
    assert items(b'["abcd",1]', max_token_bytes=10, fast_path=fast_path)[0] == canon(
        E("JSON token size limit exceeded")
    )
    # A single string longer than the limit is cut by the lexer, which then lexes the
    # rest of the string afresh: here "xyz" is an invalid keyword and the closing quote
    # opens a new string.
    got = items(b'"abcdefghijxyz" 1', max_token_bytes=10, fast_path=fast_path)
    assert got == [
        canon(E("JSON token size limit exceeded")),
        canon(E("JSON parse error, invalid keyword 'xyz'")),
    ]


def test_memory_stays_bounded_on_garbage() -> None:
    streamer = JsonStreamer(max_token_bytes=4096)
    tracemalloc.start()
    try:
        streamer.feed(b"@")  # into recovery
        for _ in range(64):
            streamer.feed(b"x" * 65536)  # skipped
        streamer.feed(b"[")
        for _ in range(64):
            streamer.feed(b" " * 65536)  # whitespace is never kept
        streamer.feed(b'"')
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
@given(STREAMS, st.lists(st.integers(min_value=0, max_value=400), max_size=6), st.booleans())
def test_any_split_yields_the_same_items(data: bytes, cuts: list[int], fast_path: bool) -> None:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    streamer = JsonStreamer(fast_path=fast_path)
    out: list[object] = []
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        out += streamer.feed(data[start:end])
    assert [canon(item) for item in out] == items(data, fast_path=fast_path)


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
