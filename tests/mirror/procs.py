"""A blocking QMP client for daemons run as processes (qmpd or QSD 11.1).

It keeps every event it reads, so a test can compare the event sequences
two daemons produce for one script.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.daemons import RawClient


class SyncClient:
    """``execute`` returns the reply's ``return`` or its ``error`` object."""

    def __init__(self, path: str, timeout: float = 60.0) -> None:
        self.raw = RawClient(path, timeout=timeout)
        self.raw.negotiate()
        self.events: list[dict[str, Any]] = []
        #: Replies and events in order, rendered short ("return", "error: x",
        #: "JSC ready", "BLOCK_JOB_READY").
        self.log: list[str] = []
        self._cursor = 0

    def close(self) -> None:
        self.raw.close()

    def _read(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.raw.readline())
        if "event" in message:
            self.events.append(message)
            data = message["data"]
            name = message["event"]
            self.log.append(f"JSC {data['status']}" if name == "JOB_STATUS_CHANGE" else name)
        elif "error" in message:
            self.log.append(f"error: {message['error']['desc']}")
        else:
            self.log.append("return")
        return message

    def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = {k.replace("_", "-"): v for k, v in arguments.items()}
        self.raw.send(json.dumps(request).encode())
        while True:
            message = self._read()
            if "event" not in message:
                return message.get("return", message.get("error"))

    def wait(self, name: str, status: str | None = None) -> dict[str, Any]:
        """The next event ``name`` (with ``status`` for JOB_STATUS_CHANGE)
        after the one the last wait returned, reading more as needed."""

        def matches(message: dict[str, Any]) -> bool:
            return message["event"] == name and (
                status is None or message["data"].get("status") == status
            )

        while True:
            while self._cursor < len(self.events):
                message = self.events[self._cursor]
                self._cursor += 1
                if matches(message):
                    return message
            self._read()

    def mirror_and_complete(self, **arguments: Any) -> None:
        """blockdev-mirror with ``arguments`` (its job-id ``job_id``), then
        job-complete once ready; returns when the job is gone."""
        assert self.execute("blockdev-mirror", **arguments) == {}
        self.wait("BLOCK_JOB_READY")
        assert self.execute("job-complete", id=arguments["job_id"]) == {}
        self.wait("JOB_STATUS_CHANGE", "null")

    def event_log(self) -> list[str]:
        """The events only, in order."""
        return [e for e in self.log if not e.startswith(("return", "error"))]
