"""Run one scripted QMP exchange against a daemon and compare transcripts.

Theory of operation: a :class:`Case` is a byte string to send and the
number of replies QEMU answers it with.  :func:`run_case` connects a raw
socket, reads the greeting, optionally negotiates, sends the bytes, reads
that many messages and then sends a *sentinel* command with a known id; the
sentinel's reply proves nothing else was sent in between (a reply we did
not expect shows up before it).  Every read has a timeout, so a daemon that
stays silent costs seconds, never a hang.

The server's output is parsed by a small token-preserving parser
(:func:`parse_output`): numbers, strings and keywords keep their exact
spelling, so ``1.2345678901234568e+29`` versus ``1.23e29`` or ``\\u00E9``
versus ``\\u00e9`` count as differences, while key order does not (QEMU
emits keys in hash order, which clients must not rely on).  What
legitimately differs between daemons (version numbers, ``package``, event
timestamps) is replaced by placeholders before comparing.

:func:`framing_problems` checks the raw bytes of one message: ASCII only,
``\\r\\n`` line ends, and the exact layout QEMU's JSON writer produces
(``", "`` and ``": "`` in compact mode; 4-space indentation in pretty mode).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Union

from tests.support.daemons import RawClient

__all__ = [
    "SENTINEL",
    "SENTINEL_ID",
    "Case",
    "Node",
    "Raw",
    "Transcript",
    "assert_same",
    "canonical",
    "differs",
    "framing_problems",
    "normalise",
    "parse_output",
    "read_message",
    "render",
    "run_case",
    "semantic",
    "shape_problems",
]

SENTINEL_ID = "sentinel-end"
SENTINEL = b'{"execute": "query-version", "id": "sentinel-end"}'

# How long one expected message may take.  QEMU answers in milliseconds;
# the margin is for a loaded machine, and it is only paid when a daemon
# fails to answer at all.
REPLY_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Case:
    """One scripted exchange.

    ``replies`` counts the messages QEMU sends in answer to ``send``
    (after the greeting and, when ``negotiate``, the ``qmp_capabilities``
    reply).  ``eof`` means the server closes the connection afterwards.
    ``qemu72`` says why QEMU 7.2 answers differently from 11.1 (the
    reference qmpd follows); empty when both agree.
    """

    name: str
    send: bytes
    replies: int
    negotiate: bool = True
    sentinel: bool = True
    eof: bool = False
    qemu72: str = ""

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Transcript:
    """Everything a daemon sent on one connection, message by message.

    ``end`` is ``"open"`` when the exchange finished normally, ``"eof"``
    when the server closed the connection, ``"timeout"`` when an expected
    message never came.
    """

    kind: str
    messages: tuple[bytes, ...]
    end: str

    def __repr__(self) -> str:
        # Failure reports print this; the messages themselves are diffed.
        return f"<Transcript {self.kind}: {len(self.messages)} messages, {self.end}>"


# -- token-preserving parser for server output --------------------------------

# QEMU echoes ids nested 1023 deep; the recursive helpers below need a few
# Python frames per level.
sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))


@dataclass(frozen=True, slots=True)
class Raw:
    """A scalar exactly as the server spelled it (string token with quotes)."""

    token: str


Node = Union[Raw, list["Node"], dict[str, "Node"]]  # noqa: UP007 -- recursive alias

_TOKEN = re.compile(r'\s*(?:([{}\[\],:])|("(?:[^"\\]|\\.)*")|([^\s{}\[\],:"]+))', re.S)


def _tokens(text: str) -> Iterator[str]:
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos == len(text):
            return
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"unparsable server output at {pos}: {text[pos : pos + 20]!r}")
        pos = m.end()
        yield m.group(m.lastindex or 0)


def parse_output(text: str) -> Node:
    """Parse one JSON document written by the server.

    Raises ValueError on anything that is not one complete value (the
    server's output must be well formed, apart from QEMU's ``inf``/``nan``
    float spellings, which are kept as bare tokens).
    """
    toks = list(_tokens(text))
    node, pos = _parse(toks, 0)
    if pos != len(toks):
        raise ValueError(f"trailing data after JSON value: {toks[pos : pos + 5]}")
    return node


def _parse(toks: list[str], pos: int) -> tuple[Node, int]:
    if pos >= len(toks):
        raise ValueError("incomplete JSON value")
    tok = toks[pos]
    if tok == "{":
        obj: dict[str, Node] = {}
        pos += 1
        if pos < len(toks) and toks[pos] == "}":
            return obj, pos + 1
        while True:
            if pos + 1 >= len(toks) or not toks[pos].startswith('"') or toks[pos + 1] != ":":
                raise ValueError("bad object member")
            key = toks[pos]
            if key in obj:
                raise ValueError(f"duplicate key {key} in server output")
            obj[key], pos = _parse(toks, pos + 2)
            if pos < len(toks) and toks[pos] == ",":
                pos += 1
                continue
            if pos < len(toks) and toks[pos] == "}":
                return obj, pos + 1
            raise ValueError("bad object separator")
    if tok == "[":
        arr: list[Node] = []
        pos += 1
        if pos < len(toks) and toks[pos] == "]":
            return arr, pos + 1
        while True:
            item, pos = _parse(toks, pos)
            arr.append(item)
            if pos < len(toks) and toks[pos] == ",":
                pos += 1
                continue
            if pos < len(toks) and toks[pos] == "]":
                return arr, pos + 1
            raise ValueError("bad array separator")
    if tok in "}],:":
        raise ValueError(f"unexpected {tok!r}")
    return Raw(tok), pos + 1


def render(node: Node, *, pretty: bool, indent: int = 0) -> str:
    """Lay out ``node`` the way QEMU's JSON writer does (keys in given order).

    Compact: ``{"a": 1, "b": [1, 2]}``.  Pretty: every member on its own
    line indented by 4 spaces per level, ``,`` ending the line, and even an
    empty container is split (``{`` newline ``}``) -- QEMU writes the
    newline before the closing bracket unconditionally.
    """
    if isinstance(node, Raw):
        return node.token
    if isinstance(node, dict):
        items = [f"{k}: {render(v, pretty=pretty, indent=indent + 1)}" for k, v in node.items()]
        opener, closer = "{", "}"
    else:
        items = [render(v, pretty=pretty, indent=indent + 1) for v in node]
        opener, closer = "[", "]"
    if not pretty:
        return opener + ", ".join(items) + closer
    inner = "\n" + " " * 4 * (indent + 1)
    return opener + ",".join(inner + item for item in items) + "\n" + " " * 4 * indent + closer


def canonical(node: Node) -> str:
    """Compact text with object keys sorted: equal iff same content and spelling."""
    if isinstance(node, Raw):
        return node.token
    if isinstance(node, dict):
        return "{" + ", ".join(f"{k}: {canonical(node[k])}" for k in sorted(node)) + "}"
    return "[" + ", ".join(canonical(v) for v in node) + "]"


def semantic(node: Node) -> Any:
    """The value a JSON client would see (keys decoded; numbers as numbers)."""
    if isinstance(node, Raw):
        if node.token.startswith("<"):  # a placeholder from normalise()
            return node.token
        try:
            return json.loads(node.token)
        except ValueError:
            return ("bare-token", node.token)
    if isinstance(node, dict):
        return {json.loads(k): semantic(v) for k, v in sorted(node.items())}
    return [semantic(v) for v in node]


# -- normalisation --------------------------------------------------------------

_INT = re.compile(r"-?[0-9]+")


def _is_version_info(node: Node) -> bool:
    if not isinstance(node, dict) or set(node) != {'"qemu"', '"package"'}:
        return False
    qemu = node['"qemu"']
    package = node['"package"']
    return (
        isinstance(qemu, dict)
        and set(qemu) == {'"major"', '"minor"', '"micro"'}
        and all(isinstance(v, Raw) and _INT.fullmatch(v.token) for v in qemu.values())
        and isinstance(package, Raw)
        and package.token.startswith('"')
    )


def _is_timestamp(node: Node) -> bool:
    return (
        isinstance(node, dict)
        and set(node) == {'"seconds"', '"microseconds"'}
        and all(isinstance(v, Raw) and _INT.fullmatch(v.token) for v in node.values())
    )


def normalise(node: Node) -> Node:
    """Replace what legitimately differs between daemons by placeholders.

    A VersionInfo anywhere (greeting, query-version) keeps its shape but
    loses its numbers and package string; an event's ``timestamp`` becomes
    a placeholder.  Anything of the wrong shape is left alone, so it still
    shows up as a difference.
    """
    if isinstance(node, Raw):
        return node
    if isinstance(node, list):
        return [normalise(v) for v in node]
    if _is_version_info(node):
        return {
            '"qemu"': {'"major"': Raw("<int>"), '"minor"': Raw("<int>"), '"micro"': Raw("<int>")},
            '"package"': Raw('"<package>"'),
        }
    out: dict[str, Node] = {}
    for k, v in node.items():
        if k == '"timestamp"' and '"event"' in node and _is_timestamp(v):
            out[k] = Raw("<timestamp>")
        else:
            out[k] = normalise(v)
    return out


# -- framing ----------------------------------------------------------------------


def framing_problems(raw: bytes, *, pretty: bool = False) -> list[str]:
    """What is wrong with one raw server message, or [] when it is exactly QEMU-shaped."""
    problems: list[str] = []
    if not raw.endswith(b"\r\n"):
        problems.append("does not end with \\r\\n")
    if raw.count(b"\n") != raw.count(b"\r\n"):
        problems.append("has a bare \\n (QEMU turns every \\n into \\r\\n)")
    if raw.replace(b"\r\n", b"").count(b"\r"):
        problems.append("has a bare \\r")
    bad = sorted({b for b in raw if b >= 0x7F or (b < 0x20 and b not in b"\r\n")})
    if bad:
        problems.append(f"non-ASCII or control bytes {bytes(bad)!r} (QEMU escapes them as \\uXXXX)")
    if problems:
        return problems
    text = raw.decode("ascii").replace("\r\n", "\n")
    try:
        node = parse_output(text)
    except ValueError as exc:
        return [f"not one JSON value: {exc}"]
    expected = render(node, pretty=pretty) + "\n"
    if text != expected:
        problems.append(
            f"layout differs from QEMU's {'pretty' if pretty else 'compact'} writer:\n"
            f"  got      {text!r}\n  expected {expected!r}"
        )
    for tok in _string_tokens(node):
        # Walk escapes in order, so that an escaped backslash followed by
        # "ud800" (QEMU quoting the client's text) is not taken for one.
        for esc in re.findall(r"\\(u[0-9a-fA-F]{4}|.)", tok):
            if esc.startswith("u") and esc[1:] != esc[1:].upper():
                problems.append(f"lower-case escape \\{esc} (QEMU writes upper-case hex)")
    return problems


def _string_tokens(node: Node) -> Iterator[str]:
    if isinstance(node, Raw):
        if node.token.startswith('"'):
            yield node.token
    elif isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _string_tokens(v)
    else:
        for v in node:
            yield from _string_tokens(v)


# -- running a case ------------------------------------------------------------------


def read_message(client: RawClient, timeout: float = REPLY_TIMEOUT) -> bytes:
    """One complete server message, raw, including its line end(s).

    A compact message is one line; a pretty one spans several, so lines
    are gathered until they form one JSON value.  Raises EOFError or
    TimeoutError (socket.timeout) when the server closes or stays silent.
    """
    client.sock.settimeout(timeout)
    out = b""
    while True:
        out += client.read_raw_line()
        try:
            parse_output(out.decode("latin-1"))
        except ValueError:
            if len(out) > 64 << 20:
                raise
            continue
        return out


def _read_or_end(client: RawClient, timeout: float) -> bytes | str:
    try:
        return read_message(client, timeout)
    except EOFError:
        return "eof"
    except TimeoutError:
        return "timeout"


def run_case(path: str, case: Case, kind: str) -> Transcript:
    """Play ``case`` on the monitor socket at ``path`` and record the replies."""
    got: list[bytes] = []
    with RawClient(path, timeout=REPLY_TIMEOUT) as client:

        def take(count: int, timeout: float = REPLY_TIMEOUT) -> str | None:
            for _ in range(count):
                msg = _read_or_end(client, timeout)
                if isinstance(msg, str):
                    return msg
                got.append(msg)
            return None

        def send(data: bytes) -> str | None:
            try:
                client.send(data)
            except OSError:
                return "eof"
            return None

        end = take(1)  # the greeting
        if end is None and case.negotiate:
            end = send(b'{"execute": "qmp_capabilities"}') or take(1)
        if end is None:
            end = (send(case.send) if case.send else None) or take(case.replies)
        if end is None and case.eof:
            # A message where EOF was expected is recorded, and the
            # connection counts as still open.
            end = take(1) or "open"
        elif end is None and case.sentinel:
            end = send(SENTINEL)
            # Read up to the sentinel's reply: anything before it is a reply
            # the case did not expect, kept so that the comparison shows it.
            while end is None and len(got) < 1000:
                end = take(1)
                if end is None and SENTINEL_ID.encode() in got[-1]:
                    break
    return Transcript(kind, tuple(got), end or "open")


def shape_problems(case: Case, transcript: Transcript) -> list[str]:
    """How ``transcript`` departs from what the case table promises."""
    want = 1 + int(case.negotiate) + case.replies + int(case.sentinel and not case.eof)
    problems = []
    if len(transcript.messages) != want:
        problems.append(f"{len(transcript.messages)} messages, the table expects {want}")
    if case.eof and transcript.end != "eof":
        problems.append(f"connection {transcript.end}, expected eof")
    if not case.eof and transcript.end != "open":
        problems.append(f"exchange ended with {transcript.end}")
    return problems


def _nodes(transcript: Transcript) -> list[Node]:
    return [normalise(parse_output(m.decode("latin-1"))) for m in transcript.messages]


def assert_same(subject: Transcript, reference: Transcript, *, pretty: bool = False) -> None:
    """Fail unless ``subject`` says what ``reference`` says, laid out like QEMU.

    Three checks, from coarse to fine: the values a JSON client parses,
    then their exact spelling (number format, escapes), then the framing
    of every message the subject sent.
    """
    sub, ref = _nodes(subject), _nodes(reference)
    assert [semantic(n) for n in sub] == [semantic(n) for n in ref], (
        f"{subject.kind} and {reference.kind} send different messages"
    )
    assert [canonical(n) for n in sub] == [canonical(n) for n in ref], (
        f"{subject.kind} spells values differently from {reference.kind}"
    )
    assert subject.end == reference.end, "the exchanges end differently"
    framing = [
        f"message {i}: {problem}"
        for i, raw in enumerate(subject.messages)
        for problem in framing_problems(raw, pretty=pretty)
    ]
    assert not framing, f"{subject.kind} frames messages unlike QEMU"


def differs(a: Transcript, b: Transcript) -> bool:
    """Whether two transcripts differ in anything :func:`assert_same` checks."""
    return [canonical(n) for n in _nodes(a)] != [canonical(n) for n in _nodes(b)] or a.end != b.end
