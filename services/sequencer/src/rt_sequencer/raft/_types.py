"""Value types shared by the core, its storages and its drivers.

What it owns: log entries, hard/soft state, snapshots, messages, the Ready batch and
the small helpers that size entry lists. ``Entry`` and ``Message`` sit on the hot path
and are plain slotted dataclasses; everyone treats every instance as immutable once
built, because the same objects are shared between the log, messages and storages.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

NO_NODE = 0
"""Node ids are positive; 0 stands for "no node" (no vote cast, no leader known)."""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class MessageType(enum.IntEnum):
    PROPOSE = 1
    APPEND = 2
    APPEND_RESPONSE = 3
    VOTE = 4
    VOTE_RESPONSE = 5
    PRE_VOTE = 6
    PRE_VOTE_RESPONSE = 7
    HEARTBEAT = 8
    HEARTBEAT_RESPONSE = 9
    SNAPSHOT = 10
    #: The leader's commit index for a follower with no entries to receive: an empty
    #: APPEND (``index``/``log_term`` name the last entry sent to it) that is not answered.
    COMMIT = 11


@dataclass(slots=True)
class Entry:
    """One log entry. Empty ``data`` marks the no-op a new leader appends for its term."""

    term: int
    index: int
    data: bytes


@dataclass(slots=True, frozen=True)
class HardState:
    """What must survive a crash besides the log: the term, the vote in it, the commit index."""

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state a driver may want to watch: who leads and what this node is."""

    leader_id: int
    role: Role


@dataclass(slots=True, frozen=True)
class Snapshot:
    """Application state as of log position (``index``, ``term``); ``data`` is opaque."""

    index: int = 0
    term: int = 0
    data: bytes = b""


EMPTY_SNAPSHOT = Snapshot()


@dataclass(slots=True)
class Message:
    """A message between nodes. ``index``/``log_term`` name the log position it refers to:
    the entry preceding ``entries`` for APPEND, the candidate's last entry for (PRE_)VOTE,
    the acknowledged or rejected index for APPEND_RESPONSE."""

    type: MessageType
    src: int
    dst: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: Sequence[Entry] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None


class Accepted(NamedTuple):
    """Where a leader put proposals: entries ``first_index..last_index``, all in ``term``.

    They are committed once an applied entry at ``last_index`` has this ``term``; a different
    term there means a later leader replaced them and they were lost."""

    term: int
    first_index: int
    last_index: int


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver, handled in this order:

    1. persist ``snapshot`` (if any), then ``entries`` (appending, and truncating any stored
       entries at or after ``entries[0].index``), then ``hard_state`` (if any) — durably
       when ``must_sync``;
    2. send ``messages`` (only after step 1 is durable);
    3. restore the application from ``snapshot`` and apply ``committed_entries`` in order;
    4. call ``advance(ready)``.
    """

    soft_state: SoftState | None
    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None
    committed_entries: list[Entry]
    messages: list[Message]
    must_sync: bool


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``entries`` whose data fits in ``max_bytes``, never empty
    when ``entries`` is not: one oversized entry still has to travel."""
    if max_bytes is None or len(entries) <= 1:
        return entries
    size = 0
    for position, entry in enumerate(entries):
        size += len(entry.data)
        if size > max_bytes and position > 0:
            return entries[:position]
    return entries
