"""Configuration of one Raft node.

What it owns: :class:`Config` and its validation. Membership is static: ``peers`` lists
every voter, this node included, for the life of the cluster.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ._errors import ConfigError


@dataclass(slots=True)
class Config:
    node_id: int
    peers: tuple[int, ...]
    rng: random.Random
    """The only source of randomness (election timeouts): inject a seeded one to replay."""
    election_tick: int = 10
    """Ticks without a leader before campaigning; the actual timeout is drawn from
    [election_tick, 2 * election_tick) after each reset."""
    heartbeat_tick: int = 1
    pre_vote: bool = True
    """Campaign with a pre-vote round first so a node that cannot win never bumps the term."""
    check_quorum: bool = True
    """Leaders step down after an election timeout without hearing from a quorum, and
    followers that heard from a leader within one ignore vote requests."""
    max_size_per_msg: int = 1 << 20
    """Payload bytes per APPEND message (one larger entry still travels alone)."""
    max_inflight: int = 256
    """Unacknowledged APPEND messages per follower in the replicate state."""
    forward_proposals: bool = True
    """Followers send proposals on to the leader; when off they raise NotLeaderError."""
    applied: int = 0
    """Last index the application had applied before a restart (0: the snapshot index)."""
    abstain: bool = False
    """This node lost its Raft state and rejoined with an empty log: entries it
    acknowledged before may be committed on its word and missing here. It neither
    votes nor campaigns until it holds a committed entry of the term of a leader it
    follows (every entry committed before is then in its log too); see
    :attr:`Raft.abstaining`."""
    on_event: Callable[[str], None] | None = None
    """Receives one line per notable transition (roles, votes, snapshots); never per entry."""
    node_name: Callable[[int], str] = str
    """How those lines name a node, by its Raft id (the driver names them as the cluster
    does)."""

    def validate(self) -> None:
        if self.node_id <= 0:
            raise ConfigError(f"node ids must be positive, got {self.node_id}")
        if len(set(self.peers)) != len(self.peers) or any(p <= 0 for p in self.peers):
            raise ConfigError(f"peers must be distinct positive ids, got {self.peers}")
        if self.node_id not in self.peers:
            raise ConfigError(f"node {self.node_id} is not among the peers {self.peers}")
        if self.heartbeat_tick < 1:
            raise ConfigError("heartbeat_tick must be at least 1")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight < 1:
            raise ConfigError("max_inflight must be at least 1")
        if self.max_size_per_msg < 0 or self.applied < 0:
            raise ConfigError("max_size_per_msg and applied must not be negative")
