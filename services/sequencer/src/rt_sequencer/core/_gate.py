"""Raft appends held back until this node holds the input bytes they name.

What it owns: :class:`AppendGate`. The leader proposes ranges it holds itself, without
waiting to hear that a follower holds them too; a follower takes an append into its Raft
log (and so acknowledges it) only once its own input copies hold, on disk, every range
the append's new entries name. An entry is therefore committed only when a quorum holds
its bytes, as before, but with no gossip round between the bytes arriving and the
proposal. Entries at or below the leader's commit index pass at once: a quorum held
their bytes when they committed (a node catching up may never hold them: they may be
archived).

To Raft a held-back append is a message delayed by the network, and a dropped one a
message lost: both are within its model, so holding back can cost time, never safety.
Appends queue in arrival order (a later append stepped before an earlier one would be
rejected for a gap and sent again); an append of a newer term drops those of older ones
(stale: their leader is gone), one of an older term passes (Raft refuses it), and the
oldest goes when ``capacity`` are waiting (the leader sends it again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..raft import Message, MessageType

__all__ = ["AppendGate"]


class AppendGate:
    def __init__(self, holds: Callable[[Message], bool], capacity: int = 256) -> None:
        """``holds(message)``: whether this node holds what the append's entries name."""
        self._holds = holds
        self._capacity = capacity
        self._waiting: deque[Message] = deque()
        self._term = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, message: Message) -> list[Message]:
        """The messages to step into Raft now that ``message`` arrived (maybe none)."""
        if message.type is not MessageType.APPEND or not message.entries:
            return [message]
        if message.term > self._term:
            self._term = message.term
            self._waiting = deque(m for m in self._waiting if m.term >= message.term)
        elif message.term < self._term:
            return [message]  # stale: Raft refuses it (and tells the old leader its term)
        if not self._waiting and self._holds(message):
            return [message]
        if len(self._waiting) >= self._capacity:
            self._waiting.popleft()
        self._waiting.append(message)
        return self.release()

    def release(self) -> list[Message]:
        """The waiting appends whose bytes are now held, in arrival order."""
        ready = []
        waiting, holds = self._waiting, self._holds
        while waiting and holds(waiting[0]):
            ready.append(waiting.popleft())
        return ready
