"""The differential case table: bytes to send and how many replies QEMU sends.

Each entry is played on qmpd and on a real qemu-storage-daemon (see
harness.run_case); the transcripts must match after normalisation.  The
reply counts were taken from QEMU itself (11.1 and 7.2).  ``qemu72``
records why QEMU 7.2 answers a case differently; 11.1 is the reference.

Sections follow qmp-facts.md: negotiation (1.3), request shape (1.4), id
echo (1.5), the JSON parser (1.9), framing (1.1).
"""

from __future__ import annotations

from tests.differential.harness import Case

__all__ = ["CASES", "JSON_LOCATION"]

# QEMU 11.1's JSON parser prefixes every error with the line:column of the
# offending token ("1:12: JSON parse error, ...") and reworded several
# details; 7.2 has neither.
JSON_LOCATION = "7.2 reports JSON errors without the 'line:column: ' prefix and in older wording"


def _qv(id_json: bytes) -> bytes:
    """query-version carrying ``id_json`` verbatim as its id."""
    return b'{"execute": "query-version", "id": ' + id_json + b"}"


def _nested(depth: int) -> bytes:
    """A request whose id nests arrays so that the message reaches ``depth``."""
    inner = depth - 1  # the request object itself is one level
    return b'{"execute": "query-version", "id": ' + b"[" * inner + b"]" * inner + b"}"


_GREETING = [
    Case("greeting", b"", 0, negotiate=False),
]

_NEGOTIATION = [
    Case("neg-command-first", b'{"execute": "query-version", "id": 1}', 1, negotiate=False),
    Case("neg-unknown-first", b'{"execute": "no-such-cmd", "id": "u"}', 1, negotiate=False),
    Case("neg-no-id", b'{"execute": "query-commands"}', 1, negotiate=False),
    Case("neg-quit-first", b'{"execute": "quit", "id": "q"}', 1, negotiate=False),
    Case("neg-ok", b'{"execute": "qmp_capabilities", "id": "n"}', 1, negotiate=False),
    Case(
        "neg-twice",
        b'{"execute": "qmp_capabilities"}{"execute": "qmp_capabilities", "id": 2}',
        2,
        negotiate=False,
    ),
    Case("neg-after-negotiated", b'{"execute": "qmp_capabilities", "id": 3}', 1),
    # Arguments are validated before the handler sees negotiation is over.
    Case(
        "neg-after-negotiated-bad-enable",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["x"]}, "id": 3}',
        1,
    ),
    Case(
        "neg-after-negotiated-enable-oob",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 3}',
        1,
    ),
    Case(
        "neg-enable-oob",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 4}',
        1,
        negotiate=False,
    ),
    Case(
        "neg-enable-empty",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": []}, "id": 5}',
        1,
        negotiate=False,
    ),
    Case(
        "neg-enable-bogus",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}}',
        1,
        negotiate=False,
    ),
    Case(
        "neg-enable-oob-bogus",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob", "bogus"]}}',
        1,
        negotiate=False,
    ),
    Case(
        "neg-enable-oob-twice",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob", "oob"]}}',
        1,
        negotiate=False,
    ),
    Case(
        "neg-enable-not-list",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 6}',
        1,
        negotiate=False,
    ),
    Case(
        "neg-enable-null",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": null}}',
        1,
        negotiate=False,
    ),
    Case(
        "neg-enable-number",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}',
        1,
        negotiate=False,
    ),
    Case(
        "neg-unexpected-argument",
        b'{"execute": "qmp_capabilities", "arguments": {"foo": 1}, "id": 7}',
        1,
        negotiate=False,
    ),
    Case(
        "neg-failed-then-ok",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["bogus"]}}'
        b'{"execute": "query-version", "id": "still-negotiating"}'
        b'{"execute": "qmp_capabilities"}{"execute": "query-version", "id": "now"}',
        4,
        negotiate=False,
    ),
    Case("neg-shape-error", b'{"execute": 1, "id": 8}', 1, negotiate=False),
    Case("neg-json-error", b'{"execute" 1}', 1, negotiate=False, qemu72=JSON_LOCATION),
    Case("neg-not-object", b"[1]", 1, negotiate=False),
    Case("neg-exec-oob", b'{"exec-oob": "qmp_capabilities", "id": 9}', 1, negotiate=False),
    Case(
        "oob-exec-oob-no-oob-command",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'
        b'{"exec-oob": "query-version", "id": "o1"}',
        2,
        negotiate=False,
    ),
    Case(
        "oob-exec-oob-unknown",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'
        b'{"exec-oob": "no-such-cmd", "id": "o2"}',
        2,
        negotiate=False,
    ),
    Case(
        "oob-clash",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'
        b'{"execute": "query-version", "exec-oob": "query-version", "id": "o3"}'
        b'{"exec-oob": "query-version", "execute": "query-version", "id": "o4"}',
        3,
        negotiate=False,
    ),
    Case(
        "oob-execute-still-works",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'
        b'{"execute": "query-version", "id": "o5"}',
        2,
        negotiate=False,
    ),
    Case(
        "oob-exec-oob-not-string",
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'
        b'{"exec-oob": 1, "id": "o6"}',
        2,
        negotiate=False,
    ),
]

