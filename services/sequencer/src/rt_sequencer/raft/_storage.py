"""The storage interface of the core, and the in-memory storage.

What it owns: :class:`Storage` (the Protocol) and :class:`MemoryStorage`.

The core only *reads* a storage (``initial_state``, ``first_index``, ``last_index``,
``term``, ``entries``, ``snapshot``) and only for what is already durable; the driver
*writes* it, once per Ready, through ``save``, and compacts it through
``create_snapshot`` + ``compact``. Index conventions: entries ``first_index()..last_index()``
are held; ``term(first_index() - 1)`` still answers (it is the term of the snapshot or of
the last compacted entry) so that the entry before the first can be matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ._errors import (
    CompactedError,
    SnapshotOutOfDateError,
    StorageError,
    UnavailableError,
    UsageError,
)
from ._types import EMPTY_SNAPSHOT, Entry, HardState, Snapshot, limit_size


class Storage(Protocol):
    """A node's durable Raft state: hard state, log and latest snapshot."""

    def initial_state(self) -> HardState:
        """The hard state saved last (all zero for a new node)."""
        ...

    def first_index(self) -> int:
        """Index of the first entry held (snapshot index + 1 after compaction)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry held (the snapshot index when no entry follows it)."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at ``index``, for ``first_index() - 1 <= index <= last_index()``.

        Raises CompactedError below that range and UnavailableError above it."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``lo..hi-1`` (as limited by :func:`limit_size`); same errors as ``term``."""
        ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot (``EMPTY_SNAPSHOT`` when there is none)."""
        ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        """Make one Ready durable: snapshot, then entries, then hard state."""
        ...

    def create_snapshot(self, index: int, data: bytes) -> Snapshot:
        """Record the application state ``data`` as of applied entry ``index``."""
        ...

    def compact(self, index: int) -> None:
        """Drop entries up to ``index``, which must not exceed the snapshot index."""
        ...


class MemoryStorage:
    """A Storage in memory. Durable only in the sense a simulation chooses to give it."""

    __slots__ = ("_entries", "_hard_state", "_snapshot")

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = EMPTY_SNAPSHOT
        # _entries[0] stands for the snapshot / last compacted entry: it carries the
        # term of index first_index() - 1 and is never handed out.
        self._entries: list[Entry] = [Entry(0, 0, b"")]

    # -- reads (used by the core) --------------------------------------------------------

    def initial_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._entries[0].index + 1

    def last_index(self) -> int:
        return self._entries[0].index + len(self._entries) - 1

    def term(self, index: int) -> int:
        offset = self._entries[0].index
        if index < offset:
            raise CompactedError(f"index {index} is compacted (first kept is {offset + 1})")
        position = index - offset
        if position >= len(self._entries):
            raise UnavailableError(f"index {index} is beyond the last ({self.last_index()})")
        return self._entries[position].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise CompactedError(f"index {lo} is compacted (first kept is {offset + 1})")
        if hi > offset + len(self._entries):
            raise UnavailableError(f"index {hi - 1} is beyond the last ({self.last_index()})")
        return limit_size(self._entries[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (used by the driver) -----------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
    ) -> None:
        if snapshot is not None:
            self.apply_snapshot(snapshot)
        if entries:
            self.append(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def load(
        self,
        hard_state: HardState,
        snapshot: Snapshot,
        base: tuple[int, int],
        entries: list[Entry],
    ) -> None:
        """Replace everything by state read back from disk: entries follow the
        (index, term) ``base``, which is at or before the snapshot."""
        index, term = base
        self._hard_state = hard_state
        self._snapshot = snapshot
        self._entries = [Entry(term, index, b""), *entries]

    def set_hard_state(self, hard_state: HardState) -> None:
        self._hard_state = hard_state

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries``, first dropping any held entry at or after ``entries[0].index``."""
        if not entries:
            return
        offset = self._entries[0].index
        if entries[-1].index <= offset:
            return
        if entries[0].index <= offset:
            entries = entries[offset + 1 - entries[0].index :]
        keep = entries[0].index - offset
        if keep > len(self._entries):
            raise StorageError(
                f"gap: appending index {entries[0].index} after last {self.last_index()}"
            )
        del self._entries[keep:]
        self._entries.extend(entries)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (a leader's, installed on this follower)."""
        if snapshot.index <= self._snapshot.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {snapshot.index} is not newer than {self._snapshot.index}"
            )
        self._snapshot = snapshot
        self._entries = [Entry(snapshot.term, snapshot.index, b"")]

    def create_snapshot(self, index: int, data: bytes) -> Snapshot:
        if index <= self._snapshot.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {index} is not newer than {self._snapshot.index}"
            )
        self._snapshot = Snapshot(index, self.term(index), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        offset = self._entries[0].index
        if index <= offset:
            raise CompactedError(f"index {index} is already compacted")
        if index > self._snapshot.index:
            raise UsageError(
                f"compacting to {index} past the snapshot at {self._snapshot.index} "
                "would leave lagging followers with nothing to catch up from"
            )
        del self._entries[: index - offset]
        sentinel = self._entries[0]
        self._entries[0] = Entry(sentinel.term, sentinel.index, b"")
