"""Deterministic simulation of whole RT nodes: Raft plus the merge layer, with publishers.

What it owns: :class:`NodeSimulation` — one discrete-event run of N nodes, each a real
:class:`~rt_sequencer.raft.RaftNode` and a real :class:`~rt_sequencer.core.SequencerCore`
over in-memory input copies, merged log and checkpoint (``_storage``), with
publishers pushing streams to them — with :class:`NodeSimConfig` and
:class:`NodeSimStats` (a run's outcome is the Raft simulator's
:class:`~rt_sequencer.raftsim.SimResult`). Every random choice comes from one
``random.Random(seed)``.

Nodes are driven as the real driver (``rt_sequencer._node``) drives them: a Ready that
must be synced is persisted first (taking simulated time) and only then are its
messages sent and its entries handed to the core; a commit-only hard state is kept
unsynced and lost by a crash, as FileStorage does. Input copies are synced in groups, and
only then is what they hold reported (to the core, which gossips it, and to the
publishers). Checkpoints are written one at a time after the merged log is synced.

Publishers write records tagged with their topic and numbered per (topic, origin):
plain streams, ``.dedup`` streams, HA pairs (two streams of one ``.dedup`` topic
sending the same sequence), and one origin on two ``.dedup`` topics. Each pushes to
every node, or to one with failover (then the others need the backup path).

Faults during the first phase: node crashes (losing unsynced input bytes, a torn
unsynced tail of the merged log, a torn Raft write, an unsynced commit index), crashes
during a write, damaged or missing checkpoints, slow fsyncs, symmetric and asymmetric
partitions between nodes, publishers cut from nodes, loss, duplication and long
(reordering) delays. Then faults stop, every node restarts, links heal, publishers
stop publishing; within ``quiet_ticks`` every node's merged log must hold everything.

Retention: during the first phase, now and then a node that believes it leads proposes
a Prune entry (as ``Node.prune`` does for ``Admin.Prune``) for a position of its merged
log, from its prune point to its end, or beyond the end (the core clamps it). A
:class:`~rt_sequencer.core.PruneOut` collects fake files of the in-memory merged log
(``_storage``) a disk delay later (a crash may come first; the core asks again at
restart). The core asks to collect only before its stored snapshot's end as well, so a
snapshot install always begins in a file some node still holds: an install that needs
merged bytes a peer collected does what the real catch-up does with the Pull's
"collected, go on at Q": it goes on at the peer's collected point (its own bytes before
it collected too) if that is not past the snapshot's end, and otherwise tries another
peer. Reading collected bytes, or an install left going on inside collected files, is a
violation. The checker sees every prune applied, every checkpoint and each node's state
after every event (see ``_checker``), and a node's prune point must never fall below
what it held in this run or in its durable checkpoint (a node whose checkpoint was
damaged relearns it from a snapshot or by replay).
"""

from __future__ import annotations

import bisect
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from rtcommon.cluster import quorum
from rtcommon.log import Codec, encode_message, file_start

from ..core import (
    ApplyStalled,
    Archive,
    CatchUpOut,
    Checkpoint,
    CheckpointError,
    Compact,
    EntryRefused,
    Fetch,
    Gossip,
    Propose,
    PruneOut,
    PublishOut,
    RaftState,
    SaveCheckpoint,
    SequencerCore,
    Timing,
    encode_prune,
    encode_ranges,
    node_of,
    raft_id,
    ranges_named,
)
from ..raft import (
    Config,
    Entry,
    MemoryStorage,
    Message,
    ProposalDroppedError,
    RaftError,
    RaftNode,
    Ready,
    Role,
    SnapshotOutOfDateError,
)
from ..raftsim import TICK_STEPS, lose_unsynced_commit, tear_write
from ..raftsim._base import SimulationBase
from ._checker import MergeChecker, TopicOrigin
from ._storage import MemoryInputs, MemoryOut

__all__ = ["NodeSimConfig", "NodeSimStats", "NodeSimulation"]

#: Simulated seconds per time step: a Raft tick (TICK_STEPS steps) is 20 ms.
STEP_SECONDS = 0.002
BASE = file_start(1, 0)


def _offset(position: int) -> int:
    """A merged-log position as an offset from its base (0 for "nothing pruned")."""
    return max(0, position - BASE)


(
    _TICK,
    _CORE,
    _RAFT_MSG,
    _PERSISTED,
    _SYNCED,
    _CHECKPOINTED,
    _GOSSIP,
    _FETCHED,
    _CAUGHT_UP,
    _PUSH,
    _PUSH_ARRIVES,
    _REPLY,
    _PUBLISH,
    _FAULT,
    _RESTART,
    _QUIET,
    _CHECK,
    _CRASH,
    _SNAPSHOTTED,
    _PRUNE,
    _COLLECTED,
) = range(21)


@dataclass(slots=True, frozen=True)
class NodeSimConfig:
    nodes: int = 3
    election_tick: int = 10
    heartbeat_tick: int = 2
    fault_ticks: int = 150
    """Length of the fault phase."""
    quiet_ticks: int = 300
    """Bound on recovery once faults stop."""
    timing: Timing = field(
        default_factory=lambda: Timing(
            checkpoint_interval=0.05, compaction_keep=4, fetch_retry=0.04, push_quiet=0.06
        )
    )
    prune_ticks: tuple[int, int] = (2, 20)
    """Bounds of the ticks between two prunes proposed (during the first phase)."""
    out_file_bytes: int = 1024
    """The size past which the in-memory merged log's fake files roll (``_storage``)."""


