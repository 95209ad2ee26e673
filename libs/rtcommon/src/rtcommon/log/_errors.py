"""Errors raised by the log-format layer.

Every error this package raises derives from :class:`LogError`::

    LogError
     ├── PositionError        a position or file name out of range or malformed
     │    └── PositionPastEndError  a position beyond the end of a log
     ├── RecordError          a record that cannot be written
     │    └── RecordTooLargeError
     ├── CodecError           a payload the codec cannot encode or decode
     ├── LogDirectoryError    a log directory that cannot be used
     │    └── LogLockedError  another live writer holds the directory
     └── LogWriteError        a write that failed (a full disk, a closed writer)

Corruption found while *reading* is not an exception: it is reported in-band as
a ``badtail`` event so that a reader can move on (see ``_reader``).
"""

from __future__ import annotations

from ..errors import RTError


class LogError(RTError):
    """Base class of every error raised by :mod:`rtcommon.log`."""


class PositionError(LogError, ValueError):
    """A position, or its session/roll/offset parts, is out of range or malformed."""


class PositionPastEndError(PositionError):
    """A position beyond the end of the log it is meant for."""


class RecordError(LogError, ValueError):
    """A record cannot be built from the given fields."""


class RecordTooLargeError(RecordError):
    """A record is larger than a log file may hold."""


class CodecError(LogError, ValueError):
    """A payload cannot be encoded or decoded by its codec."""


class LogDirectoryError(LogError, OSError):
    """A log directory is missing, not a directory, or not writable."""


class LogLockedError(LogDirectoryError):
    """Another live writer already holds the log directory."""

    holder: str = "unknown"  #: the pid the lock file names


class LogWriteError(LogError, OSError):
    """Records could not be written; they stay buffered and nothing torn is left."""
