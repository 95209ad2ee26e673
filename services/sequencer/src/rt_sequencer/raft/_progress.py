"""What a leader knows of each follower, and the flow control of its APPEND messages.

What it owns: :class:`Progress` (match/next indexes and the probe / replicate / snapshot
state machine) and :class:`Inflights` (the window of unacknowledged APPEND messages).

- PROBE: the follower's log position is unknown; send one APPEND, then wait for its
  answer (or a heartbeat answer) before sending another.
- REPLICATE: the follower is in step; stream APPENDs optimistically, at most
  ``max_inflight`` unacknowledged at a time.
- SNAPSHOT: the entries the follower needs are compacted; a snapshot was sent and
  nothing more is sent until it is acknowledged or given up on.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """Last indexes of the APPEND messages sent but not yet acknowledged, oldest first."""

    __slots__ = ("_last_indexes", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._last_indexes: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._last_indexes)

    def full(self) -> bool:
        return len(self._last_indexes) >= self.capacity

    def add(self, last_index: int) -> None:
        self._last_indexes.append(last_index)

    def free_up_to(self, index: int) -> None:
        last_indexes = self._last_indexes
        while last_indexes and last_indexes[0] <= index:
            last_indexes.popleft()

    def free_first(self) -> None:
        if self._last_indexes:
            self._last_indexes.popleft()

    def clear(self) -> None:
        self._last_indexes.clear()


class Progress:
    __slots__ = (
        "inflights",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_overdue",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_overdue = False
        self.recent_active = False
        self.inflights = Inflights(max_inflight)

    def is_paused(self) -> bool:
        state = self.state
        if state is ProgressState.REPLICATE:
            return self.inflights.full()
        if state is ProgressState.PROBE:
            return self.probe_sent
        return True

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.clear()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_overdue = False
        self.probe_sent = False
        self.inflights.clear()

    def sent_entries(self, count: int, last_index: int) -> None:
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.add(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged entries up to ``index``; False if that is old news."""
        if index + 1 > self.next:
            self.next = index + 1
        if index > self.match:
            self.match = index
            self.probe_sent = False
            return True
        return False

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """The follower rejected an APPEND after ``rejected``; its log may match up to
        ``match_hint``. False if the rejection is stale."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True
