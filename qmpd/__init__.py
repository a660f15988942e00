"""qmpd: a QMP-compatible control daemon for QEMU's block layer."""

__version__ = "0.1.0"

#: The QEMU release whose QMP block API qmpd implements; the greeting and
#: ``query-version`` report it so that clients probe features by version.
QEMU_VERSION = (11, 1, 0)

__all__ = ["QEMU_VERSION", "__version__"]
