"""In-memory QMP: a trio listener made of memory streams and a small client.

Most tests run the real server (``serve_listener``) on a
:class:`MemoryListener` and talk to it with :class:`QMPPair`, so they need
no sockets and can run under trio's MockClock.
"""

from __future__ import annotations

import json
import math
from typing import Any

import trio
import trio.testing


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose clients come from :meth:`connect`."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def connect(self, *, lockstep: bool = False) -> trio.abc.Stream:
        """A new client stream; ``lockstep`` streams buffer nothing, so a
        client that does not read blocks the server's writes, as a full
        socket buffer would."""
        pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
        client, server = pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        await self._receive.aclose()
        await trio.lowlevel.checkpoint()


class QMPPair:
    """The client end of one session: raw bytes in, parsed messages out."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._ids = 0

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read_line(self) -> bytes:
        """The next server message, raw, including its ``\\r\\n``."""
        while b"\n" not in self._buf:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("server closed the session")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    async def read_message(self) -> dict[str, Any]:
        value = json.loads(await self.read_line())
        assert isinstance(value, dict)
        return value

    async def read_reply(self) -> dict[str, Any]:
        """The next reply; events met on the way are kept in ``events``."""
        while True:
            msg = await self.read_message()
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command``; return its ``return`` value or the whole error reply."""
        self._ids += 1
        request: dict[str, Any] = {"execute": command, "id": self._ids}
        if arguments is not None:
            request["arguments"] = arguments
        await self.send(json.dumps(request).encode())
        reply = await self.read_reply()
        assert reply.get("id") == self._ids, reply
        return reply.get("return", reply)

    async def negotiate(self) -> dict[str, Any]:
        greeting = await self.read_message()
        assert await self.execute("qmp_capabilities") == {}
        return greeting

    async def aclose(self) -> None:
        await self.stream.aclose()
