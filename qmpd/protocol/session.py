"""One QMP session, sans I/O.

Theory of operation
-------------------
A :class:`Session` is what one client connection sees of the protocol.  The
server feeds it the bytes it reads (:meth:`Session.receive_data`, ``b""`` for
end of file) and pulls *events* out of it with :meth:`Session.next_event`
until it returns :data:`NEED_DATA`:

* :class:`Request`: a well-formed ``execute``/``exec-oob`` the dispatcher
  must run; it answers with :meth:`Session.reply` or :meth:`Session.error`.
* :class:`Rejected`: input the session answered itself (JSON errors, a bad
  request shape, a command outside negotiation); ``reply`` holds the bytes.
* :data:`EOF`: the client closed its side.

Everything is answered in input order, so a server that writes the bytes in
the order it pulls events keeps QMP's rule that in-band replies follow the
order of requests.

The negotiation state is a two-entry table (:data:`_NEGOTIATION`): what the
session says about a command name depends only on the state.  The only
transition is :meth:`Session.negotiate`, called by the ``qmp_capabilities``
handler once the schema has validated its arguments (QEMU validates the
arguments before its handler looks at the mode, so a bad ``enable`` gets an
argument error even after negotiation).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import CommandError, CommandNotFound, GenericError
from .hashorder import qdict_order
from .jsonstream import JsonParseError, JsonStreamer
from .jsonwriter import encode_message


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"
    EOF = "EOF"
    NO_ID = "NO_ID"


#: :meth:`Session.next_event` has nothing more until it is fed bytes.
NEED_DATA: Final = _Sentinel.NEED_DATA
#: The client closed the connection.
EOF: Final = _Sentinel.EOF
#: A request carried no ``id`` member (``None`` would be ``"id": null``).
NO_ID: Final = _Sentinel.NO_ID


class SessionState(enum.Enum):
    """Where a session stands in QMP's capabilities negotiation."""

    NEGOTIATING = "negotiating"
    COMMAND = "command"


@dataclass(frozen=True, slots=True)
class Request:
    """A command to run: name, arguments (``{}`` when absent), id, and whether
    it came as ``exec-oob``."""

    command: str
    arguments: dict[str, Any]
    id: Any
    oob: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """Input the session answered itself; ``reply`` is the bytes to send."""

    reply: bytes


Event = Request | Rejected | _Sentinel

#: QMP's one capabilities command; it is the only one in the negotiation table.
CAPABILITIES_COMMAND: Final = "qmp_capabilities"

# What the session says when a request names ``command`` in each state, before
# the dispatcher sees it.  ``None``: pass the request on.  QEMU replaces the
# text of every CommandNotFound during negotiation with a fixed hint.
_NEGOTIATION: Final[dict[SessionState, tuple[frozenset[str], CommandError | None]]] = {
    # (commands passed on, error for every other command)
    SessionState.NEGOTIATING: (
        frozenset({CAPABILITIES_COMMAND}),
        CommandNotFound("Expecting capabilities negotiation with 'qmp_capabilities'"),
    ),
    SessionState.COMMAND: (frozenset(), None),
}


