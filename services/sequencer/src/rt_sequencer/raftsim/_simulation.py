"""Deterministic simulation of a Raft cluster running the real core.

What it owns: :class:`Simulation` — one discrete-event run of N nodes under a fault
schedule, all drawn from one ``random.Random(seed)`` — with :class:`SimConfig`,
:class:`SimStats` and :class:`SimResult`.

Each node is driven the way a real driver must drive it: a Ready that must be synced is
*persisted first* (to a simulated disk, taking simulated time), and only once that write
completes are its messages sent, its committed entries applied and ``advance`` called;
meanwhile the node keeps ticking and receiving messages. A crash loses the node's memory
and the unfinished write, of which a random prefix (snapshot, then entries, then hard
state: the order FileStorage writes them) may survive, as a torn write would. Now and
then a node restarts with its storage gone (a replaced disk, a damaged Raft state): it
rejoins above its peers' terms and abstains from votes until it caught up, as a real
node does; one at a time.

A run has two phases. During the fault phase the schedule crashes and restarts nodes,
partitions the network symmetrically and asymmetrically, and turns loss, duplication
and long (reordering) delays on and off, while clients propose. Then faults stop: all
links heal, all nodes restart, and within ``quiet_ticks`` a leader must lead the highest
term, a new proposal must commit, and every acknowledged proposal (one that some node
applied, so its client was told it committed) must be applied on every node.
"""

from __future__ import annotations

import heapq
import random
import struct
import zlib
from dataclasses import dataclass

from rt_sequencer.raft import (
    Config,
    HardState,
    MemoryStorage,
    Message,
    ProposalDroppedError,
    RaftNode,
    Ready,
    Role,
    format_entries,
    format_message,
)
from rtcommon.cluster import quorum

from ._base import TICK_STEPS, SimulationBase
from ._checker import SafetyChecker, Violation
from ._result import SimResult

_TICK, _DELIVER, _PERSISTED, _CRASH, _CLIENT, _FAULT, _RESTART, _QUIET, _CHECK = range(9)
_LEADER = Role.LEADER
_SNAPSHOT_STATE = struct.Struct("<QI")


@dataclass(slots=True, frozen=True)
class SimConfig:
    nodes: int = 3
    election_tick: int = 10
    heartbeat_tick: int = 2
    fault_ticks: int = 300
    """Length of the fault phase."""
    quiet_ticks: int = 120
    """Bound on recovery once faults stop."""
    max_inflight: int = 4
    max_size_per_msg: int = 48
    """Small, so that flow control and message splitting are exercised."""
    pre_vote: bool | None = None
    check_quorum: bool | None = None
    """None: drawn per seed, on four times in five."""


@dataclass(slots=True)
class SimStats:
    ticks: int = 0
    messages_sent: int = 0
    messages_delivered: int = 0
    crashes: int = 0
    states_lost: int = 0
    torn_writes: int = 0
    leaders: int = 0
    proposals: int = 0
    refused: int = 0
    acknowledged: int = 0
    compactions: int = 0
    snapshots_installed: int = 0
    recovery_ticks: int = -1


class _Host:
    """One machine: its node, durable storage, the Ready being written, and the
    application state (the applied index and a digest of the applied history)."""

    __slots__ = (
        "abstaining",
        "applied",
        "crash_during_write",
        "digest",
        "incarnation",
        "known_commit",
        "node",
        "node_id",
        "pending",
        "storage",
        "synced_commit",
        "tick_interval",
    )

    def __init__(self, node_id: int, tick_interval: int) -> None:
        self.node_id = node_id
        self.tick_interval = tick_interval
        self.storage = MemoryStorage()
        self.node: RaftNode | None = None
        self.pending: Ready | None = None
        self.incarnation = 0
        self.applied = 0
        self.digest = 0
        self.known_commit = 0
        self.synced_commit = 0  # the commit index as last synced
        self.crash_during_write = False
        self.abstaining = False  # lost its state; kept on its disk until it caught up