_ID_ECHO = [
    Case("id-string", _qv(b'"abc"'), 1),
    Case("id-number", _qv(b"42"), 1),
    Case("id-negative", _qv(b"-7"), 1),
    Case("id-null", _qv(b"null"), 1),
    Case("id-true", _qv(b"true"), 1),
    Case("id-false", _qv(b"false"), 1),
    Case("id-object", _qv(b'{"a": [1, {"b": null}], "c": "d"}'), 1),
    Case("id-array", _qv(b'[1, "two", true, null, 2.5]'), 1),
    Case("id-empty-string", _qv(b'""'), 1),
    Case("id-empty-object", _qv(b"{}"), 1),
    Case("id-empty-array", _qv(b"[]"), 1),
    Case("id-int64-max", _qv(b"9223372036854775807"), 1),
    Case("id-int64-min", _qv(b"-9223372036854775808"), 1),
    Case("id-2-63", _qv(b"9223372036854775808"), 1),
    Case("id-uint64-max", _qv(b"18446744073709551615"), 1),
    Case("id-2-64", _qv(b"18446744073709551616"), 1),
    Case("id-below-int64", _qv(b"-9223372036854775809"), 1),
    Case("id-huge-int", _qv(b"123456789012345678901234567890"), 1),
    Case("id-minus-zero", _qv(b"-0"), 1),
    Case("id-float", _qv(b"0.1"), 1),
    Case("id-float-integral", _qv(b"2.0"), 1),
    Case("id-float-exp", _qv(b"1.5e3"), 1),
    Case("id-float-exp-upper", _qv(b"1E5"), 1),
    Case("id-float-neg-exp", _qv(b"25e-2"), 1),
    Case("id-float-minus-zero", _qv(b"-0.0"), 1),
    Case("id-float-big", _qv(b"1e300"), 1),
    Case("id-float-tiny", _qv(b"5e-324"), 1),
    Case("id-float-third", _qv(b"0.3333333333333333"), 1),
    Case("id-float-overflow", _qv(b"1e999"), 1),
    Case("id-escapes", _qv(b'"q\\"b\\\\s/\\/ \\b\\f\\n\\r\\t"'), 1),
    Case("id-escaped-control", _qv(b'"\\u0001\\u001f\\u007f"'), 1),
    Case("id-u0000", _qv(b'"a\\u0000b"'), 1),
    Case("id-u-escape-lower", _qv(b'"\\u00e9\\u20ac"'), 1),
    Case("id-raw-utf8", _qv('"é€"'.encode()), 1),
    Case("id-astral", _qv('"😀"'.encode()), 1),
    Case("id-surrogate-pair", _qv(b'"\\ud83d\\ude00"'), 1),
    Case("id-modified-utf8-nul", _qv(b'"a\xc0\x80b"'), 1),
    Case("id-non-ascii-key", _qv('{"é": "ü"}'.encode()), 1),
    Case("id-single-quoted", _qv(b"'sq'"), 1),
    Case("id-single-quote-escape", _qv(b"'it\\'s \"q\"'"), 1),
    Case("id-double-quoted-apostrophe", _qv(b'"it\\\'s"'), 1),
    Case("id-first", b'{"id": "first", "execute": "query-version"}', 1),
    Case("id-on-error", b'{"execute": "no-such-cmd", "id": {"x": [1]}}', 1),
    Case("id-whitespace", b'\n\t { "execute" :\n"query-version" ,\t"id"  :  1 }\n', 1),
]

