"""The driver-facing node: inputs in, Ready batches out.

What it owns: :class:`RaftNode` (what the driver calls) and :class:`Status` (a read-only
view for tests, traces and metrics). A driver loop looks like::

    node.tick()                    # every tick of its clock
    node.step(message)             # every message received
    node.propose(data)             # every client request
    while node.has_ready():
        ready = node.ready()
        storage.save(ready.hard_state, ready.entries, ready.snapshot)   # durable first
        send(ready.messages)
        apply(ready.snapshot, ready.committed_entries)
        node.advance(ready)

Inputs may keep arriving between ``ready()`` and ``advance()``; ``has_ready()`` is False
until the outstanding Ready is advanced, so at most one Ready is in the driver's hands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ._config import Config
from ._errors import UsageError
from ._progress import ProgressState
from ._raft import Raft
from ._storage import Storage
from ._types import Accepted, HardState, Message, Ready, Role, SoftState


@dataclass(slots=True, frozen=True)
class PeerStatus:
    """The leader's view of one peer's log."""

    peer: int
    state: ProgressState
    match: int
    next: int
    inflight: int
    paused: bool


@dataclass(slots=True, frozen=True)
class Status:
    node_id: int
    role: Role
    term: int
    vote: int
    leader_id: int
    commit: int
    applied: int
    first_index: int
    last_index: int
    peers: tuple[PeerStatus, ...]
    """Empty unless this node leads."""


class RaftNode:
    """One Raft participant with no I/O, clock or thread of its own."""

    __slots__ = ("_hard", "_outstanding", "_raft", "_soft")

    _raft_class: ClassVar[type[Raft]] = Raft

    def __init__(self, config: Config, storage: Storage) -> None:
        self._raft = self._raft_class(config, storage)
        raft = self._raft
        self._soft = SoftState(raft.lead, raft.role)
        self._hard = HardState(raft.term, raft.vote, raft.log.committed)
        self._outstanding: Ready | None = None

    # -- inputs --------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance this node's logical clock by one tick (elections, heartbeats)."""
        self._raft.tick()

    def campaign(self) -> None:
        """Start an election now (with a pre-vote round first if configured)."""
        self._raft.campaign()

    def step(self, message: Message) -> None:
        """Feed one message received from a peer."""
        if message.dst != self._raft.id:
            raise UsageError(f"message for node {message.dst} stepped into node {self._raft.id}")
        self._raft.step(message)

    def propose(self, data: bytes) -> Accepted | None:
        """Propose one entry. On the leader, returns where it was appended. On a follower
        that knows the leader, forwards it and returns None (the proposal can then be
        lost silently: callers wait for it to be applied, with a timeout). Raises
        NoLeaderError when no leader is known, NotLeaderError when forwarding is off."""
        if not data:
            raise UsageError("empty data is reserved for the leader's no-op entry")
        return self._raft.propose((data,))

    def propose_batch(self, data: Sequence[bytes]) -> Accepted | None:
        """Propose several entries at once, consecutive in the log; as ``propose``."""
        if not data:
            raise UsageError("propose_batch() of no entries")
        if b"" in data:
            raise UsageError("empty data is reserved for the leader's no-op entry")
        return self._raft.propose(data)

    # -- outputs -------------------------------------------------------------------------

    def has_ready(self) -> bool:
        raft = self._raft
        if self._outstanding is not None:
            return False
        if raft.msgs or raft.proposals_pending:
            return True
        soft = self._soft
        if soft.leader_id != raft.lead or soft.role is not raft.role:
            return True
        hard = self._hard
        log = raft.log
        if hard.term != raft.term or hard.vote != raft.vote or hard.commit != log.committed:
            return True
        return log.has_unpersisted() or log.has_next_committed_entries()

    def ready(self) -> Ready:
        """Take the next batch of work; see :class:`Ready` for how to handle it."""
        if self._outstanding is not None:
            raise UsageError("ready() called again before advance() of the previous Ready")
        raft = self._raft
        raft.flush_proposals()
        log = raft.log

        soft_state = None
        if self._soft.leader_id != raft.lead or self._soft.role is not raft.role:
            soft_state = self._soft = SoftState(raft.lead, raft.role)

        hard_state = None
        vote_changed = False
        previous = self._hard
        if (
            previous.term != raft.term
            or previous.vote != raft.vote
            or previous.commit != log.committed
        ):
            vote_changed = previous.term != raft.term or previous.vote != raft.vote
            hard_state = self._hard = HardState(raft.term, raft.vote, log.committed)

        entries = log.take_entries_to_persist()
        snapshot = log.take_snapshot_to_persist()
        messages = raft.msgs
        raft.msgs = []
        ready = Ready(
            soft_state=soft_state,
            hard_state=hard_state,
            entries=entries,
            snapshot=snapshot,
            committed_entries=log.next_committed_entries(),
            messages=messages,
            # A commit index alone is recoverable from the leader: no fsync needed.
            must_sync=vote_changed or bool(entries) or snapshot is not None,
        )
        self._outstanding = ready
        return ready

    def advance(self, ready: Ready) -> None:
        """Confirm that ``ready`` was handled (persisted, sent, applied)."""
        if ready is not self._outstanding:
            raise UsageError("advance() of a Ready that is not the outstanding one")
        self._outstanding = None
        log = self._raft.log
        if ready.snapshot is not None:
            log.stable_snapshot_to(ready.snapshot.index)
            if log.applied < ready.snapshot.index:
                log.applied_to(ready.snapshot.index)
        if ready.entries:
            last = ready.entries[-1]
            log.stable_to(last.index, last.term)
        if ready.committed_entries:
            log.applied_to(ready.committed_entries[-1].index)

    # -- views ---------------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        return self._raft.id

    @property
    def role(self) -> Role:
        return self._raft.role

    @property
    def term(self) -> int:
        return self._raft.term

    @property
    def leader_id(self) -> int:
        return self._raft.lead

    @property
    def commit_index(self) -> int:
        return self._raft.log.committed

    @property
    def applied_index(self) -> int:
        return self._raft.log.applied

    @property
    def first_index(self) -> int:
        return self._raft.log.first_index()

    @property
    def abstaining(self) -> bool:
        """Still neither voting nor campaigning after a rejoin (``Config.abstain``)."""
        return self._raft.abstaining

    @property
    def last_index(self) -> int:
        return self._raft.log.last_index()

    def log_term(self, index: int) -> int:
        """Term of this node's entry at ``index`` (persisted or not); raises CompactedError
        below ``status().first_index - 1`` and UnavailableError past ``last_index``."""
        return self._raft.log.term(index)

    def status(self) -> Status:
        raft = self._raft
        log = raft.log
        peers = tuple(
            PeerStatus(
                peer,
                progress.state,
                progress.match,
                progress.next,
                len(progress.inflights),
                progress.is_paused(),
            )
            for peer, progress in sorted(raft.progress.items())
        )
        return Status(
            node_id=raft.id,
            role=raft.role,
            term=raft.term,
            vote=raft.vote,
            leader_id=raft.lead,
            commit=log.committed,
            applied=log.applied,
            first_index=log.first_index(),
            last_index=log.last_index(),
            peers=peers,
        )
