"""Log positions: 64-bit integers naming a byte in one ``log.X.Y`` file.

Layout, most significant bit first::

    | session X: 20 bits | roll index Y: 14 bits | byte offset: 30 bits |

so ``2**44`` is offset 0 of ``log.1.0`` and one file holds at most 1 GiB. A
position handed to a subscriber is the position *after* a record, so resuming
from it never re-delivers that record.
"""

from __future__ import annotations

import re

from ._errors import PositionError

SESSION_BITS = 20
ROLL_BITS = 14
OFFSET_BITS = 30

MAX_SESSION = (1 << SESSION_BITS) - 1
MAX_ROLL = (1 << ROLL_BITS) - 1
MAX_OFFSET = (1 << OFFSET_BITS) - 1
MAX_POSITION = (1 << 64) - 1
MAX_FILE_SIZE = 1 << OFFSET_BITS

_ROLL_SHIFT = OFFSET_BITS
_SESSION_SHIFT = OFFSET_BITS + ROLL_BITS

_FILE_NAME = re.compile(r"log\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")


def make_position(session: int, roll: int, offset: int) -> int:
    """Pack ``(session, roll, offset)`` into a position; refuse parts out of range."""
    if not 0 <= session <= MAX_SESSION:
        raise PositionError(f"session {session} is outside 0..{MAX_SESSION}")
    if not 0 <= roll <= MAX_ROLL:
        raise PositionError(f"roll index {roll} is outside 0..{MAX_ROLL}")
    if not 0 <= offset <= MAX_OFFSET:
        raise PositionError(f"offset {offset} is outside 0..{MAX_OFFSET}")
    return (session << _SESSION_SHIFT) | (roll << _ROLL_SHIFT) | offset


def split_position(position: int) -> tuple[int, int, int]:
    """Unpack a position into ``(session, roll, offset)``."""
    check_position(position)
    return (
        position >> _SESSION_SHIFT,
        (position >> _ROLL_SHIFT) & MAX_ROLL,
        position & MAX_OFFSET,
    )


def check_position(position: object) -> int:
    """Return ``position`` if it is a valid unsigned 64-bit integer, else raise."""
    if isinstance(position, bool) or not isinstance(position, int):
        raise PositionError(f"a position is an unsigned 64-bit integer, not {position!r}")
    if not 0 <= position <= MAX_POSITION:
        raise PositionError(f"position {position} is outside 0..2**64-1")
    return position


def file_start(session: int, roll: int) -> int:
    """The position of the first byte of ``log.<session>.<roll>``."""
    return make_position(session, roll, 0)


def next_file(session: int, roll: int) -> tuple[int, int]:
    """The file a writer rolls to after ``log.<session>.<roll>``: the next roll, or the
    next session's first file after the last roll index."""
    return (session + 1, 0) if roll == MAX_ROLL else (session, roll + 1)


def file_name(session: int, roll: int) -> str:
    """The name of the file ``(session, roll)``: ``log.<session>.<roll>``."""
    make_position(session, roll, 0)  # range check
    return f"log.{session}.{roll}"


def parse_file_name(name: str) -> tuple[int, int]:
    """Parse ``log.X.Y`` into ``(X, Y)``; raise :class:`PositionError` otherwise."""
    match = _FILE_NAME.fullmatch(name)
    if match is None:
        raise PositionError(f"{name!r} is not a log file name (log.<session>.<roll>)")
    session, roll = int(match[1]), int(match[2])
    make_position(session, roll, 0)
    return session, roll
