"""The Raft log as the core sees it: durable entries in storage plus an unstable tail.

What it owns: :class:`RaftLog` — the unstable entries and snapshot not yet persisted,
which of them were already handed to the driver in a Ready, the commit and applied
indexes, and the log queries Raft needs (term lookup, conflict search, up-to-date check).

Invariant: ``offset`` is the index of ``unstable[0]`` and ``offset + len(unstable) - 1``
is always the last index; entries below ``offset`` are read from the storage (or the
pending snapshot covers them).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._errors import CompactedError, InvariantError, UnavailableError, UsageError
from ._storage import Storage
from ._types import Entry, Snapshot, limit_size


class RaftLog:
    __slots__ = (
        "applied",
        "committed",
        "in_progress",
        "offset",
        "pending_snapshot",
        "snapshot_in_progress",
        "storage",
        "unstable",
    )

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        last = storage.last_index()
        self.unstable: list[Entry] = []
        self.offset = last + 1
        # Unstable entries below in_progress were handed out in a Ready not yet advanced.
        self.in_progress = self.offset
        self.pending_snapshot: Snapshot | None = None
        self.snapshot_in_progress = False
        # The application restarts from the snapshot, which may be ahead of the
        # compaction point when some entries before it are kept for slow followers.
        self.committed = max(storage.first_index() - 1, storage.snapshot().index)
        self.applied = self.committed

    # -- positions -----------------------------------------------------------------------

    def first_index(self) -> int:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        return self.offset + len(self.unstable) - 1

    def term(self, index: int) -> int:
        """Term at ``index``; raises CompactedError or UnavailableError outside the log."""
        if index >= self.offset:
            position = index - self.offset
            if position < len(self.unstable):
                return self.unstable[position].term
            raise UnavailableError(f"index {index} is beyond the last ({self.last_index()})")
        snapshot = self.pending_snapshot
        if snapshot is not None:
            if index == snapshot.index:
                return snapshot.term
            raise CompactedError(f"index {index} is covered by the pending snapshot")
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        return self.term_or_zero(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (``last_index``, ``last_term``) is at least as up to date."""
        ours = self.last_term()
        return last_term > ours or (last_term == ours and last_index >= self.last_index())

    # -- reading entries -----------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``lo..hi-1`` limited to ``max_bytes``; raises CompactedError below the log."""
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted")
        offset = self.offset
        if hi <= offset:
            return self.storage.entries(lo, hi, max_bytes)
        if lo >= offset:
            return limit_size(self.unstable[lo - offset : hi - offset], max_bytes)
        stored = self.storage.entries(lo, offset, max_bytes)
        if len(stored) < offset - lo:
            return stored
        return limit_size(stored + self.unstable[: hi - offset], max_bytes)

    def entries_from(self, lo: int, max_bytes: int | None) -> list[Entry]:
        hi = self.last_index() + 1
        if lo >= hi:
            return []
        return self.slice(lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        if self.pending_snapshot is not None:
            return self.pending_snapshot
        return self.storage.snapshot()

    # -- appending -----------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append ``entries`` (consecutive), replacing everything from ``entries[0].index``."""
        start = entries[0].index
        if start <= self.committed:
            raise InvariantError(f"truncating committed entry {start} (commit {self.committed})")
        offset = self.offset
        end = offset + len(self.unstable)
        if start == end:
            self.unstable.extend(entries)
        elif start <= offset:
            # The replaced entries are (being) persisted: the next Ready overwrites them.
            self.unstable = list(entries)
            self.offset = start
            self.in_progress = start
        elif start < end:
            del self.unstable[start - offset :]
            self.unstable.extend(entries)
            self.in_progress = min(self.in_progress, start)
        else:
            raise InvariantError(f"gap: appending index {start} after last {end - 1}")

    def maybe_append(
        self, prev_index: int, prev_term: int, leader_commit: int, entries: Sequence[Entry]
    ) -> int | None:
        """Follower side of APPEND: the index of the last entry now known to match the
        leader's, or None when the log does not contain (``prev_index``, ``prev_term``)."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        if entries:
            conflict = self._find_conflict(entries)
            if conflict:
                if conflict <= self.committed:
                    raise InvariantError(
                        f"entry {conflict} conflicts with the committed log (commit "
                        f"{self.committed})"
                    )
                self.append(entries[conflict - entries[0].index :])
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def _find_conflict(self, entries: Sequence[Entry]) -> int:
        """Index of the first of ``entries`` not already in the log, or 0 if all are."""
        first = entries[0]
        if first.index > self.last_index():
            return first.index
        last = entries[-1]
        if self.match_term(last.index, last.term):
            return 0
        for entry in entries:
            if not self.match_term(entry.index, entry.term):
                return entry.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (index', term') with index' <= ``index`` and term' <= ``term``;
        (index', 0) when the search reaches the compacted prefix."""
        while index > 0:
            try:
                ours = self.term(index)
            except (CompactedError, UnavailableError):
                return index, 0
            if ours <= term:
                return index, ours
            index -= 1
        return 0, 0

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot``, committed by definition."""
        self.committed = snapshot.index
        self.unstable = []
        self.offset = snapshot.index + 1
        self.in_progress = self.offset
        self.pending_snapshot = snapshot
        self.snapshot_in_progress = False

    # -- commit and apply ----------------------------------------------------------------

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise InvariantError(f"commit {index} is beyond the last index {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """Commit up to ``index`` if its entry is from ``term`` (Raft §5.4.2)."""
        if index > self.committed and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def has_next_committed_entries(self) -> bool:
        return self.pending_snapshot is None and self.committed > self.applied

    def next_committed_entries(self) -> list[Entry]:
        if not self.has_next_committed_entries():
            return []
        return self.slice(self.applied + 1, self.committed + 1)

    def applied_to(self, index: int) -> None:
        if index > self.committed or index < self.applied:
            raise InvariantError(
                f"applied {index} outside [{self.applied}, commit {self.committed}]"
            )
        self.applied = index

    # -- hand-off to the driver ----------------------------------------------------------

    def has_unpersisted(self) -> bool:
        return self.in_progress < self.offset + len(self.unstable) or (
            self.pending_snapshot is not None and not self.snapshot_in_progress
        )

    def take_entries_to_persist(self) -> list[Entry]:
        entries = self.unstable[self.in_progress - self.offset :]
        self.in_progress = self.offset + len(self.unstable)
        return entries

    def take_snapshot_to_persist(self) -> Snapshot | None:
        if self.pending_snapshot is None or self.snapshot_in_progress:
            return None
        self.snapshot_in_progress = True
        return self.pending_snapshot

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to (``index``, ``term``) are durable. Ignored if that entry was
        replaced meanwhile: the replacement is handed out again in the next Ready."""
        position = index - self.offset
        if position < 0 or position >= len(self.unstable):
            return
        if self.unstable[position].term != term:
            return
        del self.unstable[: position + 1]
        self.offset = index + 1
        if self.in_progress < self.offset:
            self.in_progress = self.offset

    def stable_snapshot_to(self, index: int) -> None:
        snapshot = self.pending_snapshot
        if snapshot is not None and snapshot.index == index:
            if self.storage.snapshot().index < index:
                raise UsageError(f"advance() before the storage installed the snapshot at {index}")
            self.pending_snapshot = None
            self.snapshot_in_progress = False
