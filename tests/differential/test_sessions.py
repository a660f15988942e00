"""Whole sessions: pretty monitors, quit, several monitors, one client at a time."""

from __future__ import annotations

import time
from contextlib import ExitStack

import pytest

from tests.differential.cases import CASES
from tests.differential.conftest import Transcripts
from tests.differential.harness import (
    Case,
    Transcript,
    assert_same,
    canonical,
    framing_problems,
    normalise,
    parse_output,
    read_message,
    run_case,
)
from tests.differential.kinds import SUBJECT
from tests.support.daemons import Daemon, DaemonKind, RawClient, running

pytestmark = pytest.mark.qemu

CAPS = b'{"execute": "qmp_capabilities"}'
CAPS_OOB = b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'


def _qv(tag: str, verb: str = "execute") -> bytes:
    return b'{"%s": "query-version", "id": "%s"}' % (verb.encode(), tag.encode())


# -- pretty mode ------------------------------------------------------------------

_PRETTY = {
    "greeting",  # nested objects and a list
    "neg-ok",  # the empty object {} of a command without return value
    "neg-command-first",  # an error
    "query-version-id",
    "id-empty-object",
    "id-empty-array",
    "id-object",
    "id-array",
    "id-escapes",
    "shape-array",
    "json-two-errors",
    "back-to-back",
}
PRETTY_CASES = [case for case in CASES if case.name in _PRETTY]
assert len(PRETTY_CASES) == len(_PRETTY)


@pytest.mark.parametrize("case", PRETTY_CASES, ids=str)
def test_pretty_monitor(
    case: Case, subject: DaemonKind, reference: DaemonKind, transcripts: Transcripts
) -> None:
    """``--monitor ...,pretty=on``: same content, QEMU's indented layout."""
    if reference.name == "qsd-7.2" and case.qemu72:
        pytest.skip(f"QEMU 7.2 differs here ({case.qemu72}); qmpd follows 11.1")
    expected = transcripts.reference(reference, case, pretty=True)
    assert_same(transcripts.get(subject, case, pretty=True), expected, pretty=True)


# -- quit -----------------------------------------------------------------------------

QUIT = Case("quit", b'{"execute": "quit", "id": "bye"}', 1, eof=True)


def _quit_run(kind: DaemonKind) -> tuple[Transcript, int | None]:
    with running(kind) as daemon:
        transcript = run_case(daemon.sockets[0], QUIT, kind.name)
        try:
            code = daemon.proc.wait(timeout=5)
        except Exception:
            code = None
    return transcript, code


def test_quit(subject: DaemonKind, reference: DaemonKind) -> None:
    """The reply comes first, then EOF, then the process exits with status 0."""
    mine, my_code = _quit_run(subject)
    theirs, their_code = _quit_run(reference)
    assert_same(mine, theirs)
    assert (my_code, their_code) == (0, 0)


def _quit_other_monitor(kind: DaemonKind) -> list[str]:
    with running(kind, monitors=2) as daemon, Monitors(daemon) as mon:
        mon.say(0, CAPS)
        mon.say(1, CAPS)
        mon.say(1, b'{"execute": "quit", "id": "bye"}')
        mon.log.append("m1 then: " + mon.eof_or_message(1))
        mon.log.append("m0 then: " + mon.eof_or_message(0))
        return mon.log


def test_quit_closes_every_monitor(subject: DaemonKind, reference: DaemonKind) -> None:
    assert _quit_other_monitor(subject) == _quit_other_monitor(reference)


# -- several monitors ---------------------------------------------------------------


def _describe(raw: bytes) -> str:
    """A message as compared here: normalised content plus any framing fault."""
    text = canonical(normalise(parse_output(raw.decode("latin-1"))))
    return " ".join([text, *(f"[FRAMING: {p}]" for p in framing_problems(raw))])


class Monitors:
    """One raw client per monitor of ``daemon``, and a log of what each received."""

    def __init__(self, daemon: Daemon) -> None:
        self._stack = ExitStack()
        self._daemon = daemon
        self.clients: list[RawClient] = []
        self.log: list[str] = []

    def __enter__(self) -> Monitors:
        for path in self._daemon.sockets:
            self.clients.append(self._stack.enter_context(RawClient(path, timeout=3)))
        for i in range(len(self.clients)):
            self.say(i, b"")  # the greetings
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def say(self, i: int, data: bytes, replies: int = 1) -> None:
        """Send ``data`` on monitor ``i`` and log the ``replies`` messages that follow."""
        if data:
            self.clients[i].send(data)
        for _ in range(replies):
            self.log.append(f"m{i}: {_describe(read_message(self.clients[i]))}")

    def eof_or_message(self, i: int) -> str:
        try:
            raw = read_message(self.clients[i], timeout=3)
        except EOFError:
            return "eof"
        except TimeoutError:
            return "silence"
        return _describe(raw)