class Simulation(SimulationBase):
    def __init__(
        self,
        seed: int,
        config: SimConfig | None = None,
        *,
        trace: bool = False,
        node_class: type[RaftNode] = RaftNode,
    ) -> None:
        super().__init__(seed, trace=trace)
        self.config = config or SimConfig()
        self.node_class = node_class
        self.stats = SimStats()
        self.checker = SafetyChecker()
        self._peers = tuple(range(1, self.config.nodes + 1))
        self._hosts = [_Host(i, self.rng.choice((9, 10, 10, 11))) for i in self._peers]
        self._unacked: set[bytes] = set()
        self._max_acked = 0
        self._next_payload = 0
        self._quiet = False
        self._quiet_start = 0
        self._quiet_acked = False
        self._done = False
        # Per-run application policy: how often to snapshot and how much log to keep.
        self._compact_every = self.rng.choice((8, 20, 50))
        self._compact_keep = self.rng.choice((0, 3, 15))
        self._pre_vote = self._draw_flag(self.config.pre_vote)
        self._check_quorum = self._draw_flag(self.config.check_quorum)

    def _draw_flag(self, configured: bool | None) -> bool:
        return self.rng.random() < 0.8 if configured is None else configured

    # -- running -------------------------------------------------------------------------

    def run(self) -> SimResult:
        result = super().run()
        self.stats.leaders = self.checker.leader_count
        return result

    def _run(self) -> None:
        rng = self.rng
        for host in self._hosts:
            self._start(host)
            self._push(rng.randrange(host.tick_interval), _TICK, host.node_id)
        self._push(rng.randint(1, 20), _CLIENT, 0)
        self._push(rng.randint(1, 20) * TICK_STEPS, _FAULT, 0)
        self._push(self.config.fault_ticks * TICK_STEPS, _QUIET, 0)
        queue = self._queue
        hosts = self._hosts
        checker = self.checker
        violations = checker.violations
        pop = heapq.heappop
        while queue and not violations and not self._done:
            time, _, kind, target, payload = pop(queue)
            self.now = checker.now = time
            if kind == _DELIVER:
                self._deliver(hosts[target - 1], payload)
            elif kind == _TICK:
                host = hosts[target - 1]
                self._push(time + host.tick_interval, _TICK, target)
                if host.node is not None:
                    host.node.tick()
                    self._after_input(host)
            elif kind == _PERSISTED:
                host = hosts[target - 1]
                if host.incarnation == payload and host.pending is not None:
                    self._persisted(host)
            elif kind == _CRASH:
                host = hosts[target - 1]
                if host.incarnation == payload and host.node is not None and not self._quiet:
                    self._crash(host)
            elif kind == _CLIENT:
                self._client()
            elif kind == _FAULT:
                self._fault()
            elif kind == _RESTART:
                host = hosts[target - 1]
                if host.node is None and host.incarnation == payload:
                    self._start(host)
            elif kind == _QUIET:
                self._begin_quiet()
            else:
                self._check_recovery()

    # -- driving one node ----------------------------------------------------------------

    def _start(self, host: _Host) -> None:
        config = self.config
        on_event = None
        if self.trace is not None:
            on_event = self._note_node_event
        host.node = self.node_class(
            Config(
                node_id=host.node_id,
                peers=self._peers,
                rng=random.Random(self.rng.getrandbits(64)),
                election_tick=config.election_tick,
                heartbeat_tick=config.heartbeat_tick,
                max_inflight=config.max_inflight,
                max_size_per_msg=config.max_size_per_msg,
                pre_vote=self._pre_vote,
                check_quorum=self._check_quorum,
                abstain=host.abstaining,
                on_event=on_event,
            ),
            host.storage,
        )
        snapshot = host.storage.snapshot()
        host.applied = snapshot.index
        host.digest = 0
        if snapshot.index:
            index, host.digest = _SNAPSHOT_STATE.unpack(snapshot.data)
            self.checker.snapshot_restored(host.node_id, index, host.digest)
        host.known_commit = max(host.storage.initial_state().commit, snapshot.index)
        if host.incarnation:
            self._note(
                f"n{host.node_id} restarted (log {host.node.first_index}..{host.node.last_index})"
            )
        self._after_input(host)

    def _start_after_losing_state(self, host: _Host) -> None:
        """Restart ``host`` with its storage gone, as a node whose disk was replaced or
        whose Raft state was damaged: it waits until ``n - quorum + 1`` peers are up to tell
        their terms (a node does, the same way), starts above them with no vote and
        abstains until it caught up. One such node at a time: two at once in three can
        lose what only they had acknowledged, which no protocol can bring back."""
        if any(other.abstaining for other in self._hosts):
            return
        peers = [h for h in self._hosts if h is not host and h.node is not None]
        if len(peers) < len(self._peers) - quorum(len(self._peers)) + 1:
            return
        term = max(h.node.term for h in peers if h.node is not None) + 1
        host.storage = MemoryStorage()
        host.storage.save(HardState(term=term), [])
        host.synced_commit = host.known_commit = 0
        host.abstaining = True
        self.stats.states_lost += 1
        self._note(f"fault: n{host.node_id} lost its state; rejoins at term {term}")
        self._start(host)

    def _note_node_event(self, text: str) -> None:
        self._note(f"n{text}")

    def _after_input(self, host: _Host) -> None:
        node = host.node
        if node is None:
            return
        if node.role is _LEADER:
            self.checker.leader_seen(node)
        if host.pending is None:
            self._drain(host)

    def _drain(self, host: _Host) -> None:
        node = host.node
        assert node is not None
        while node.has_ready():
            ready = node.ready()
            self._inspect(host, ready)
            if self.trace is not None:
                self._note(f"n{host.node_id} {_describe_ready(ready)}")
            if ready.must_sync:
                host.pending = ready
                crash_during, host.crash_during_write = host.crash_during_write, False
                self._schedule_write(
                    host.node_id,
                    host.incarnation,
                    crash_during=crash_during,
                    persisted=_PERSISTED,
                    crash=_CRASH,
                )
                return
            host.storage.save(ready.hard_state, ready.entries, ready.snapshot)
            self._complete(host, ready)

    def _persisted(self, host: _Host) -> None:
        ready = host.pending
        assert ready is not None
        host.pending = None
        host.storage.save(ready.hard_state, ready.entries, ready.snapshot)
        host.synced_commit = host.storage.initial_state().commit
        self._note(f"n{host.node_id} persisted")
        self._complete(host, ready)
        self._drain(host)

    def _inspect(self, host: _Host, ready: Ready) -> None:
        """Report to the checker the entries this Ready adds to the node's log."""
        entries = ready.entries
        if entries:
            previous = entries[0].index - 1
            snapshot = ready.snapshot
            if snapshot is not None and snapshot.index == previous:
                previous_term = snapshot.term
            else:
                previous_term = host.storage.term(previous)
            self.checker.entries_persisted(host.node_id, entries, previous_term)

    def _record_commit(self, host: _Host, ready: Ready) -> None:
        """Report a commit index once it is durable: a single node commits entries as it
        appends them, but they count only once written (before that nobody applied
        them, and a crash forgets them)."""
        hard_state = ready.hard_state
        if hard_state is None or hard_state.commit <= host.known_commit:
            return
        storage = host.storage
        first_known = storage.first_index() - 1
        for index in range(max(host.known_commit + 1, first_known), hard_state.commit + 1):
            self.checker.committed(host.node_id, index, storage.term(index))
        host.known_commit = hard_state.commit

    def _complete(self, host: _Host, ready: Ready) -> None:
        """The Ready is durable: send, apply, advance."""
        self._record_commit(host, ready)
        for message in ready.messages:
            self._send(message)
        checker = self.checker
        node_id = host.node_id
        if ready.snapshot is not None:
            index, digest = _SNAPSHOT_STATE.unpack(ready.snapshot.data)
            checker.snapshot_restored(node_id, index, digest)
            host.applied, host.digest = index, digest
            self.stats.snapshots_installed += 1
        if ready.committed_entries:
            unacked = self._unacked
            applied, digest = host.applied, host.digest
            crc32 = zlib.crc32
            for entry in ready.committed_entries:
                checker.applied(node_id, applied + 1, entry)
                applied = entry.index
                data = entry.data
                digest = crc32(data, digest)
                if data in unacked:
                    self._acknowledge(data, applied)
            host.applied, host.digest = applied, digest
        assert host.node is not None
        if host.abstaining and not host.node.abstaining:
            host.abstaining = False  # what it holds now is durable: its word counts again
        host.node.advance(ready)
        self._maybe_compact(host)

    def _acknowledge(self, data: bytes, index: int) -> None:
        self._unacked.discard(data)
        self.stats.acknowledged += 1
        if index > self._max_acked:
            self._max_acked = index
        if self._quiet and data.startswith(b"q"):
            self._quiet_acked = True

    def _maybe_compact(self, host: _Host) -> None:
        storage = host.storage
        if host.applied - storage.snapshot().index < self._compact_every:
            return
        storage.create_snapshot(host.applied, _SNAPSHOT_STATE.pack(host.applied, host.digest))
        target = host.applied - self._compact_keep
        if target >= storage.first_index():
            storage.compact(target)
        self.stats.compactions += 1
        self._note(f"n{host.node_id} snapshot at {host.applied}, log kept from {target + 1}")

    # -- network -------------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        self.stats.messages_sent += 1
        network = self.network
        delays = network.delays(message.src, message.dst)
        if not delays and self.trace is not None:
            why = "cut" if network.is_cut(message.src, message.dst) else "lost"
            self._note(f"{why} {format_message(message, 2)}")
        for delay in delays:
            self._push(self.now + delay, _DELIVER, message.dst, message)

    def _deliver(self, host: _Host, message: Message) -> None:
        node = host.node
        if node is None or self.network.is_cut(message.src, message.dst):
            self._note(f"dropped {format_message(message, 2)}")
            return
        self.stats.messages_delivered += 1
        if self.trace is not None:
            self._note(f"recv {format_message(message, 2)}")
        node.step(message)
        self._after_input(host)

    # -- clients -------------------------------------------------------------------------

    def _client(self) -> None:
        rng = self.rng
        if not self._quiet:
            self._push(self.now + rng.randint(2, 20), _CLIENT, 0)
        count = 1 if rng.random() < 0.7 else rng.randint(2, 6)
        self._propose(rng.choice(self._hosts), b"c", count)

    def _propose(self, host: _Host, prefix: bytes, count: int) -> None:
        payloads = []
        for _ in range(count):
            self._next_payload += 1
            payloads.append(prefix + str(self._next_payload).encode())
        self.stats.proposals += count
        node = host.node
        if node is None:
            self.stats.refused += count
            self._note(f"client -> n{host.node_id} (down): {payloads[0]!r}.. refused")
            return
        try:
            accepted = node.propose(payloads[0]) if count == 1 else node.propose_batch(payloads)
        except ProposalDroppedError as error:
            self.stats.refused += count
            self._note(f"client -> n{host.node_id}: {payloads[0]!r}.. refused: {error}")
            return
        self._unacked.update(payloads)
        if accepted is None:
            self._note(f"client -> n{host.node_id}: {payloads[0]!r}.. forwarded")
        else:
            self._note(
                f"client -> n{host.node_id}: {payloads[0]!r}.. appended at "
                f"{accepted.term}/{accepted.first_index}..{accepted.last_index}"
            )
        self._after_input(host)

    # -- faults --------------------------------------------------------------------------

    def _fault(self) -> None:
        rng = self.rng
        next_fault = self.now + rng.randint(2, 15) * TICK_STEPS
        if next_fault < self.config.fault_ticks * TICK_STEPS:
            self._push(next_fault, _FAULT, 0)
        network = self.network
        hosts = self._hosts
        up = [h for h in hosts if h.node is not None]
        roll = rng.random()
        if roll < 0.15:
            if up:
                self._crash(rng.choice(up))
        elif roll < 0.25:
            # A crash in the middle of a write is the interesting case for durability.
            if up:
                host = rng.choice(up)
                host.crash_during_write = True
                self._note(f"fault: n{host.node_id} will crash during its next write")
        elif roll < 0.35:
            down = [h for h in hosts if h.node is None]
            if down:
                host = rng.choice(down)
                if rng.random() < 0.2:
                    self._start_after_losing_state(host)
                else:
                    self._start(host)
        elif roll < 0.45:
            leaders = [h for h in up if h.node is not None and h.node.role is _LEADER]
            if leaders:
                peers = list(self._peers)
                self._note(f"fault: leader {network.isolate(rng.choice(leaders).node_id, peers)}")
        elif roll < 0.6:
            self._note(f"fault: {network.split_randomly(list(self._peers))}")
        elif roll < 0.7:
            self._note(f"fault: {network.silence_one_way(list(self._peers))}")
        elif roll < 0.75:
            if len(self._peers) > 1:
                src, dst = rng.sample(self._peers, 2)
                network.cut(src, dst)
                self._note(f"fault: link {src}->{dst} cut")
        elif roll < 0.9:
            network.heal()
            self._note("fault: all links healed")
        else:
            self._note(f"fault: {network.change_profile()}")

    def _crash(self, host: _Host) -> None:
        ready = host.pending
        kept = "nothing pending"
        lose_unsynced_commit(host.storage, host.synced_commit)
        if ready is not None:
            kept = self._tear(host, ready)
        host.synced_commit = host.storage.initial_state().commit
        host.node = None
        host.pending = None
        host.crash_during_write = False
        host.incarnation += 1
        self.stats.crashes += 1
        self._note(f"n{host.node_id} crashed ({kept})")
        downtime = self.rng.randint(2, 40) * TICK_STEPS
        self._push(self.now + downtime, _RESTART, host.node_id, host.incarnation)

    def _tear(self, host: _Host, ready: Ready) -> str:
        description, torn = tear_write(self.rng, host.storage, ready)
        self.stats.torn_writes += torn
        return description

    # -- the quiet phase -----------------------------------------------------------------

    def _begin_quiet(self) -> None:
        self._quiet = True
        self._quiet_start = self.now
        self.network.heal()
        self.network.calm()
        self._note("faults stop: links healed, network calm, all nodes up")
        for host in self._hosts:
            host.crash_during_write = False
            if host.node is None:
                self._start(host)
        self._push(self.now + TICK_STEPS, _CHECK, 0)

    def _check_recovery(self) -> None:
        if self._recovered():
            self.stats.recovery_ticks = (self.now - self._quiet_start) // TICK_STEPS
            self._note(f"recovered after {self.stats.recovery_ticks} ticks")
            self._done = True
            return
        if self.now - self._quiet_start >= self.config.quiet_ticks * TICK_STEPS:
            self.checker.violations.append(
                Violation(
                    "liveness",
                    f"no recovery {self.config.quiet_ticks} ticks after faults stopped: "
                    f"{self._describe_cluster()}",
                    self.now,
                )
            )
            return
        if not self._quiet_acked:
            self._propose(self.rng.choice(self._hosts), b"q", 1)
        self._push(self.now + TICK_STEPS, _CHECK, 0)

    def _recovered(self) -> bool:
        if not self._quiet_acked:
            return False
        nodes = [h.node for h in self._hosts if h.node is not None]
        top_term = max(node.term for node in nodes)
        if not any(node.role is _LEADER and node.term == top_term for node in nodes):
            return False
        return all(host.applied >= self._max_acked for host in self._hosts)

    def _describe_cluster(self) -> str:
        parts = []
        for host in self._hosts:
            node = host.node
            if node is None:
                parts.append(f"n{host.node_id} down")
            else:
                parts.append(
                    f"n{host.node_id} {node.role.value} term {node.term} commit "
                    f"{node.commit_index} applied {host.applied}"
                )
        parts.append(f"last acknowledged index {self._max_acked}")
        return "; ".join(parts)