class Session:
    """The protocol state of one QMP connection; see the module docstring."""

    def __init__(
        self,
        version: dict[str, Any],
        *,
        capabilities: Sequence[str] = ("oob",),
        pretty: bool = False,
        streamer: JsonStreamer | None = None,
    ) -> None:
        self._version = version
        self.offered: tuple[str, ...] = tuple(capabilities)
        self.pretty = pretty
        self.state = SessionState.NEGOTIATING
        self.enabled: frozenset[str] = frozenset()
        self._streamer = streamer if streamer is not None else JsonStreamer()
        self._items: deque[object] = deque()
        self._eof = False

    # -- output -------------------------------------------------------------

    def greeting(self) -> bytes:
        """The greeting QMP sends as soon as a client connects."""
        return self._encode({"QMP": {"version": self._version, "capabilities": list(self.offered)}})

    def reply(self, request_id: Any, value: Any) -> bytes:
        """The bytes of a successful reply (``value`` is ``{}`` for none)."""
        if request_id is NO_ID:
            return self._encode({"return": value})
        return self._encode({"return": value, "id": request_id})

    def error(self, request_id: Any, err: CommandError) -> bytes:
        """The bytes of an error reply."""
        if request_id is NO_ID:
            return self._encode({"error": err.to_qmp()})
        return self._encode({"id": request_id, "error": err.to_qmp()})

    @property
    def receives_events(self) -> bool:
        """Events go only to sessions that completed negotiation."""
        return self.state is SessionState.COMMAND

    @property
    def oob_enabled(self) -> bool:
        return "oob" in self.enabled

    def _encode(self, obj: Any) -> bytes:
        return encode_message(obj, pretty=self.pretty)

    # -- negotiation --------------------------------------------------------

    def negotiate(self, enable: Sequence[str]) -> None:
        """Leave negotiation with the capabilities in ``enable`` turned on.

        Raises CommandNotFound when negotiation is already over and
        GenericError for a capability the greeting did not offer.
        """
        if self.state is SessionState.COMMAND:
            raise CommandNotFound("Capabilities negotiation is already complete, command ignored")
        for cap in enable:
            if cap not in self.offered:
                raise GenericError(f"Capability {cap} not available")
        self.enabled = frozenset(enable)
        self.state = SessionState.COMMAND

    # -- input --------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the client; ``b""`` means it closed."""
        if self._eof:
            return
        if data:
            self._items.extend(self._streamer.feed(data))
        else:
            self._eof = True
            self._items.extend(self._streamer.feed_eof())

    @property
    def has_pending_input(self) -> bool:
        """Whether :meth:`next_event` has parsed input left to hand out."""
        return bool(self._items)

    def next_event(self) -> Event:
        """The next thing to act on, in input order, or NEED_DATA / EOF."""
        if not self._items:
            return EOF if self._eof else NEED_DATA
        item = self._items.popleft()
        if isinstance(item, JsonParseError):
            # QEMU cannot know the id of a message it failed to parse.
            return Rejected(self.error(NO_ID, GenericError(item.desc)))
        if not isinstance(item, dict):
            return Rejected(self.error(NO_ID, GenericError("QMP input must be a JSON object")))
        return self._check_request(item)

    def _check_request(self, obj: dict[str, Any]) -> Request | Rejected:
        # QEMU copies the id out before looking at anything else, so every
        # reply to an object echoes it, even "member is unexpected" errors.
        request_id = obj.get("id", NO_ID)
        checked = self._check_members(obj, obj)
        if isinstance(checked, str):
            # Several members may be wrong: name the one QEMU meets first.
            desc = self._check_members(obj, qdict_order(obj))
            assert isinstance(desc, str)
            return Rejected(self.error(request_id, GenericError(desc)))
        command, oob = checked
        passed, refusal = _NEGOTIATION[self.state]
        if refusal is not None and command not in passed:
            return Rejected(self.error(request_id, refusal))
        return Request(command, obj.get("arguments", {}), request_id, oob)

    def _check_members(self, obj: dict[str, Any], keys: Iterable[str]) -> tuple[str, bool] | str:
        """(command, oob) for a well-formed request, else the error text.

        Checks the members in the order of ``keys``; the first fault wins.
        """
        allow_oob = self.oob_enabled
        exec_key: str | None = None
        for key in keys:
            value = obj[key]
            if key == "execute" or (key == "exec-oob" and allow_oob):
                if not isinstance(value, str):
                    return f"QMP input member '{key}' must be a string"
                if exec_key is not None:
                    # QEMU names the pair the same way whichever came first.
                    return "QMP input member 'execute' clashes with 'exec-oob'"
                exec_key = key
            elif key == "arguments":
                if not isinstance(value, dict):
                    return "QMP input member 'arguments' must be an object"
            elif key != "id":
                return f"QMP input member '{key}' is unexpected"
        if exec_key is None:
            return "QMP input lacks member 'execute'"
        return obj[exec_key], exec_key == "exec-oob"


__all__ = [
    "CAPABILITIES_COMMAND",
    "EOF",
    "NEED_DATA",
    "NO_ID",
    "Rejected",
    "Request",
    "Session",
    "SessionState",
    "encode_event",
]


def encode_event(
    name: str, data: dict[str, Any] | None, timestamp: tuple[int, int], *, pretty: bool = False
) -> bytes:
    """The bytes of an event, encoded once and shared by every session.

    QMP omits ``data`` for events without arguments; ``timestamp`` is wall
    clock time as (seconds, microseconds).
    """
    seconds, micro = timestamp
    msg: dict[str, Any] = {"timestamp": {"seconds": seconds, "microseconds": micro}, "event": name}
    if data is not None:
        msg["data"] = data
    return encode_message(msg, pretty=pretty)
