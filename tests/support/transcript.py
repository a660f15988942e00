"""A QMP client that keeps the order of replies and events, for exact sequences.

Entries are short strings: ``"JSC running"`` for a JOB_STATUS_CHANGE,
the event name for other events, ``"return"`` for a success reply and
``"error: <desc>"`` for an error reply.  The full messages are kept too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.support.loopback import QMPPair


def entry(message: dict[str, Any]) -> str:
    if "event" in message:
        if message["event"] == "JOB_STATUS_CHANGE":
            return f"JSC {message['data']['status']}"
        return str(message["event"])
    if "error" in message:
        return f"error: {message['error']['desc']}"
    return "return"


class Transcript:
    def __init__(self, pair: QMPPair) -> None:
        self.pair = pair
        self.entries: list[str] = []
        self.messages: list[dict[str, Any]] = []
        self._ids = 0

    async def _read(self) -> dict[str, Any]:
        message = await self.pair.read_message()
        self.entries.append(entry(message))
        self.messages.append(message)
        return message

    async def cmd(self, command: str, **arguments: Any) -> Any:
        """Run ``command``; return its ``return`` value or the error reply."""
        self._ids += 1
        request: dict[str, Any] = {"execute": command, "id": self._ids}
        if arguments:
            request["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
        await self.pair.send(json.dumps(request).encode())
        while True:
            message = await self._read()
            if "event" not in message:
                assert message.get("id") == self._ids, message
                return message.get("return", message)

    async def until(self, last: str | Callable[[dict[str, Any]], bool]) -> None:
        """Read events until one renders as ``last`` (or satisfies it)."""
        while True:
            message = await self._read()
            assert "event" in message, message
            if (entry(message) == last) if isinstance(last, str) else last(message):
                return

    def take(self) -> list[str]:
        """The entries so far, forgetting them."""
        taken, self.entries = self.entries, []
        return taken

    def event(self, name: str) -> dict[str, Any]:
        """The data of the last event ``name`` seen."""
        for message in reversed(self.messages):
            if message.get("event") == name:
                data = message["data"]
                assert isinstance(data, dict)
                return data
        raise AssertionError(f"no {name} event")