@dataclass(slots=True)
class NodeSimStats:
    ticks: int = 0
    records: int = 0
    crashes: int = 0
    damaged_checkpoints: int = 0
    proposals: int = 0
    fetches: int = 0
    snapshots_installed: int = 0
    compactions: int = 0
    archives: int = 0
    prunes: int = 0  #: Prune entries proposed and accepted by Raft
    prunes_applied: int = 0  #: distinct Prune entries applied (by any node)
    collections: int = 0  #: PruneOuts that moved a node's collected point
    collected_skips: int = 0  #: installs that went on past a peer's collected bytes
    newer_installs: int = 0  #: installs replaced by a peer's newer snapshot (all collected past)
    recovery_ticks: int = -1


class _Publisher:
    """One publisher log: a stream of one topic, and what each node holds of it."""

    __slots__ = (
        "ends",
        "forgets",
        "ingress",
        "key",
        "log",
        "next_id",
        "node_held",
        "node_session",
        "replicated",
        "single_ingress",
        "stream",
        "topic",
    )

    def __init__(
        self, stream: str, topic: str, origin: str, nodes: int, single: bool, forgets: bool
    ) -> None:
        self.stream = stream
        self.topic = topic
        self.key: TopicOrigin = (topic, origin)
        self.log = bytearray()
        self.ends: list[int] = []  # offset after each record
        self.next_id = 1
        self.node_held = [0] * nodes  # as each node last replied
        self.node_session = [0] * nodes  # the node incarnation those replies came from
        self.replicated = [0] * nodes  # what each node last said a quorum holds
        #: Drops what the cluster acknowledged (as a publisher whose disk died may): a node
        #: behind that can get it only from its peers.
        self.forgets = forgets
        self.single_ingress = single
        self.ingress = 0

    @property
    def end(self) -> int:
        return BASE + len(self.log)

    def acknowledged_position(self, quorum: int) -> int:
        """Where a quorum holds the log, as the publisher was told (the real replicator's
        rule: what a quorum said it holds, or what any node said a quorum holds)."""
        by_quorum = sorted(self.node_held, reverse=True)[quorum - 1]
        return max(by_quorum, *self.replicated)

    def acknowledged(self, quorum: int) -> int:
        """How many records the publisher was told a quorum holds."""
        held = self.acknowledged_position(quorum) - BASE
        return bisect.bisect_right(self.ends, held)


class _Host:
    """One node: its Raft node and storage, its core, its disk."""

    def __init__(self, node_id: int, sim: NodeSimulation) -> None:
        self.node_id = node_id
        self.raft_storage = MemoryStorage()
        self.synced_commit = 0  # the commit index as last synced
        self.raft: RaftNode | None = None
        self.core: SequencerCore | None = None
        self.pending: Ready | None = None  # a Ready being persisted
        self.incarnation = 0
        self.inputs = MemoryInputs(
            BASE, lambda what: sim.checker.fail("archived read", f"n{node_id} {what}")
        )
        self.out = MemoryOut(
            BASE,
            lambda offset, data: sim.checker.appended(node_id, offset, data),
            file_bytes=sim.config.out_file_bytes,
            on_collected_read=lambda what: sim.checker.fail(
                "collected read", f"n{node_id}'s merged log {what}"
            ),
        )
        self.checkpoint: bytes | None = None  # as stored
        self.checkpoint_queue: list[Checkpoint] = []  # written one at a time
        self.syncing = False
        self.crash_during_write = False
        self.core_wake = -1  # time of the scheduled core tick
        #: The prune point this node's merge may never fall below: the highest it held in
        #: this incarnation, or its durable checkpoint's.
        self.pruned_floor = 0
        self.prune_seen = (0, 0)  # (applied index, pruned_before) last shown the checker

    @property
    def up(self) -> bool:
        return self.raft is not None