_SHAPE = [
    Case("shape-array", b"[1, 2]", 1),
    Case("shape-empty-array", b"[]", 1),
    Case("shape-string", b'"str"', 1),
    Case("shape-number-space", b"42 ", 1),
    Case("shape-number-newline", b"42\n", 1),
    Case("shape-float", b"3.5 ", 1),
    Case("shape-true", b"true ", 1),
    Case("shape-false-newline", b"false\n", 1),
    Case("shape-null", b"null\n", 1),
    # A keyword is only complete once the next byte arrives; 0xFF ends it
    # and is itself a stray byte.
    Case("shape-keyword-then-ff", b"true\xff", 2, qemu72=JSON_LOCATION),
    Case("shape-execute-number", b'{"execute": 1, "id": 1}', 1),
    Case("shape-execute-null", b'{"execute": null, "id": 2}', 1),
    Case("shape-execute-array", b'{"execute": ["query-version"], "id": 3}', 1),
    Case("shape-execute-object", b'{"execute": {}, "id": 4}', 1),
    Case("shape-execute-empty", b'{"execute": "", "id": 5}', 1),
    Case("shape-arguments-array", b'{"execute": "query-version", "arguments": [], "id": 6}', 1),
    Case("shape-arguments-null", b'{"execute": "query-version", "arguments": null, "id": 7}', 1),
    Case("shape-arguments-string", b'{"execute": "query-version", "arguments": "x"}', 1),
    Case("shape-arguments-empty", b'{"execute": "query-version", "arguments": {}, "id": 8}', 1),
    Case("shape-unexpected-member", b'{"execute": "query-version", "foo": 1, "id": 9}', 1),
    Case("shape-underscore-member", b'{"execute": "query-version", "__x": 1, "id": 10}', 1),
    Case("shape-exec-oob-without-oob", b'{"exec-oob": "query-version", "id": 11}', 1),
    Case(
        "shape-clash-without-oob",
        b'{"execute": "query-version", "exec-oob": "query-version", "id": 12}',
        1,
    ),
    Case("shape-empty-object", b"{}", 1),
    Case("shape-only-id", b'{"id": 13}', 1),
    Case("shape-only-arguments", b'{"arguments": {}, "id": 14}', 1),
    Case("shape-capitalised", b'{"Execute": "query-version", "id": 15}', 1),
    Case("shape-order-unexpected-first", b'{"foo": 1, "execute": 2, "id": 16}', 1),
    Case("shape-order-execute-first", b'{"execute": 2, "foo": 1, "id": 17}', 1),
    Case("shape-order-arguments-first", b'{"arguments": [], "execute": 2, "id": 18}', 1),
    Case("shape-order-execute-before-args", b'{"execute": 2, "arguments": [], "id": 19}', 1),
    Case("shape-order-unexpected-then-lacks", b'{"foo": 1, "arguments": {}, "id": 20}', 1),
    Case("shape-order-args-then-lacks", b'{"arguments": 1, "foo": 1, "id": 21}', 1),
    Case("shape-id-is-checked-last", b'{"id": 22, "foo": 1}', 1),
    Case("unknown-command", b'{"execute": "no-such-cmd", "id": 23}', 1),
    Case("unknown-command-no-id", b'{"execute": "no-such-cmd"}', 1),
    Case("unknown-command-underscore", b'{"execute": "query_version", "id": 24}', 1),
    Case("unknown-command-odd-chars", b'{"execute": "a b\\"c\\u00e9", "id": 25}', 1),
    Case("noarg-unexpected-argument", b'{"execute": "query-version", "arguments": {"x": 1}}', 1),
    Case(
        "noarg-two-unexpected-arguments",
        b'{"execute": "query-commands", "arguments": {"b": 1, "a": 2}, "id": 26}',
        1,
    ),
    # QEMU checks members in its QDict's hash order, not in the order sent.
    Case(
        "noarg-two-unexpected-arguments-swapped",
        b'{"execute": "query-commands", "arguments": {"a": 1, "b": 2}, "id": 26}',
        1,
    ),
    Case(
        "noarg-three-unexpected-arguments",
        b'{"execute": "query-commands", "arguments": {"x": 1, "foo": 2, "zz": 3}}',
        1,
    ),
    Case(
        "noarg-three-unexpected-arguments-swapped",
        b'{"execute": "query-commands", "arguments": {"zz": 1, "foo": 2, "x": 3}}',
        1,
    ),
    Case("shape-two-unexpected-members", b'{"foo": 1, "bar": 2, "execute": "x"}', 1),
    Case("shape-two-unexpected-members-swapped", b'{"bar": 1, "foo": 2, "execute": "x"}', 1),
    Case("noarg-quit-argument", b'{"execute": "quit", "arguments": {"now": true}, "id": 27}', 1),
    Case(
        "noarg-schema-argument",
        b'{"execute": "query-qmp-schema", "arguments": {"x": null}, "id": 28}',
        1,
    ),
]