def lose_unsynced_commit(storage: MemoryStorage, synced_commit: int) -> None:
    """A crash loses a commit index that was saved without a sync (a Ready that only
    moves the commit: FileStorage keeps that hard state in memory)."""
    hard = storage.initial_state()
    if hard.commit > synced_commit:
        storage.set_hard_state(HardState(hard.term, hard.vote, synced_commit))


def tear_write(rng: random.Random, storage: MemoryStorage, ready: Ready) -> tuple[str, bool]:
    """A crash during the write of ``ready``: keep a random prefix of it, in
    FileStorage's write order (snapshot, then entries, then hard state). Returns a
    description and whether anything was lost."""
    snapshot, entries, hard_state = ready.snapshot, ready.entries, ready.hard_state
    steps = (snapshot is not None) + len(entries) + (hard_state is not None)
    keep = rng.randint(0, steps)
    description = f"write torn after {keep} of {steps} steps"
    if snapshot is not None:
        if keep == 0:
            return description, True
        storage.apply_snapshot(snapshot)
        keep -= 1
    storage.append(entries[:keep])
    if hard_state is not None and keep > len(entries):
        storage.set_hard_state(hard_state)
    return description, keep < steps


def _describe_ready(ready: Ready) -> str:
    parts = ["ready"]
    if ready.soft_state is not None:
        parts.append(f"{ready.soft_state.role.value} lead={ready.soft_state.leader_id}")
    if ready.hard_state is not None:
        hard = ready.hard_state
        parts.append(f"hs(term={hard.term} vote={hard.vote} commit={hard.commit})")
    if ready.snapshot is not None:
        parts.append(f"snapshot {ready.snapshot.term}/{ready.snapshot.index}")
    if ready.entries:
        parts.append("persist " + format_entries(ready.entries, 2))
    if ready.committed_entries:
        parts.append("apply " + format_entries(ready.committed_entries, 2))
    if ready.messages:
        parts.append(f"{len(ready.messages)} msg(s)")
    return " ".join(parts)
