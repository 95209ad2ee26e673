"""Raft appends held back until this node holds the input bytes they name.

What it owns: :class:`AppendHold`. The leader proposes ranges it holds itself, without
waiting to hear that a follower holds them too; a follower takes an append into its Raft
log (and so acknowledges it) only once its own input copies hold, on disk, every range
the append's new entries name. An entry is therefore committed only when a quorum holds
its bytes, as before, but with no gossip round between the bytes arriving and the
proposal. Entries at or below a commit index the leader of the append's term told this
node pass at once: a quorum held their bytes when they committed (a node catching up may
never hold them: they may be archived or pruned).

To Raft a held-back append is a message delayed by the network, and a dropped one a
message lost, so holding back costs time, never safety, with two rules:

- while appends wait, the leader's later APPENDs and COMMITs queue behind them, in arrival
  order: stepped before them, an append would be rejected for a gap (and the leader
  would fall back to probing), and a commit notice dropped for naming an entry not here;
  heartbeats pass (they carry no entries, and a commit only up to what the leader knows
  this log holds);
- an append of a term older than one seen here loses its entries before Raft sees it:
  Raft, not yet told of the newer term, would take them unchecked; empty, it still
  tells the old leader the newer term, or matches what this log holds.

A newer term drops the waiting appends (their leader is gone), and the oldest goes when
``capacity`` are waiting (the leader sends it again).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Sequence

from ..raft import Entry, Message, MessageType

__all__ = ["AppendHold"]

_APPEND, _COMMIT, _HEARTBEAT = MessageType.APPEND, MessageType.COMMIT, MessageType.HEARTBEAT

#: (entry index, stream, end) of every range an append's entries name.
Needs = list[tuple[int, str, int]]


class AppendHold:
    def __init__(
        self,
        needs: Callable[[Sequence[Entry]], Needs],
        holds: Callable[[str, int], bool],
        capacity: int = 1024,
    ) -> None:
        """``needs(entries)``: the ranges they name; ``holds(stream, end)``:
        whether this node holds ``stream`` up to ``end`` on disk (or merged it)."""
        self._needs = needs
        self._holds = holds
        self._capacity = capacity
        self._waiting: deque[tuple[Message, Needs]] = deque()
        self._term = 0
        self._commit = 0  # the highest commit index the leader of ``_term`` sent here

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, message: Message) -> list[Message]:
        """The messages to step into Raft now that ``message`` arrived (maybe none)."""
        kind = message.type
        if kind is not _APPEND and kind is not _COMMIT and kind is not _HEARTBEAT:
            return [message]
        if message.term < self._term:
            if kind is _APPEND and message.entries:
                return [dataclasses.replace(message, entries=())]
            return [message]
        if message.term > self._term:
            self._term, self._commit = message.term, 0
            self._waiting.clear()
        self._commit = max(self._commit, message.commit)
        if kind is _HEARTBEAT:
            return [*self.release(), message]
        commit = self._commit  # entries at or below it need nothing: not even decoded
        needs = self._needs([e for e in message.entries if e.index > commit])
        if not self._waiting and self._held(needs):
            return [message]
        if len(self._waiting) >= self._capacity:
            self._waiting.popleft()
        self._waiting.append((message, needs))
        return self.release()

    def release(self) -> list[Message]:
        """The waiting messages now free to go, in arrival order."""
        ready = []
        waiting = self._waiting
        while waiting and self._held(waiting[0][1]):
            ready.append(waiting.popleft()[0])
        return ready

    def _held(self, needs: Needs) -> bool:
        commit, holds = self._commit, self._holds
        return all(index <= commit or holds(stream, end) for index, stream, end in needs)
