"""The one error tree of qmpd.

Everything qmpd raises on purpose derives from :class:`QMPDError`.  Two
families matter at the edges:

* :class:`CommandError` and its subclasses map 1:1 onto a QMP error reply
  ``{"error": {"class": ..., "desc": ...}}``.  The class attribute
  ``error_class`` is the QAPI ``QapiErrorClass`` member a client sees.
* :class:`ProtocolError` is raised by the sans-I/O core when the *peer*
  broke the protocol in a way that ends the session (not for bad requests,
  which are answered with a ``CommandError`` reply and the session goes on).

Errors that are our own fault (bugs) are not in this tree: the dispatcher
logs them with their traceback and answers a ``GenericError`` so the client
is never blamed for them.
"""

from __future__ import annotations


class QMPDError(Exception):
    """Root of every error qmpd raises deliberately."""


class CommandError(QMPDError):
    """A command failed; the client gets ``{"error": {"class", "desc"}}``."""

    error_class = "GenericError"

    def __init__(self, desc: str) -> None:
        super().__init__(desc)
        self.desc = desc

    def to_qmp(self) -> dict[str, str]:
        """The ``error`` member of the reply."""
        return {"class": self.error_class, "desc": self.desc}


class GenericError(CommandError):
    """QEMU's catch-all class: bad arguments, failed operations."""

    error_class = "GenericError"


class CommandNotFound(CommandError):
    """Unknown command, or a command not available in the current mode."""

    error_class = "CommandNotFound"


class DeviceNotActive(CommandError):
    """A ``block-job-*`` command named no block job."""

    error_class = "DeviceNotActive"


class DeviceNotFound(CommandError):
    """A device (BlockBackend) lookup by name failed."""

    error_class = "DeviceNotFound"


class ProtocolError(QMPDError):
    """The peer broke the protocol badly enough to end the session."""


class SchemaError(QMPDError):
    """The QAPI schema in ``schema/`` is malformed; names file and line."""

    def __init__(self, filename: str, line: int | None, message: str) -> None:
        where = f"{filename}:{line}" if line is not None else filename
        super().__init__(f"{where}: {message}")
        self.filename = filename
        self.line = line
        self.message = message


class StartupError(QMPDError):
    """The daemon cannot start (bad option, live socket, schema mismatch)."""


__all__ = [
    "CommandError",
    "CommandNotFound",
    "DeviceNotActive",
    "DeviceNotFound",
    "GenericError",
    "ProtocolError",
    "QMPDError",
    "SchemaError",
    "StartupError",
]