def _monitors_script(kind: DaemonKind) -> list[str]:
    with running(kind, monitors=3) as daemon, Monitors(daemon) as mon:
        say = mon.say
        say(0, CAPS)
        say(1, _qv("m1-before"))  # m1 has not negotiated: refused
        say(0, _qv("m0"))
        say(1, CAPS)
        say(1, _qv("m1-after"))
        say(2, _qv("m2-never"))
        say(0, CAPS)  # already complete on m0 ...
        say(2, CAPS_OOB)  # ... but m2 still negotiates, with OOB
        say(2, _qv("m2-oob", "exec-oob"))  # OOB on for m2: command lacks allow-oob
        say(0, _qv("m0-oob", "exec-oob"))  # OOB off for m0: unexpected member
        say(1, b'{"execute": "query-version", "id": [', replies=0)  # half a request on m1 ...
        say(0, _qv("m0-unaffected"))  # ... leaves m0's parser alone
        say(1, b'"m1-rest"]}')
        return mon.log


def test_monitors_negotiate_separately(subject: DaemonKind, reference: DaemonKind) -> None:
    assert _monitors_script(subject) == _monitors_script(reference)


def _next(client: RawClient, timeout: float) -> str:
    try:
        return _describe(read_message(client, timeout))
    except EOFError:
        return "eof"
    except TimeoutError:
        return "silence"


def _one_client_at_a_time(kind: DaemonKind) -> list[str]:
    """A second client on a busy monitor waits; it is served, afresh, when the first leaves."""
    with running(kind) as daemon, RawClient(daemon.sockets[0]) as first:
        first.negotiate()
        with RawClient(daemon.sockets[0]) as second:
            log = ["while the first is connected: " + _next(second, 0.3)]
            first.close()
            log.append("once it left: " + _next(second, 1.5))
            second.send(_qv("second"))  # a new session: negotiation mode again
            log.append(_next(second, 3))
    return log


def test_one_client_at_a_time_in_qemu_many_in_qmpd(
    subject: DaemonKind, reference: DaemonKind
) -> None:
    # A deliberate extension: QEMU keeps a second client waiting without a
    # greeting; qmpd greets and serves it at once, each with its own session.
    assert _one_client_at_a_time(reference)[0] == "while the first is connected: silence"
    if SUBJECT != "qmpd":
        return
    with running(subject) as daemon, RawClient(daemon.sockets[0]) as first:
        first.negotiate()
        with RawClient(daemon.sockets[0]) as second:
            assert b'"QMP"' in second.readline()
            second.send(_qv("second"))
            assert b"Expecting capabilities negotiation" in second.readline()
            first.send(_qv("first"))
            assert b'"return"' in first.readline()


def _patient_client(path: str) -> RawClient:
    """Connect, retrying while the listen backlog is full (QEMU's holds one)."""
    deadline = time.monotonic() + 3
    while True:
        try:
            return RawClient(path)
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _clients_leaving_early(kind: DaemonKind) -> list[str]:
    """Clients that hang up at awkward moments must not disturb the next one."""
    with running(kind) as daemon:
        path = daemon.sockets[0]
        for _ in range(5):
            _patient_client(path).close()  # leaves before (or while) the greeting is sent
        for leftover in (b'{"execute": "query-version", "id": [', b"{'a", CAPS + _qv("gone")):
            with _patient_client(path) as client:
                client.readline()
                client.send(leftover)
        if kind.name != "qmpd":
            # QEMU resets a monitor's session when its main loop gets to the
            # last hang-up; a client that connects before then may find
            # itself already negotiated (seen on 7.2, about one run in five
            # on a loaded machine).  qmpd's next client needs no pause.
            time.sleep(0.3)
        with _patient_client(path) as client:
            client.negotiate()
            client.send(_qv("after"))
            return [_next(client, 3), "alive" if daemon.proc.poll() is None else "exited"]


def test_survives_clients_leaving_early(subject: DaemonKind, reference: DaemonKind) -> None:
    assert _clients_leaving_early(subject) == _clients_leaving_early(reference)
