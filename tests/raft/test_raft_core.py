"""Unit tests of the Raft core's API: proposals, Ready/advance, batching, flow control,
restarts and the edge cases of the unstable log."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from rt_sequencer.raft import (
    Accepted,
    Config,
    ConfigError,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    NoLeaderError,
    NotLeaderError,
    RaftNode,
    Ready,
    Role,
    UsageError,
)


def make_node(node_id: int, peers: tuple[int, ...], storage: MemoryStorage, **options) -> RaftNode:
    return RaftNode(Config(node_id, peers, random.Random(node_id), **options), storage)


class Cluster:
    """Nodes that deliver every message at once and persist every Ready."""

    def __init__(self, size: int, **options) -> None:
        self.peers = tuple(range(1, size + 1))
        self.storages = {i: MemoryStorage() for i in self.peers}
        self.nodes = {i: make_node(i, self.peers, self.storages[i], **options) for i in self.peers}
        self.applied: dict[int, list[bytes]] = {i: [] for i in self.peers}
        self.readies: dict[int, list[Ready]] = {i: [] for i in self.peers}

    def stabilize(self, alive: set[int] | None = None) -> None:
        """Persist and deliver every Ready until none is left; with ``alive``, among
        those nodes only (the others are down: messages to them are lost)."""
        alive = set(self.nodes) if alive is None else alive
        busy = True
        while busy:
            busy = False
            inflight: list[Message] = []
            for node_id in sorted(alive):
                node = self.nodes[node_id]
                while node.has_ready():
                    busy = True
                    ready = node.ready()
                    self.readies[node_id].append(ready)
                    self.storages[node_id].save(ready.hard_state, ready.entries, ready.snapshot)
                    inflight.extend(ready.messages)
                    self.applied[node_id].extend(e.data for e in ready.committed_entries if e.data)
                    node.advance(ready)
            for message in inflight:
                if message.dst in alive:
                    self.nodes[message.dst].step(message)

    def elect(self, node_id: int = 1) -> RaftNode:
        self.nodes[node_id].campaign()
        self.stabilize()
        assert self.nodes[node_id].role is Role.LEADER
        return self.nodes[node_id]


def test_config_is_validated() -> None:
    storage = MemoryStorage()
    with pytest.raises(ConfigError):
        make_node(4, (1, 2, 3), storage)
    with pytest.raises(ConfigError):
        make_node(1, (1, 2, 3), storage, election_tick=2, heartbeat_tick=2)
    with pytest.raises(ConfigError):
        make_node(1, (1, 1, 2), storage)


def test_single_node_commits_in_the_ready_that_persists() -> None:
    node = make_node(1, (1,), MemoryStorage())
    node.campaign()
    assert node.role is Role.LEADER
    assert node.propose(b"x") == Accepted(1, 2, 2)
    ready = node.ready()
    assert [e.data for e in ready.entries] == [b"", b"x"]
    assert [e.data for e in ready.committed_entries] == [b"", b"x"]
    assert ready.must_sync and not ready.messages
    node.advance(ready)
    assert node.applied_index == 2
    assert not node.has_ready()


def test_election_timeout_is_randomized_within_bounds() -> None:
    for seed in range(20):
        node = RaftNode(Config(1, (1, 2, 3), random.Random(seed)), MemoryStorage())
        ticks = 0
        while node.role is Role.FOLLOWER:
            node.tick()
            ticks += 1
        assert 10 <= ticks < 20
        assert node.role is Role.PRE_CANDIDATE


def test_proposals_without_a_leader_are_refused() -> None:
    cluster = Cluster(3)
    with pytest.raises(NoLeaderError):
        cluster.nodes[2].propose(b"x")
    with pytest.raises(UsageError):
        cluster.nodes[2].propose(b"")


def test_follower_forwards_to_the_leader() -> None:
    cluster = Cluster(3)
    cluster.elect(1)
    assert cluster.nodes[2].propose(b"via-2") is None
    cluster.stabilize()
    assert cluster.applied[1] == cluster.applied[3] == [b"via-2"]


def test_follower_without_forwarding_names_the_leader() -> None:
    cluster = Cluster(3, forward_proposals=False)
    cluster.elect(1)
    with pytest.raises(NotLeaderError) as raised:
        cluster.nodes[3].propose(b"x")
    assert raised.value.leader_id == 1


def test_many_proposals_go_out_in_one_ready_and_one_append_per_follower() -> None:
    cluster = Cluster(3)
    leader = cluster.elect(1)
    for number in range(1000):
        leader.propose(b"p%d" % number)
    ready = leader.ready()
    assert len(ready.entries) == 1000
    appends = [m for m in ready.messages if m.type is MessageType.APPEND]
    assert sorted(m.dst for m in appends) == [2, 3]
    assert all(len(m.entries) == 1000 for m in appends)
    cluster.storages[1].save(ready.hard_state, ready.entries)
    for message in ready.messages:
        cluster.nodes[message.dst].step(message)
    leader.advance(ready)
    cluster.stabilize()
    assert len(cluster.applied[2]) == 1000


def test_propose_batch_returns_the_range() -> None:
    cluster = Cluster(3)
    leader = cluster.elect(1)
    assert leader.propose_batch([b"a", b"b", b"c"]) == Accepted(1, 2, 4)
    with pytest.raises(UsageError):
        leader.propose_batch([b"a", b""])


def test_inflight_window_and_message_size_limit() -> None:
    cluster = Cluster(2, max_inflight=2, max_size_per_msg=10)
    leader = cluster.elect(1)
    leader.propose_batch([b"12345"] * 10)
    ready = leader.ready()
    appends = [m for m in ready.messages if m.type is MessageType.APPEND]
    # Two messages of two 5-byte entries; then the window is full.
    assert [len(m.entries) for m in appends] == [2, 2]
    cluster.storages[1].save(ready.hard_state, ready.entries)
    leader.advance(ready)
    follower = cluster.nodes[2]
    follower.step(appends[0])
    follower_ready = follower.ready()
    follower.advance(follower_ready)
    (ack,) = follower_ready.messages
    leader.step(ack)
    more = [m for m in leader.ready().messages if m.type is MessageType.APPEND]
    assert [len(m.entries) for m in more] == [2]


def test_usage_errors() -> None:
    cluster = Cluster(3)
    leader = cluster.elect(1)
    leader.propose(b"x")
    ready = leader.ready()
    assert not leader.has_ready()
    with pytest.raises(UsageError):
        leader.ready()
    with pytest.raises(UsageError):
        leader.advance(Ready(None, None, [], None, [], [], False))
    leader.advance(ready)
    with pytest.raises(UsageError):
        leader.step(Message(MessageType.HEARTBEAT, 2, 3, 1))


def test_restart_keeps_hard_state_and_reapplies_committed_entries() -> None:
    cluster = Cluster(3)
    leader = cluster.elect(1)
    leader.propose(b"a")
    leader.propose(b"b")
    cluster.stabilize()
    restarted = make_node(2, cluster.peers, cluster.storages[2])
    assert (restarted.term, restarted.commit_index, restarted.applied_index) == (1, 3, 0)
    ready = restarted.ready()
    assert [e.data for e in ready.committed_entries] == [b"", b"a", b"b"]
    restarted.advance(ready)
    assert restarted.applied_index == 3


def test_restart_from_a_snapshot_applies_from_the_snapshot() -> None:
    cluster = Cluster(3)
    leader = cluster.elect(1)
    for data in (b"a", b"b", b"c"):
        leader.propose(data)
    cluster.stabilize()
    storage = cluster.storages[1]
    storage.create_snapshot(3, b"state-at-3")
    storage.compact(2)  # keep entry 3 and on for slow followers
    restarted = make_node(1, cluster.peers, storage)
    assert restarted.applied_index == 3
    assert [e.data for e in restarted.ready().committed_entries] == [b"c"]


def test_entries_replaced_while_a_ready_is_outstanding_are_persisted_again() -> None:
    storage = MemoryStorage()
    follower = make_node(2, (1, 2, 3), storage)
    old = [Entry(1, 1, b"a"), Entry(1, 2, b"b"), Entry(1, 3, b"c")]
    follower.step(Message(MessageType.APPEND, 1, 2, 1, 0, 0, old, 0))
    first = follower.ready()
    assert first.entries == old
    # A new leader of term 2 overwrites 2..3 before the first Ready is advanced.
    new = [Entry(2, 2, b"B"), Entry(2, 3, b"C")]
    follower.step(Message(MessageType.APPEND, 3, 2, 2, 1, 1, new, 0))
    storage.save(first.hard_state, first.entries)
    follower.advance(first)
    second = follower.ready()
    assert second.entries == new
    storage.save(second.hard_state, second.entries)
    follower.advance(second)
    assert [storage.term(i) for i in (1, 2, 3)] == [1, 2, 2]
    assert not follower.has_ready()


def test_duplicate_append_changes_nothing() -> None:
    cluster = Cluster(3)
    leader = cluster.elect(1)
    leader.propose(b"x")
    ready = leader.ready()
    append = next(m for m in ready.messages if m.dst == 2)
    cluster.storages[1].save(ready.hard_state, ready.entries)
    leader.advance(ready)
    follower = cluster.nodes[2]
    follower.step(append)
    follower.step(append)
    follower_ready = follower.ready()
    assert [e.data for e in follower_ready.entries] == [b"x"]
    assert [m.index for m in follower_ready.messages] == [2, 2]


def test_isolated_leader_steps_down_and_isolated_follower_keeps_its_term() -> None:
    cluster = Cluster(3)
    leader = cluster.elect(1)
    follower = cluster.nodes[3]
    for _ in range(2 * 10):
        leader.tick()
        follower.tick()
    # Check-quorum: two election timeouts without answers.
    assert leader.role is Role.FOLLOWER
    # Pre-vote: node 3 campaigned but its term did not move.
    assert follower.term == 1
    assert follower.role in (Role.PRE_CANDIDATE, Role.FOLLOWER)


def test_status_lists_peers_only_on_the_leader() -> None:
    cluster = Cluster(3)
    leader = cluster.elect(1)
    assert [p.peer for p in leader.status().peers] == [1, 2, 3]
    assert cluster.nodes[2].status().peers == ()
    assert cluster.nodes[2].status().leader_id == 1


def test_only_a_leader_or_a_granted_vote_restarts_the_election_timer() -> None:
    cluster = Cluster(3, pre_vote=False, check_quorum=False)
    leader = cluster.elect(1)
    leader.propose(b"x")
    cluster.stabilize()
    follower = cluster.nodes[2]
    for _ in range(7):
        follower.tick()
    # A candidate whose log is behind (it ends at index 1) moves us to term 5...
    follower.step(Message(MessageType.VOTE, 3, 2, 5, log_term=1, index=1))
    assert (follower.term, follower.role) == (5, Role.FOLLOWER)
    # ...but cannot delay our own candidacy: the timer keeps running.
    assert follower._raft.election_elapsed == 7
    # A vote we grant does restart it.
    follower.step(Message(MessageType.VOTE, 3, 2, 6, log_term=1, index=2))
    assert follower._raft.vote == 3
    assert follower._raft.election_elapsed == 0


def rejoin_empty(cluster: Cluster, node_id: int, term: int, **options) -> RaftNode:
    """``node_id`` lost its Raft state and rejoins above ``term``, abstaining, as a node
    does (``raft.Config.abstain``)."""
    storage = cluster.storages[node_id] = MemoryStorage()
    storage.save(HardState(term=term + 1), [])
    node = cluster.nodes[node_id] = make_node(
        node_id, cluster.peers, storage, abstain=True, **options
    )
    return node


def tick_until(cluster: Cluster, done: Callable[[], bool], rounds: int) -> None:
    """Tick every node and deliver everything, until ``done()`` (within ``rounds``)."""
    for _ in range(rounds):
        for node in cluster.nodes.values():
            node.tick()
        cluster.stabilize()
        if done():
            return
    raise AssertionError(f"not done within {rounds} rounds")


def test_an_abstaining_node_above_the_leader_s_term_tells_it() -> None:
    """Without pre-vote and check-quorum a node ignores a leader of an older term, since
    its own campaign will depose it; a node that rejoined above its peers' terms abstains
    from campaigns, so it answers instead, and the cluster elects a leader of a newer
    term that it then follows (the Raft simulator found it stuck for good, seed 4325)."""
    options = {"pre_vote": False, "check_quorum": False}
    cluster = Cluster(3, **options)
    leader = cluster.elect(1)
    leader.propose([b"x"])
    cluster.stabilize()
    term = leader.term
    rejoined = rejoin_empty(cluster, 2, term, **options)
    tick_until(cluster, lambda: not rejoined.abstaining, 100)
    [new_leader] = [n for n in cluster.nodes.values() if n.role is Role.LEADER]
    assert new_leader.term > term and rejoined.leader_id == new_leader.node_id


def test_a_node_that_lost_its_state_abstains_until_it_holds_the_leaders_term() -> None:
    """Node 2 acknowledged an entry, lost its state and rejoined empty: had it voted, node
    3 (which never got the entry) could win with its vote and lose a committed entry.
    Abstaining, it neither votes nor campaigns until a leader's entry of its own term is
    committed in its log."""
    cluster = Cluster(3)
    leader = cluster.elect(1)
    leader.propose([b"acknowledged by 1 and 2"])
    cluster.stabilize()
    rejoined = rejoin_empty(cluster, 2, leader.term)
    cluster.storages[3] = MemoryStorage()  # as if node 3 never got the entry
    cluster.nodes[3] = make_node(3, cluster.peers, cluster.storages[3])
    for _ in range(40):  # node 1 is down: neither of the others may win
        rejoined.tick()
        cluster.nodes[3].tick()
        cluster.stabilize(alive={2, 3})
    assert Role.LEADER not in (rejoined.role, cluster.nodes[3].role)
    assert rejoined.abstaining
    # Node 1 comes back: it wins (with node 3's vote, whose log is behind), and once
    # it commits an entry of its term node 2 holds everything and votes again.
    cluster.nodes[1] = make_node(1, cluster.peers, cluster.storages[1])
    tick_until(cluster, lambda: not rejoined.abstaining, 60)
    assert cluster.nodes[1].role is Role.LEADER
    assert [b"acknowledged by 1 and 2"] in cluster.applied[2]