class NodeSimulation(SimulationBase):
    def __init__(
        self,
        seed: int,
        config: NodeSimConfig | None = None,
        *,
        trace: bool = False,
        core_class: type[SequencerCore] = SequencerCore,
    ) -> None:
        super().__init__(seed, trace=trace)
        self.config = config or NodeSimConfig()
        self.core_class = core_class
        self.stats = NodeSimStats()
        self.checker = MergeChecker()
        self.quorum = quorum(self.config.nodes)
        self._hosts = [_Host(i, self) for i in range(self.config.nodes)]
        self._quorum_checked = 0  # the last committed index checked for a quorum holding it
        self._publishers = self._make_publishers()
        self._cut_publishers: set[tuple[int, int]] = set()  # (publisher, node)
        self._quiet = False
        self._quiet_start = 0
        self._done = False

    def _make_publishers(self) -> list[_Publisher]:
        rng, nodes = self.rng, self.config.nodes
        single = self.config.nodes > 1 and rng.random() < 0.4

        def make(stream: str, topic: str, origin: str) -> _Publisher:
            single_ingress = single and rng.random() < 0.7
            forgets = rng.random() < 0.5
            return _Publisher(stream, topic, origin, nodes, single_ingress, forgets)

        publishers = [
            make("h1.feed", "feed", "h1"),
            # an HA pair: two hosts, one .dedup topic, one origin and sequence
            make("h1.ticks.dedup", "ticks.dedup", "ticker"),
            make("h2.ticks.dedup", "ticks.dedup", "ticker"),
            # the same origin on another .dedup topic: its own watermarks
            make("h1.quotes.dedup", "quotes.dedup", "ticker"),
        ]
        if rng.random() < 0.5:
            publishers.append(make("h2.feed", "feed", "h2"))
        return publishers

    # -- running -------------------------------------------------------------------------

    def _run(self) -> None:
        rng = self.rng
        for host in self._hosts:
            self._start(host)
            self._push(rng.randrange(TICK_STEPS), _TICK, host.node_id)
        self._push(rng.randint(1, 10), _PUBLISH, 0)
        self._push(rng.randint(5, 20) * TICK_STEPS, _FAULT, 0)
        self._push(self.config.fault_ticks * TICK_STEPS, _QUIET, 0)
        self._push(rng.randint(*self.config.prune_ticks) * TICK_STEPS, _PRUNE, 0)
        for index in range(len(self._publishers)):
            self._push(rng.randint(1, 10), _PUSH, index)
        handlers = {
            _TICK: self._on_tick,
            _CORE: self._on_core_wake,
            _RAFT_MSG: self._on_raft_message,
            _PERSISTED: self._on_persisted,
            _SYNCED: self._on_synced,
            _CHECKPOINTED: self._on_checkpointed,
            _GOSSIP: self._on_gossip,
            _FETCHED: self._on_fetched,
            _CAUGHT_UP: self._on_caught_up,
            _PUSH: self._on_push,
            _PUSH_ARRIVES: self._on_push_arrives,
            _REPLY: self._on_reply,
            _PUBLISH: self._on_publish,
            _FAULT: self._on_fault,
            _RESTART: self._on_restart,
            _QUIET: self._on_quiet,
            _CHECK: self._on_check,
            _CRASH: self._on_crash,
            _SNAPSHOTTED: self._on_snapshotted,
            _PRUNE: self._on_prune,
            _COLLECTED: self._on_collected,
        }
        queue, checker, hosts = self._queue, self.checker, self._hosts
        while queue and not checker.violations and not self._done:
            time, _, kind, target, payload = heapq.heappop(queue)
            self.now = checker.now = time
            seconds = time * STEP_SECONDS
            for host in hosts:  # as the node stamps every event with the loop's time
                if host.core is not None:
                    host.core.advance(seconds)
            handlers[kind](target, payload)

    def _seconds(self) -> float:
        return self.now * STEP_SECONDS

    # -- starting and crashing a node ----------------------------------------------------

    def _start(self, host: _Host) -> None:
        config = self.config
        checkpoint = Checkpoint()
        if host.checkpoint is not None:
            try:
                checkpoint = Checkpoint.decode(host.checkpoint)
            except CheckpointError:
                self._note(f"n{host.node_id} checkpoint damaged: recovering from peers")
        storage = host.raft_storage
        snapshot = storage.snapshot()
        if snapshot.index > checkpoint.applied_index:
            # Raft's snapshot is ahead of the checkpoint (it was lost): the merged log on
            # disk is kept, to catch up from before asking the peers.
            host.out.trim_torn()
        elif not host.out.cut_to(checkpoint.out_position or BASE):
            self.checker.fail("storage", f"n{host.node_id} merged log shorter than its checkpoint")
            return
        stored_commit = max(storage.initial_state().commit, snapshot.index)
        host.raft = RaftNode(
            Config(
                node_id=raft_id(host.node_id),
                peers=tuple(raft_id(node) for node in range(config.nodes)),
                rng=random.Random(self.rng.getrandbits(64)),
                election_tick=config.election_tick,
                heartbeat_tick=config.heartbeat_tick,
                applied=min(checkpoint.applied_index, stored_commit),
                forward_proposals=False,
                max_size_per_msg=4096,
            ),
            storage,
        )
        host.core = self.core_class(
            host.node_id,
            config.nodes,
            inputs=host.inputs,
            out=host.out,
            checkpoint=checkpoint,
            snapshot=Checkpoint.decode(snapshot.data) if snapshot.data else None,
            now=self._seconds(),
            timing=config.timing,
        )
        host.pruned_floor = checkpoint.pruned_before  # 0 if damaged: relearnt later
        self._watch_prunes(host)
        host.core.raft_changed(self._raft_state(host))
        if snapshot.index > checkpoint.applied_index:
            host.core.snapshot(snapshot.data)
        host.core.held(host.node_id, host.inputs.held(), dict(host.inputs.topics))
        self._note(f"n{host.node_id} started at applied {checkpoint.applied_index}")
        self._after(host)
        # the publishers' links reconnect: each learns what this node holds
        for index, publisher in enumerate(self._publishers):
            self._reply(index, host.node_id, host.inputs.written(publisher.stream))

    def _watch_prunes(self, host: _Host) -> None:
        """Show the checker every Prune entry the node's merge applies, as it applies it."""
        assert host.core is not None
        merger, node = host.core.merger, host.node_id
        apply = merger.prune

        def prune(index: int, before: int) -> bool:
            moved = apply(index, before)
            if self.checker.pruned(node, index, _offset(before), _offset(merger.pruned_before)):
                self.stats.prunes_applied += 1
            self._note(
                f"n{node} applied the prune at {index} (before {_offset(before)}): pruned"
                f" before {_offset(merger.pruned_before)}"
            )
            return moved

        merger.prune = prune  # type: ignore[method-assign]

    def _crash(self, host: _Host) -> None:
        rng = self.rng
        kept = "nothing pending"
        lose_unsynced_commit(host.raft_storage, host.synced_commit)
        if host.pending is not None:
            kept, _ = tear_write(rng, host.raft_storage, host.pending)
        if host.checkpoint_queue and rng.random() < 0.5:
            # The checkpoint being written made it (its rename is atomic).
            host.out.durable = max(host.out.durable, host.checkpoint_queue[0].out_position - BASE)
            host.checkpoint = host.checkpoint_queue[0].encode()
        host.inputs.crash(rng)
        host.out.crash(rng)
        if host.checkpoint is not None and rng.random() < 0.1:
            host.checkpoint = rng.choice(
                (None, host.checkpoint[: rng.randrange(len(host.checkpoint))])
            )
            self.stats.damaged_checkpoints += 1
            kept += ", checkpoint damaged"
        host.raft = host.core = host.pending = None
        host.checkpoint_queue = []
        host.syncing = host.crash_during_write = False
        host.incarnation += 1
        host.synced_commit = host.raft_storage.initial_state().commit
        self.stats.crashes += 1
        self._note(f"n{host.node_id} crashed ({kept})")
        if not self._quiet:
            self._push(
                self.now + rng.randint(2, 40) * TICK_STEPS, _RESTART, host.node_id, host.incarnation
            )

    def _on_crash(self, node: int, incarnation: int) -> None:
        host = self._hosts[node]
        if host.up and host.incarnation == incarnation and not self._quiet:
            self._crash(host)

    def _on_restart(self, node: int, incarnation: int) -> None:
        host = self._hosts[node]
        if not host.up and host.incarnation == incarnation:
            self._start(host)

    # -- Raft ----------------------------------------------------------------------------

    def _raft_state(self, host: _Host) -> RaftState:
        raft = host.raft
        assert raft is not None
        return RaftState(
            role=raft.role,
            term=raft.term,
            leader=node_of(raft.leader_id),
            last_index=raft.last_index,
            first_index=host.raft_storage.first_index(),
        )

    def _on_tick(self, node: int, _: Any) -> None:
        host = self._hosts[node]
        self._push(self.now + TICK_STEPS, _TICK, node)
        if host.raft is not None:
            host.raft.tick()
            self._after(host)

    def _on_raft_message(self, node: int, message: Message) -> None:
        host = self._hosts[node]
        if host.raft is None or self.network.is_cut(node_of(message.src), node):
            return
        core = host.core
        for ready in core.appends.offer(message) if core is not None else [message]:
            host.raft.step(ready)
        self._after(host)

    def _drain_raft(self, host: _Host) -> None:
        raft = host.raft
        while raft is not None and host.pending is None and raft.has_ready():
            ready = raft.ready()
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
            host.raft_storage.save(ready.hard_state, ready.entries, ready.snapshot)
            self._complete(host, ready)

    def _on_persisted(self, node: int, incarnation: int) -> None:
        host = self._hosts[node]
        ready = host.pending
        if host.incarnation != incarnation or ready is None:
            return
        host.pending = None
        host.raft_storage.save(ready.hard_state, ready.entries, ready.snapshot)
        host.synced_commit = host.raft_storage.initial_state().commit
        self._complete(host, ready)
        self._after(host)

    def _complete(self, host: _Host, ready: Ready) -> None:
        for message in ready.messages:
            src, dst = node_of(message.src), node_of(message.dst)
            for delay in self.network.delays(src, dst):
                self._push(self.now + delay, _RAFT_MSG, dst, message)
        core, raft = host.core, host.raft
        assert core is not None and raft is not None
        if ready.snapshot is not None:
            self.stats.snapshots_installed += 1
            core.snapshot(ready.snapshot.data)
        if ready.committed_entries:
            self._check_quorum_held(ready.committed_entries)
            before = core.applied_index
            core.committed(ready.committed_entries)
            if self.trace is not None:
                last = ready.committed_entries[-1].index
                self._note(
                    f"n{host.node_id} committed ..{last}: applied {before} -> {core.applied_index}"
                )
        raft.advance(ready)
        core.raft_changed(self._raft_state(host))

    def _check_quorum_held(self, entries: list[Entry]) -> None:
        """When an entry is first seen committed, a quorum of nodes must hold on disk
        every range it names (the leader proposes what it holds; followers take an append
        only once they hold its bytes): else losing the leader's disk would lose them."""
        fresh = [entry for entry in entries if entry.index > self._quorum_checked]
        if not fresh:
            return
        self._quorum_checked = fresh[-1].index
        for index, item in ranges_named(fresh):
            holders = [
                host.node_id
                for host in self._hosts
                if (copy := host.inputs.streams.get(item.stream)) is not None
                and copy.held >= item.end
            ]
            if len(holders) < self.quorum:
                self.checker.fail(
                    "committed unheld",
                    f"entry {index} names {item.stream} up to {item.end},"
                    f" held on disk by {holders} only",
                )

    # -- the core's actions --------------------------------------------------------------

    def _after(self, host: _Host) -> None:
        """Carry out everything the node asks for, until it asks for nothing more."""
        while host.core is not None:
            for append in host.core.appends.release():  # held positions may have moved
                host.raft.step(append)
            self._drain_raft(host)
            core = host.core
            if core is None:
                return
            actions = core.take_actions()
            if not actions:
                break
            for action in actions:
                self._act(host, action)
                if host.core is None:
                    return
        self._check_prune_point(host)
        self._schedule_core(host)

    def _check_prune_point(self, host: _Host) -> None:
        """The node's prune point never falls below what it held in this incarnation or
        its durable checkpoint holds, and is the one point of its applied index."""
        core = host.core
        assert core is not None
        pruned = core.merger.pruned_before
        if pruned < host.pruned_floor:
            self.checker.fail(
                "prune points",
                f"n{host.node_id}'s prune point went back from {_offset(host.pruned_floor)}"
                f" to {_offset(pruned)} (applied index {core.applied_index})",
            )
            return
        host.pruned_floor = pruned
        seen = (core.applied_index, pruned)
        if seen != host.prune_seen and not core.installing:
            host.prune_seen = seen
            self.checker.prune_state(
                host.node_id, core.applied_index, _offset(pruned), "between events"
            )

    def _act(self, host: _Host, action: Any) -> None:
        core, raft = host.core, host.raft
        assert core is not None and raft is not None
        if isinstance(action, Propose):
            self.stats.proposals += 1
            try:
                accepted = raft.propose(encode_ranges(action.ranges))
            except (ProposalDroppedError, RaftError):
                accepted = None
            if self.trace is not None:
                ranges = ", ".join(
                    f"{r.stream}[{r.start - BASE},{r.end - BASE})" for r in action.ranges
                )
                self._note(f"n{host.node_id} proposes {ranges}: {accepted}")
            core.proposed(accepted)
        elif isinstance(action, Gossip):
            for delay in self.network.delays(host.node_id, action.peer):
                self._push(self.now + delay, _GOSSIP, action.peer, (host.node_id, action))
        elif isinstance(action, SaveCheckpoint):
            checkpoint = action.checkpoint
            self.checker.prune_state(
                host.node_id,
                checkpoint.applied_index,
                _offset(checkpoint.pruned_before),
                "in a checkpoint",
            )
            host.checkpoint_queue.append(checkpoint)
            if len(host.checkpoint_queue) == 1:
                self._push(
                    self.now + self._disk_delay(), _CHECKPOINTED, host.node_id, host.incarnation
                )
        elif isinstance(action, Compact):
            # Stored later, in Raft's driver: a crash may come first.
            payload = (host.incarnation, action)
            self._push(self.now + self._disk_delay(), _SNAPSHOTTED, host.node_id, payload)
        elif isinstance(action, Fetch):
            self.stats.fetches += 1
            delay = self.rng.randint(2, 10)
            self._push(self.now + delay, _FETCHED, host.node_id, (host.incarnation, action))
        elif isinstance(action, CatchUpOut):
            self._push(
                self.now + self.rng.randint(2, 10),
                _CAUGHT_UP,
                host.node_id,
                (host.incarnation, action),
            )
        elif isinstance(action, PublishOut):
            pass  # memory has no buffer to write out and no readers to wake
        elif isinstance(action, Archive):
            self.stats.archives += 1
            self._note(f"n{host.node_id} archives {action.stream} before {action.position - BASE}")
            host.inputs.archive(action.stream, action.position)
        elif isinstance(action, PruneOut):
            if action.before > host.out.position:
                self.checker.fail(
                    "prune points",
                    f"n{host.node_id} collects before {_offset(action.before)}, past its merged"
                    f" log's end {_offset(host.out.position)}",
                )
            # Carried out in a worker thread: a crash may come first (asked again at start).
            payload = (host.incarnation, action)
            self._push(self.now + self._disk_delay(), _COLLECTED, host.node_id, payload)
        elif isinstance(action, EntryRefused | ApplyStalled):
            # Nodes that tell the truth propose only what every node can apply, and
            # memory never fails a read: a refusal or a stall here is a core's bug.
            self.checker.fail(
                "entry refused",
                f"n{host.node_id} {type(action).__name__} at {action.index}: {action.reason}",
            )
        else:
            raise TypeError(f"unknown action {action!r}")

    def _schedule_core(self, host: _Host) -> None:
        core = host.core
        if core is None:
            return
        due = max(self.now + 1, int(core.next_deadline() / STEP_SECONDS) + 1)
        if host.core_wake <= self.now or due < host.core_wake:
            host.core_wake = due
            self._push(due, _CORE, host.node_id, due)

    def _on_core_wake(self, node: int, due: int) -> None:
        host = self._hosts[node]
        if host.core is None or due != host.core_wake:
            return
        host.core_wake = -1
        host.core.tick(self._seconds())
        if host.core.next_deadline() <= self._seconds():
            # The node's timer would spin on a deadline that a tick does not move.
            self.checker.fail("core timer", f"n{node} names a deadline a tick does not pass")
            return
        self._after(host)

    def _on_snapshotted(self, node: int, payload: tuple[int, Compact]) -> None:
        host = self._hosts[node]
        incarnation, action = payload
        if host.incarnation != incarnation or host.core is None:
            return  # the node crashed first: the snapshot was never stored
        storage = host.raft_storage
        assert host.raft is not None
        if action.index > min(host.raft.commit_index, storage.last_index()):  # as the driver
            host.core.snapshot_refused(action.checkpoint)
            self._after(host)
            return
        try:
            storage.create_snapshot(action.index, action.checkpoint.encode())
        except SnapshotOutOfDateError:
            return
        cut = min(action.index - action.keep, host.raft.applied_index)  # as the driver does
        if cut - storage.first_index() >= action.keep:
            storage.compact(cut)
        self.stats.compactions += 1
        assert host.core is not None
        host.core.raft_changed(self._raft_state(host))
        host.core.snapshot_stored(action.checkpoint)
        self._after(host)

    def _on_collected(self, node: int, payload: tuple[int, PruneOut]) -> None:
        host = self._hosts[node]
        incarnation, action = payload
        if host.incarnation != incarnation or host.core is None:
            return  # the node crashed first: its core asks again at start
        if host.out.collect(action.before):
            self.stats.collections += 1
            self._note(
                f"n{node} collected its merged log before {_offset(host.out.collected)}"
                f" (asked before {_offset(action.before)})"
            )

    def _on_prune(self, _: int, __: Any) -> None:
        """Now and then a node that believes it leads proposes a Prune (Admin.Prune)."""
        if self._quiet:
            return
        rng, config = self.rng, self.config
        self._push(self.now + rng.randint(*config.prune_ticks) * TICK_STEPS, _PRUNE, 0)
        leaders = [h for h in self._hosts if h.raft is not None and h.raft.role is Role.LEADER]
        if not leaders:
            return
        host = rng.choice(leaders)
        assert host.core is not None and host.raft is not None
        end = host.out.position
        low = min(max(host.core.merger.pruned_before, BASE), end)
        if rng.random() < 0.2:
            before = end + rng.randint(1, 4 * config.out_file_bytes)  # the core clamps it
        else:
            before = rng.randint(low, end)
        try:
            accepted = host.raft.propose(encode_prune(before))
        except (ProposalDroppedError, RaftError):
            accepted = None
        if accepted is not None:
            self.stats.prunes += 1
        self._note(f"n{host.node_id} proposes a prune before {_offset(before)}: {accepted}")
        self._after(host)

    def _on_checkpointed(self, node: int, incarnation: int) -> None:
        host = self._hosts[node]
        if host.incarnation != incarnation or not host.checkpoint_queue:
            return
        checkpoint = host.checkpoint_queue.pop(0)
        self._note(f"n{node} checkpoint at {checkpoint.applied_index}: {checkpoint.watermarks}")
        # The merged log is synced first: the checkpoint says its bytes are on disk.
        host.out.durable = max(host.out.durable, checkpoint.out_position - BASE)
        host.checkpoint = checkpoint.encode()
        if host.checkpoint_queue:
            self._push(self.now + self._disk_delay(), _CHECKPOINTED, node, incarnation)
        assert host.core is not None
        host.core.checkpoint_saved(checkpoint)
        self._after(host)

    def _on_gossip(self, node: int, payload: tuple[int, Gossip]) -> None:
        host = self._hosts[node]
        src, gossip = payload
        if host.core is None or self.network.is_cut(src, node):
            return
        host.core.held(src, gossip.held, gossip.topics, gossip.done)
        self._after(host)

    def _link_up(self, a: int, b: int) -> bool:
        hosts, network = self._hosts, self.network
        return hosts[a].up and hosts[b].up and not network.is_cut(a, b) and not network.is_cut(b, a)

    def _on_fetched(self, node: int, payload: tuple[int, Fetch]) -> None:
        host = self._hosts[node]
        incarnation, fetch = payload
        if host.incarnation != incarnation or host.core is None:
            return
        if self._link_up(node, fetch.peer):
            source = self._hosts[fetch.peer].inputs.streams.get(fetch.stream)
            start = host.inputs.written(fetch.stream) or BASE
            if source is not None and start < source.archived:
                self.checker.fail(
                    "archived read",
                    f"n{node} fetches {fetch.stream} at {start - BASE} from n{fetch.peer},"
                    f" which archived before {source.archived - BASE}",
                )
            elif source is not None and source.written > start:
                # Peer.Fetch serves what the peer has written, synced or not.
                data = bytes(source.data[start - BASE :])
                ends = [end - (start - BASE) for end in source.ends if end > start - BASE]
                self._write_input(host, fetch.stream, fetch.topic, start, data, ends)
        if host.core is not None:
            host.core.fetch_ended(fetch.stream)
            self._after(host)

    def _on_caught_up(self, node: int, payload: tuple[int, CatchUpOut]) -> None:
        host = self._hosts[node]
        incarnation, action = payload
        if host.incarnation != incarnation or host.core is None:
            return
        if host.core.install_target != action.target:
            return  # a newer snapshot replaced the one this was for
        target, out = action.target, host.out
        peers = [p for p in range(self.config.nodes) if p != node and self._link_up(node, p)]
        self.rng.shuffle(peers)
        collected_past: list[int] = []
        for peer in [node, *peers]:  # this node's own merged log may reach the target
            source = self._hosts[peer].out
            if source.position < target:
                continue
            start = out.position
            if start < target:  # a Pull from the peer
                start = self._pull_start(source, start)
                if start > target:
                    collected_past.append(peer)
                    continue  # it collected past the snapshot's end: the catch-up fails over
                if start > out.position:
                    out.skip_to(start)
                    self.stats.collected_skips += 1
                    self._note(
                        f"n{node} goes on at {_offset(start)}: n{peer} collected its merged log"
                        " before it"
                    )
                if start < target:
                    out.append(source.read(start, target, f"n{node}"))  # the checker compares
            if out.collected > target:
                self.checker.fail(
                    "collected read",
                    f"n{node} would go on at {_offset(target)}, inside its collected files"
                    f" (collected before {_offset(out.collected)}): its log cannot reopen there",
                )
                return
            out.cut_to(target)
            out.durable = target - BASE
            host.core.out_caught_up(target, out)
            self._after(host)
            return
        if peers and set(peers) <= set(collected_past):
            # As the node does: install the newest of the peers' stored snapshots instead.
            snapshots = [self._hosts[p].raft_storage.snapshot() for p in peers]
            newest = max(snapshots, key=lambda snapshot: snapshot.index)
            if newest.data and host.core.install_newer(newest.data):
                self.stats.newer_installs += 1
                self._note(f"n{node} installs a peer's newer snapshot, at {newest.index}")
                self._after(host)
                return
        self._push(self.now + self.rng.randint(5, 20), _CAUGHT_UP, node, payload)

    def _pull_start(self, source: MemoryOut, start: int) -> int:
        """Where a Pull of ``source`` from ``start`` begins: there, or, if ``source``
        collected the files there, at its collected point (the real Pull answers
        "collected, go on at Q", and the catch-up goes on at Q)."""
        return max(start, source.collected)

    # -- input copies --------------------------------------------------------------------

    def _write_input(
        self, host: _Host, stream: str, topic: str, position: int, data: bytes, ends: list[int]
    ) -> None:
        problem = host.inputs.write(stream, topic, position, data, ends)
        if problem is not None:
            self.checker.fail("input copies", f"n{host.node_id} {problem}")
            return
        assert host.core is not None
        host.core.input_written(stream)
        if host.inputs.dirty and not host.syncing:
            host.syncing = True
            marks = host.inputs.start_sync()
            self._push(
                self.now + self._disk_delay(), _SYNCED, host.node_id, (host.incarnation, marks)
            )

    def _on_synced(self, node: int, payload: tuple[int, dict[str, int]]) -> None:
        host = self._hosts[node]
        incarnation, marks = payload
        if host.incarnation != incarnation or host.core is None:
            return
        host.syncing = False
        host.inputs.finish_sync(marks)
        host.core.held(node, host.inputs.held(), dict(host.inputs.topics))
        for index, publisher in enumerate(self._publishers):
            if publisher.stream in marks:
                self._reply(index, node, host.inputs.streams[publisher.stream].held)
        if host.inputs.dirty:
            host.syncing = True
            self._push(
                self.now + self._disk_delay(),
                _SYNCED,
                node,
                (incarnation, host.inputs.start_sync()),
            )
        self._after(host)

    # -- publishers ----------------------------------------------------------------------

    def _on_publish(self, _: int, __: Any) -> None:
        if self._quiet:
            return
        rng = self.rng
        self._push(self.now + rng.randint(1, 15), _PUBLISH, 0)
        publisher = rng.choice(self._publishers)
        for _ in range(rng.randint(1, 4)):
            topic, origin = publisher.key
            record_id = publisher.next_id
            payload = b"%s/%s/%d." % (topic.encode(), origin.encode(), record_id)
            # Padding follows the id, so an HA pair's records are the same bytes.
            record = encode_message(
                payload + b"x" * (record_id * 7 % 40),
                origin=origin,
                ts=record_id,
                id=record_id,
                codec=Codec.RAW,
                tags=(topic,),
            )
            publisher.log += record
            publisher.ends.append(len(publisher.log))
            publisher.next_id += 1
            self.stats.records += 1

    def _on_push(self, index: int, _: Any) -> None:
        publisher = self._publishers[index]
        self._push(self.now + self.rng.randint(2, 8), _PUSH, index)
        if publisher.single_ingress:
            targets = [publisher.ingress]
        else:
            targets = list(range(self.config.nodes))
        floor = publisher.acknowledged_position(self.quorum) if publisher.forgets else 0
        for node in targets:
            held = publisher.node_held[node] or BASE
            if held >= publisher.end:
                continue
            if (index, node) in self._cut_publishers or not self._hosts[node].up:
                if publisher.single_ingress and self.rng.random() < 0.3:
                    publisher.ingress = (publisher.ingress + 1) % self.config.nodes  # fail over
                continue
            if held < floor:
                # What the node needs only its peers still have: ask it where it stands
                # (a new push session's opening), sending nothing.
                data, ends = b"", []
            else:
                start = held - BASE
                data = bytes(publisher.log[start:])
                ends = [end - start for end in publisher.ends if end > start]
            self._push(
                self.now + self.rng.randint(1, 4), _PUSH_ARRIVES, node, (index, held, data, ends)
            )

    def _on_push_arrives(self, node: int, payload: tuple[int, int, bytes, list[int]]) -> None:
        index, position, data, ends = payload
        host = self._hosts[node]
        if host.core is None or (index, node) in self._cut_publishers:
            return
        publisher = self._publishers[index]
        if data:
            self._write_input(host, publisher.stream, publisher.topic, position, data, ends)
        else:  # an opening: the node answers with what it holds
            copy = host.inputs.streams.get(publisher.stream)
            self._reply(index, node, copy.held if copy is not None else 0)
        self._after(host)

    def _reply(self, index: int, node: int, held: int) -> None:
        if (index, node) not in self._cut_publishers:
            host = self._hosts[node]
            stream = self._publishers[index].stream
            replicated = host.core.view.quorum_held(stream) if host.core is not None else 0
            reply = (node, host.incarnation, held, replicated)
            self._push(self.now + self.rng.randint(1, 4), _REPLY, index, reply)

    def _on_reply(self, index: int, payload: tuple[int, int, int, int]) -> None:
        node, session, held, replicated = payload
        publisher = self._publishers[index]
        # A restarted node may hold less than it said before: replies of an earlier
        # session (a call that broke) no longer count, as with a real push link.
        if session > publisher.node_session[node]:
            publisher.node_session[node], publisher.node_held[node] = session, held
        elif session == publisher.node_session[node]:
            publisher.node_held[node] = max(publisher.node_held[node], held)
        publisher.replicated[node] = max(publisher.replicated[node], replicated)

    # -- faults --------------------------------------------------------------------------

    def _on_fault(self, _: int, __: Any) -> None:
        rng, network = self.rng, self.network
        next_fault = self.now + rng.randint(2, 15) * TICK_STEPS
        if next_fault < self.config.fault_ticks * TICK_STEPS:
            self._push(next_fault, _FAULT, 0)
        hosts = self._hosts
        up = [h for h in hosts if h.up]
        nodes = list(range(self.config.nodes))
        roll = rng.random()
        if roll < 0.15:
            if up:
                self._crash(rng.choice(up))
        elif roll < 0.22:
            if up:
                host = rng.choice(up)
                host.crash_during_write = True
        elif roll < 0.3:
            down = [h for h in hosts if not h.up]
            if down:
                self._start(rng.choice(down))
        elif roll < 0.4:
            leaders = [h for h in up if h.raft is not None and h.raft.role is Role.LEADER]
            if leaders:
                self._note(f"fault: leader {network.isolate(rng.choice(leaders).node_id, nodes)}")
        elif roll < 0.5:
            self._note(f"fault: {network.split_randomly(nodes)}")
        elif roll < 0.57:
            self._note(f"fault: {network.silence_one_way(nodes)}")
        elif roll < 0.67:
            index, node = rng.randrange(len(self._publishers)), rng.randrange(self.config.nodes)
            self._cut_publishers.add((index, node))
            self._note(f"fault: publisher {index} cut from n{node}")
        elif roll < 0.8:
            network.heal()
            self._cut_publishers.clear()
            self._note("fault: all links healed")
        else:
            self._note(f"fault: {network.change_profile()}")

    # -- the quiet phase -----------------------------------------------------------------

    def _on_quiet(self, _: int, __: Any) -> None:
        self._quiet = True
        self._quiet_start = self.now
        self.network.heal()
        self.network.calm()
        self._cut_publishers.clear()
        self._note("faults stop: links healed, network calm, all nodes up")
        for host in self._hosts:
            host.crash_during_write = False
            if not host.up:
                self._start(host)
        self._push(self.now + TICK_STEPS, _CHECK, 0)

    def _published(self) -> dict[TopicOrigin, int]:
        published: dict[TopicOrigin, int] = {}
        for publisher in self._publishers:
            published[publisher.key] = max(published.get(publisher.key, 0), publisher.next_id - 1)
        return {key: count for key, count in published.items() if count}

    def _on_check(self, _: int, __: Any) -> None:
        published = self._published()
        if self.checker.complete(published) and all(
            self.checker.is_whole(host.out.data, _offset(host.out.collected))
            for host in self._hosts
        ):
            self.stats.recovery_ticks = (self.now - self._quiet_start) // TICK_STEPS
            self.checker.check_end(published, self._acknowledged())
            self._done = True
            return
        if self.now - self._quiet_start >= self.config.quiet_ticks * TICK_STEPS:
            self.checker.check_end(published, self._acknowledged())
            self.checker.fail(
                "liveness",
                f"not merged everywhere {self.config.quiet_ticks} ticks after faults stopped: "
                f"{self._describe()}",
            )
            return
        self._push(self.now + TICK_STEPS, _CHECK, 0)

    def _acknowledged(self) -> dict[TopicOrigin, int]:
        acknowledged: dict[TopicOrigin, int] = {}
        for publisher in self._publishers:
            count = publisher.acknowledged(self.quorum)
            acknowledged[publisher.key] = max(acknowledged.get(publisher.key, 0), count)
        return acknowledged

    def _describe(self) -> str:
        parts = [f"published {self._published()}, merged {self.checker.merged}"]
        for host in self._hosts:
            core, raft = host.core, host.raft
            if core is None or raft is None:
                parts.append(f"n{host.node_id} down")
                continue
            parts.append(
                f"n{host.node_id} {raft.role.value} term {raft.term} commit {raft.commit_index}"
                f" applied {core.applied_index} out {len(host.out.data)}"
                f" collected {_offset(host.out.collected)}"
                f"{' installing' if core.installing else ''}"
            )
        return "; ".join(parts)