_JSON = [
    # Malformed structure.
    Case("json-missing-colon", b'{"execute" "query-version"}', 1, qemu72=JSON_LOCATION),
    Case("json-missing-value", b'{"execute": }', 1, qemu72=JSON_LOCATION),
    Case("json-key-only", b'{"execute"}', 1, qemu72=JSON_LOCATION),
    Case("json-missing-comma", b'{"execute": "query-version" "id": 1}', 1, qemu72=JSON_LOCATION),
    Case("json-array-missing-comma", b'{"execute": "x", "id": [1 2]}', 1, qemu72=JSON_LOCATION),
    Case("json-key-not-string", b"{1: 2}", 1, qemu72=JSON_LOCATION),
    Case("json-comma-first", b"{,}", 1, qemu72=JSON_LOCATION),
    Case("json-stray-close-brace", b"}", 1, qemu72=JSON_LOCATION),
    Case("json-stray-close-bracket", b"]", 1, qemu72=JSON_LOCATION),
    Case("json-stray-colon", b":", 1, qemu72=JSON_LOCATION),
    # 11.1 reports the mismatch at once; 7.2 waits for the bracket to close
    # and only reports the 0xFF that resets it.
    Case("json-mismatched-close", b'{"id": [1}\xff', 1, qemu72=JSON_LOCATION),
    Case("json-trailing-comma-object", b'{"execute": "query-version",}', 1, qemu72=JSON_LOCATION),
    Case("json-trailing-comma-array", _qv(b"[1,]"), 1, qemu72=JSON_LOCATION),
    Case("json-double-comma", _qv(b"[1,,2]"), 1, qemu72=JSON_LOCATION),
    Case(
        "json-duplicate-key",
        b'{"execute": "query-version", "execute": "x"}',
        1,
        qemu72=JSON_LOCATION,
    ),
    Case("json-duplicate-key-nested", _qv(b'{"a": 1, "a": 2}'), 1, qemu72=JSON_LOCATION),
    # Single quotes are a QEMU extension.
    Case("json-single-quotes", b"{'execute': 'query-version', 'id': 'sq'}", 1),
    # Keywords and numbers.
    Case("json-keyword-truncated", _qv(b"tru"), 1, qemu72=JSON_LOCATION),
    Case("json-keyword-upper", _qv(b"TRUE"), 2, qemu72=JSON_LOCATION),
    Case("json-keyword-nan", _qv(b"NaN"), 2, qemu72=JSON_LOCATION),
    Case("json-keyword-infinity", _qv(b"Infinity"), 2, qemu72=JSON_LOCATION),
    Case("json-keyword-nul", _qv(b"nul"), 1, qemu72=JSON_LOCATION),
    Case("json-keyword-long", _qv(b"nullx"), 1, qemu72=JSON_LOCATION),
    Case("json-leading-zero", _qv(b"01"), 2, qemu72=JSON_LOCATION),
    Case("json-leading-zeros", _qv(b"00"), 2, qemu72=JSON_LOCATION),
    Case("json-negative-leading-zero", _qv(b"-01"), 2, qemu72=JSON_LOCATION),
    Case("json-plus-sign", _qv(b"+1"), 2, qemu72=JSON_LOCATION),
    Case("json-dot-first", _qv(b".5"), 2, qemu72=JSON_LOCATION),
    Case("json-dot-last", _qv(b"1. "), 2, qemu72=JSON_LOCATION),
    # A bad number token swallows the next byte, even a closing brace.
    Case("json-dot-swallows-brace", b'{"id": 1.}\xff', 2, qemu72=JSON_LOCATION),
    Case("json-exp-without-digits", _qv(b"1e "), 2, qemu72=JSON_LOCATION),
    Case("json-hex", _qv(b"0x10") + b"\xff", 2, qemu72=JSON_LOCATION),
    Case("json-minus-alone", _qv(b"-") + b"\xff", 2, qemu72=JSON_LOCATION),
    Case("json-percent", _qv(b"%d"), 2, qemu72=JSON_LOCATION),
    # Strings: control characters, escapes, encodings.
    Case("json-raw-tab-in-string", _qv(b'"a\tb"'), 2, qemu72=JSON_LOCATION),
    Case("json-raw-newline-in-string", _qv(b'"a\nb"'), 2, qemu72=JSON_LOCATION),
    Case("json-control-outside", b"\x01", 1, qemu72=JSON_LOCATION),
    Case("json-control-between", b'{"execute": \x02"query-version"}', 2, qemu72=JSON_LOCATION),
    # A bad escape swallows the rest of the input up to a reset byte.
    Case("json-bad-escape", _qv(b'"\\x41"') + b"\xff", 2, qemu72=JSON_LOCATION),
    Case("json-short-u-escape", _qv(b'"\\u12"') + b"\xff", 2, qemu72=JSON_LOCATION),
    Case("json-upper-u-escape", _qv(b'"\\U0041"') + b"\xff", 2, qemu72=JSON_LOCATION),
    Case("json-lone-high-surrogate", _qv(b'"\\ud800"'), 1, qemu72=JSON_LOCATION),
    Case("json-lone-low-surrogate", _qv(b'"\\udc00"'), 1, qemu72=JSON_LOCATION),
    Case("json-high-surrogate-then-bmp", _qv(b'"\\ud800\\u0041"'), 1, qemu72=JSON_LOCATION),
    Case("json-utf8-truncated", _qv(b'"\xc3"'), 1, qemu72=JSON_LOCATION),
    Case("json-utf8-lone-continuation", _qv(b'"\x80"'), 1, qemu72=JSON_LOCATION),
    Case("json-utf8-overlong", _qv(b'"\xc0\xaf"'), 1, qemu72=JSON_LOCATION),
    Case("json-utf8-surrogate", _qv(b'"\xed\xa0\x80"'), 1, qemu72=JSON_LOCATION),
    Case("json-utf8-above-max", _qv(b'"\xf4\x90\x80\x80"'), 1, qemu72=JSON_LOCATION),
    Case("json-utf8-five-bytes", _qv(b'"\xf8\x88\x80\x80\x80"'), 1, qemu72=JSON_LOCATION),
    Case("json-utf8-outside-string", b"\xc3\xa9", 1, qemu72=JSON_LOCATION),
    Case("json-byte-ff", b"\xff", 1, qemu72=JSON_LOCATION),
    Case("json-byte-fe", b"\xfe", 1, qemu72=JSON_LOCATION),
    Case(
        "json-ff-resets",
        b'{"execute": "query-version", "id": [1, \xff{"execute": "query-version", "id": "r"}',
        2,
        qemu72=JSON_LOCATION,
    ),
    Case(
        "json-control-resets",
        b'{"execute": "query-version", "id": [1, \x01{"execute": "query-version", "id": "r"}',
        2,
        qemu72=JSON_LOCATION,
    ),
    Case(
        "json-recovery-skips-to-brace",
        b'{"id" 1} "x" 5 {"execute": "query-version", "id": "after"}',
        4,
        qemu72=JSON_LOCATION,
    ),
    # Several errors for one message, and recovery.
    Case(
        "json-error-then-valid",
        b'{"a" 1}{"execute": "query-version", "id": "ok"}',
        2,
        qemu72=JSON_LOCATION,
    ),
    Case("json-two-errors", b'{"id": 01}', 2, qemu72=JSON_LOCATION),
    # Nesting: QEMU allows 1024 open containers and fails at 1025.  11.1
    # then ignores the rest up to a reset byte (the error has no location);
    # 7.2 complained once per leftover closing bracket.
    Case("json-depth-1024", _nested(1024), 1),
    Case(
        "json-depth-1025",
        _nested(1025) + b"\xff",
        2,
        qemu72="7.2 answers each of the 1025 leftover closing brackets with an error",
    ),
    # Whitespace, framing.
    Case("whitespace-only", b" \n\t\r\n ", 0),
    Case("empty-line", b"\n", 0),
    Case(
        "back-to-back",
        b'{"execute": "query-version", "id": 1}{"execute": "query-version", "id": 2}',
        2,
    ),
    Case(
        "back-to-back-with-error",
        b'{"execute": "no-such", "id": 1}[]{"execute": "query-version", "id": 3}',
        3,
    ),
    Case("no-trailing-newline", b'{"execute": "query-version", "id": "nl"}', 1),
    Case("crlf-terminated", b'{"execute": "query-version", "id": "crlf"}\r\n', 1),
    Case(
        "split-over-lines",
        b'{"execute":\n"query-version",\n"id":\n"multi"\n}\n',
        1,
    ),
    Case("compact-input", b'{"execute":"query-version","id":"c"}', 1),
]

# Where QEMU 11.1 says a JSON error is: line and column count over the
# whole connection (reset only by a new client), not per message.
_LOCATION = [
    Case(
        "json-location-later-line",
        b'\n\n{"execute": "query-version", "id": 1}\n   {"a" 1}',
        2,
        qemu72=JSON_LOCATION,
    ),
    Case("json-location-tabs", b'\t\t{"a" 1}', 1, qemu72=JSON_LOCATION),
    Case("json-location-crlf", b'\r\n\r\n {"a" 1}', 1, qemu72=JSON_LOCATION),
    Case("json-location-bare-cr", b'\r\r {"a" 1}', 1, qemu72=JSON_LOCATION),
    Case(
        "json-location-after-utf8",
        _qv('"ééé😀"'.encode()) + b' {"a" 1}',
        2,
        qemu72=JSON_LOCATION,
    ),
    Case("json-location-after-ff", b'\xff {"a" 1}', 2, qemu72=JSON_LOCATION),
    Case(
        "json-location-inside-string-newlines",
        _qv(b'"a\\nb"') + b'\n{"a" 1}',
        2,
        qemu72=JSON_LOCATION,
    ),
    Case("json-location-unnegotiated", b'\n {"a" 1}', 1, negotiate=False, qemu72=JSON_LOCATION),
]

# Sizes stay small: QEMU reads a large request slowly (about 270 KiB/s).
_BULK = [
    Case("id-long-string", _qv(b'"' + b"x" * 20_000 + b'"'), 1),
    Case("id-long-array", _qv(b"[" + b", ".join([b"1"] * 2_000) + b"]"), 1),
    Case("pipelined-100", b"".join(_qv(str(i).encode()) for i in range(100)), 100),
    Case(
        "pipelined-with-errors",
        b"".join(_qv(str(i).encode()) + b"[]" for i in range(20)),
        40,
    ),
]

_QUERIES = [
    Case("query-version", b'{"execute": "query-version"}', 1),
    Case("query-version-id", b'{"execute": "query-version", "id": "v"}', 1),
]

CASES: tuple[Case, ...] = (
    *_GREETING,
    *_NEGOTIATION,
    *_ID_ECHO,
    *_SHAPE,
    *_JSON,
    *_LOCATION,
    *_BULK,
    *_QUERIES,
)

assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
