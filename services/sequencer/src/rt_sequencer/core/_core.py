"""The sequencer's merge layer as a state machine: :class:`SequencerCore`.

Events go in as method calls, each with no I/O: the time (:meth:`tick`), Raft's
state after each Ready (:meth:`raft_changed`), committed entries and snapshots,
what each node holds (:meth:`held`, this node's own included), bytes arriving in
an input copy, and the results of the actions asked for earlier. What the driver
must do comes out of :meth:`take_actions` (see ``_types``): propose ranges, fetch
input bytes from a peer, publish appended records, save a checkpoint, compact the
Raft log, catch the merged log up for a snapshot, gossip held positions.
:meth:`next_deadline` says when the core next needs a tick.

The core reads input copies and appends to the merged log through the
interfaces of ``_merger``; the node gives it files, the simulator memory.

What it decides:

- **Proposals** (leader): for each stream, the range the leader holds itself beyond
  what is proposed (what it proposes it can read: no peer's word puts a range in the
  Raft log). A follower takes an append into its Raft log only once it holds the bytes
  its entries name (:class:`AppendHold`, ``appends``), so an entry commits only when a
  quorum holds its bytes, with no gossip round on the way. Proposals are pipelined,
  each range starting where the previous one of its stream ended, at most
  ``max_proposals_in_flight`` unapplied and at least ``proposal_spacing`` apart. A new
  leader first applies its whole log, so that its ranges start from the merge state
  every node will have; a change of term, a refused proposal or a refused entry starts
  over from there.
- **Apply**: committed entries in order, each whole, once every input byte it
  names is written here; missing bytes are fetched from the peer holding most. An entry
  no node can apply (``EntryError``: undecodable, a bad name, a range that does not
  continue the merge) is skipped on every node alike and reported
  (:class:`EntryRefused`); one whose input this node cannot read now waits, tried again
  every ``apply_retry`` (:class:`ApplyStalled`), and after ``apply_stall_limit`` the
  node stops (``fatal``): its restart opens its files afresh, and while it is down
  another node leads.
- **Backup path**: a stream a peer holds more of, whose push has been quiet for
  ``push_quiet``, is fetched.
- **Checkpoints** every ``checkpoint_interval`` when the merge moved; each saved
  checkpoint becomes Raft's snapshot (the Raft log is cut once that frees
  ``compaction_keep`` entries).
- **Snapshot install**: a snapshot ahead of the merge brings the merged log to its
  position from the peers, then takes its state and checkpoints it.
- **Gossip**: held positions to the leader within ``gossip_to_leader`` of a change,
  to followers within ``gossip_to_followers``, and to all every
  ``gossip_keepalive``; a stream's topic goes with the first state that names it.
  With them go the *done* positions: per stream, where both this node's durable
  checkpoint and its Raft snapshot have merged to, so that no restart of this node,
  nor a replay from its snapshot by a node that lost its state, reads the input
  before them again.
- **Retention of the merged log**: a committed :class:`Prune` entry moves the point
  before which the merged log's rolled files may go; every node applies it at the same
  index, so merged logs stay identical file for file. A node collects its files
  (:class:`PruneOut`) only before both that point and the end of the merged log in its
  stored Raft snapshot: whatever it restarts or installs from (its checkpoint, its
  snapshot, a peer's snapshot that peer can serve) then begins in a file still held.
  The collected point is asked for again after every restart and install.
- **Archival**: once every node is done with a stream's input before a position
  (the least of their done positions; a node not heard from holds it at 0), the
  input copies' whole files before it are dropped and the publisher is told it may
  drop its own (:class:`Archive`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..raft import Accepted, Entry, Role
from ._errors import EntryError, HalfAppliedError, InputError, MergeError
from ._hold import AppendHold
from ._merger import InputSource, MergedSink, Merger
from ._types import (
    NO_LEADER,
    Action,
    ApplyStalled,
    Archive,
    CatchUpOut,
    Checkpoint,
    Compact,
    EntryRefused,
    Fetch,
    Gossip,
    Propose,
    Prune,
    PruneOut,
    PublishOut,
    Range,
    SaveCheckpoint,
    decode_entry,
    ranges_named,
)
from ._view import ClusterView

__all__ = ["RaftState", "SequencerCore", "Timing"]

NEVER = math.inf


@dataclass(slots=True, frozen=True)
class Timing:
    """The core's intervals (seconds) and bounds."""

    proposal_spacing: float = 0.003
    max_proposals_in_flight: int = 16
    checkpoint_interval: float = 0.5
    #: Raft entries kept after a snapshot, so a follower that lags a little needs none.
    compaction_keep: int = 20_000
    backup_check_interval: float = 0.1
    push_quiet: float = 0.3
    fetch_retry: float = 0.1
    #: Not on the commit path (a follower's append waits for its bytes instead): what a
    #: quorum holds, for push replies, the backup path and archival.
    gossip_to_leader: float = 0.02
    gossip_to_followers: float = 0.05
    gossip_keepalive: float = 1.0
    #: An entry whose input this node could not read is tried again this often,
    apply_retry: float = 1.0
    #: and for this long at most: then the node stops (``SequencerCore.fatal``) rather
    #: than hold up the merge as a leader, or lag for good as a follower.
    apply_stall_limit: float = 30.0
    #: Raft's snapshot follows a checkpoint at most this often (or once ``compaction_keep``
    #: entries were applied since): each costs two fsyncs in Raft's driver.
    snapshot_interval: float = 5.0


@dataclass(slots=True, frozen=True)
class RaftState:
    """What the core needs to know of Raft, reported after every Ready."""

    role: Role = Role.FOLLOWER
    term: int = 0
    leader: int = NO_LEADER  #: node id (0-based) of the known leader
    last_index: int = 0
    first_index: int = 1  #: the first entry still in the Raft log


class SequencerCore:
    def __init__(
        self,
        node_id: int,
        node_count: int,
        *,
        inputs: InputSource,
        out: MergedSink,
        checkpoint: Checkpoint,
        snapshot: Checkpoint | None = None,
        now: float = 0.0,
        timing: Timing | None = None,
    ) -> None:
        """``checkpoint``: the merge state to go on from; ``snapshot``: what Raft's stored
        snapshot holds (None: no snapshot), which a replay from scratch starts from."""
        self.node_id = node_id
        self.timing = timing or Timing()
        self.now = now
        self.view = ClusterView(node_count)
        self.merger = Merger(inputs, out, checkpoint)
        self.raft = RaftState()
        self.saved = checkpoint  #: the last checkpoint known durable
        self._snapshot = snapshot or Checkpoint()  # what Raft's stored snapshot holds
        self._snapshot_asked = self._snapshot.applied_index  # the latest Compact's index
        self._next_snapshot = now
        self._archived: dict[str, int] = {}  # stream -> position Archive was asked for
        self.collected_before = 0  #: the latest PruneOut asked for
        self._actions: list[Action] = []
        # committed, not applied (an EntryError: an entry to refuse when its turn comes)
        self._pending: deque[tuple[int, list[Range] | Prune | EntryError]] = deque()
        self._apply_after = -math.inf  # an entry whose input could not be read waits
        self._stalled = ""  # why, as last reported
        self._stalled_since: float | None = None
        #: set when the merge cannot go on in this process (a HalfAppliedError, or an
        #: InputError past ``apply_stall_limit``): the driver stops it without a checkpoint
        self.fatal: MergeError | None = None
        self._installing: Checkpoint | None = None
        self._saving = False
        self._next_checkpoint = now + self.timing.checkpoint_interval
        # proposer
        self._proposed: dict[str, int] | None = None  # stream -> end of its last range
        #: streams whose own held end may be past ``_proposed`` (those whose held moved
        #: since they were last looked at): a proposal walks these, not every stream
        self._unproposed: set[str] = set()
        self._proposed_term = 0
        self._proposing: list[Range] | None = None  # asked for, not yet reported
        self._outstanding: list[int] = []  # last indexes of accepted, unapplied proposals
        self._next_proposal = now
        # backup path
        self._last_write: dict[str, float] = {}
        self._fetching: set[str] = set()  # streams with a Fetch under way
        self._fetch_after: dict[str, float] = {}
        self._next_backup_check = now
        self._behind: set[str] = set()  # streams a peer was heard holding more of
        # gossip
        self._own_held: dict[str, int] = {}
        self._own_done: dict[str, int] = self._done_now()
        self.view.update_done(node_id, self._own_done)
        self._own_topics: dict[str, str] = {}
        self._peers = [n for n in range(node_count) if n != node_id]
        self._sent: dict[int, tuple[dict[str, int], dict[str, int]]] = {
            p: ({}, {}) for p in self._peers
        }
        self._sent_at: dict[int, float] = {p: -NEVER for p in self._peers}
        #: The leader's APPEND, COMMIT and HEARTBEAT messages go through here before Raft
        #: steps them: the driver offers each and steps what comes out, and steps what
        #: ``release()`` gives after this node's held or merged positions move.
        self.appends = AppendHold(self._ranges_named, self._holds_input)
        self._prune_out(again=True)  # a crash may have come between the decision and files

    # -- queries -------------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        return self.merger.applied_index

    @property
    def installing(self) -> bool:
        return self._installing is not None

    @property
    def install_target(self) -> int | None:
        """Where the merged log must reach for the snapshot being installed, if any: a
        driver carries out only the :class:`CatchUpOut` that asks for it."""
        return None if self._installing is None else self._installing.out_position

    def checkpoint(self) -> Checkpoint | None:
        """The merge state now, for a last checkpoint at shutdown (None while a snapshot
        install owns the merged log, or once the merge cannot go on: ``fatal``)."""
        if self._installing is not None or self.fatal is not None:
            return None
        return self.merger.checkpoint()

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def next_deadline(self) -> float:
        """The time of the next :meth:`tick` the core needs (``inf``: none)."""
        timing = self.timing
        deadlines = [self._next_backup_check]
        if self.saved.applied_index > self._snapshot_asked and self._installing is None:
            deadlines.append(self._next_snapshot)
        if self._checkpoint_due():
            deadlines.append(self._next_checkpoint)
        if self._proposing is None and self._next_proposal > self.now:
            deadlines.append(self._next_proposal)  # a proposal held back by the spacing
        if self._pending and self._apply_after > self.now:
            deadlines.append(self._apply_after)  # an entry waiting on its input
        own = (self._own_held, self._own_done)
        for peer in self._peers:
            sent_at = self._sent_at[peer]
            if self._sent[peer] != own:
                deadlines.append(sent_at + self._gossip_interval(peer))
            deadlines.append(sent_at + timing.gossip_keepalive)
        return min(deadlines)

    # -- events --------------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """The time is ``now``: events that follow are stamped with it (no timer runs;
        :meth:`tick` runs them)."""
        self.now = max(self.now, now)

    def tick(self, now: float) -> None:
        self.advance(now)
        self._maybe_snapshot()
        if self.now >= self._next_backup_check:
            self._next_backup_check = self.now + self.timing.backup_check_interval
            self._check_backup()
        if self._pending and self.now >= self._apply_after:
            self._apply()
        self._maybe_checkpoint()
        self._gossip()
        self._maybe_propose()

    def raft_changed(self, state: RaftState) -> None:
        if state == self.raft:
            return  # most Readies move nothing the core looks at
        first_moved = state.first_index != self.raft.first_index
        self.raft = state
        if first_moved:
            self._refresh_done()
        if state.role is not Role.LEADER or state.term != self._proposed_term:
            self._proposed, self._outstanding = None, []
            self._proposed_term = state.term
        self._gossip()
        self._maybe_propose()

    def committed(self, entries: list[Entry]) -> None:
        """Raft committed ``entries`` (in index order, maybe some applied already)."""
        last = self._pending[-1][0] if self._pending else self.merger.applied_index
        if self._installing is not None:
            last = max(last, self._installing.applied_index)
        for entry in entries:
            if entry.index <= last:
                continue  # applied before a restart, or inside the snapshot being installed
            try:
                content: list[Range] | Prune | EntryError = decode_entry(entry.data)
            except EntryError as exc:
                content = exc  # refused when its turn comes, as on every node
            self._pending.append((entry.index, content))
            last = entry.index
        self._apply()

    def snapshot(self, data: bytes) -> None:
        """Raft handed over a snapshot (a checkpoint of a peer): if it is ahead of the
        merge, bring the merged log to its position, then take its state."""
        checkpoint = Checkpoint.decode(data)
        if checkpoint.applied_index > self._snapshot.applied_index:
            self._snapshot = checkpoint  # Raft stored it: a replay from scratch starts here
            self._snapshot_asked = max(self._snapshot_asked, checkpoint.applied_index)
            self._refresh_done()
            self._prune_out()
        self._install(checkpoint)

    def install_newer(self, data: bytes) -> bool:
        """While a snapshot install's merged-log catch-up finds every peer collected past
        its end: install ``data`` instead, a peer's stored snapshot (a checkpoint) newer
        than it. Raft did not store it, so it counts for nothing else; the merge state at
        its index is every node's. Returns whether it replaced the install."""
        checkpoint = Checkpoint.decode(data)
        if self._installing is None or checkpoint.applied_index <= self._installing.applied_index:
            return False
        self._install(checkpoint)
        return True

    def _install(self, checkpoint: Checkpoint) -> None:
        installing = self._installing.applied_index if self._installing is not None else 0
        if checkpoint.applied_index <= max(self.merger.applied_index, installing):
            return
        self._installing = checkpoint
        while self._pending and self._pending[0][0] <= checkpoint.applied_index:
            self._pending.popleft()
        self._proposed = None
        self._emit(CatchUpOut(checkpoint.out_position))

    def out_caught_up(self, target: int, out: MergedSink) -> None:
        """The merged log was brought to ``target`` (a :class:`CatchUpOut`'s); ``out``
        appends from there. A catch-up for a snapshot since replaced by a newer one
        changes nothing: the newer one's is on its way."""
        checkpoint = self._installing
        if checkpoint is None or target != checkpoint.out_position or out.position != target:
            return
        self._installing = None
        self.merger.out = out
        self.merger.restore(checkpoint)
        self._saving = True
        self._emit(SaveCheckpoint(self.merger.checkpoint()))
        self._prune_out(again=True)
        self._apply()

    def held(
        self,
        node: int,
        held: dict[str, int],
        topics: dict[str, str],
        done: dict[str, int] | None = None,
    ) -> None:
        """What ``node`` holds durably of each stream (gossip; this node's own from its
        input copies), the topics of streams it names, and (a peer's) done positions."""
        if done is not None and node != self.node_id:
            self._maybe_archive(self.view.update_done(node, done))
        if node == self.node_id:
            # Only streams whose topic this node knows are told to peers.
            self._own_topics.update(topics)
            if not held.keys() <= self._own_topics.keys():
                held = {s: end for s, end in held.items() if s in self._own_topics}
            self._own_held = held
            self.view.claim_topics(topics)  # this node's own word wins over gossip
        moved = self.view.update(node, held, topics)
        if node == self.node_id:
            self._unproposed |= moved
        if node != self.node_id and moved:
            written, peer_held = self.merger.inputs.written, self.view.held[node]
            self._behind.update(s for s in moved if peer_held.get(s, 0) > written(s))
        if node == self.node_id:
            self._gossip()
            if moved:
                self._maybe_propose()  # a leader proposes what it holds itself
        if moved:
            self._maybe_archive(moved)

    def input_written(self, stream: str) -> None:
        """Bytes were written to ``stream``'s input copy (by a push or a fetch)."""
        self._last_write[stream] = self.now
        if self._pending:
            self._apply()

    def proposed(self, accepted: Accepted | None) -> None:
        """The result of the last :class:`Propose`: where Raft put it, or None if it was
        refused."""
        ranges, self._proposing = self._proposing, None
        if ranges is None:
            return
        if accepted is None or accepted.term != self.raft.term or self._proposed is None:
            self._proposed, self._outstanding = None, []
        else:
            self._outstanding.append(accepted.last_index)
            for item in ranges:
                self._proposed[item.stream] = item.end
        # Spaced even when refused: Raft may no longer lead before it says so.
        self._next_proposal = self.now + self.timing.proposal_spacing
        self._maybe_propose()

    def fetch_ended(self, stream: str) -> None:
        """A :class:`Fetch` of ``stream`` ended (done, or failed)."""
        self._fetching.discard(stream)
        self._fetch_after[stream] = self.now + self.timing.fetch_retry
        if self._pending:
            self._apply()

    def checkpoint_saved(self, checkpoint: Checkpoint) -> None:
        self._saving = False
        if checkpoint.applied_index < self.saved.applied_index:
            return
        self.saved = checkpoint
        self._maybe_snapshot()
        self._refresh_done()

    def snapshot_stored(self, checkpoint: Checkpoint) -> None:
        """Raft stored ``checkpoint`` as its snapshot (a :class:`Compact` carried out):
        only now may this node say it is done with the input before it."""
        if checkpoint.applied_index > self._snapshot.applied_index:
            self._snapshot = checkpoint
            self._refresh_done()
            self._prune_out()

    def snapshot_refused(self, checkpoint: Checkpoint) -> None:
        """Raft could not store ``checkpoint`` yet: it has not committed its index here
        (the merge state came from a peer's newer snapshot). Ask again after
        ``snapshot_interval``."""
        if self._snapshot_asked == checkpoint.applied_index:
            self._snapshot_asked = self._snapshot.applied_index
            self._next_snapshot = self.now + self.timing.snapshot_interval

    def archive_failed(self, stream: str) -> None:
        """An :class:`Archive` of ``stream`` could not be carried out: ask again when its
        positions next move."""
        self._archived.pop(stream, None)

    # -- the merge -----------------------------------------------------------------------

    def _apply(self) -> None:
        if self._installing is not None or self.now < self._apply_after or self.fatal:
            return
        merger, pending = self.merger, self._pending
        applied = False
        while pending:
            index, ranges = pending[0]
            if isinstance(ranges, Prune):
                if merger.prune(index, ranges.before):
                    self._prune_out()
                pending.popleft()
                applied = True
                continue
            try:
                if isinstance(ranges, EntryError):
                    raise ranges
                merger.check(index, ranges)  # before fetching anything it names
                missing = merger.missing(ranges)
                if missing:
                    for item in missing:  # this node missed the bytes: the backup path
                        self._fetch(item.stream, item.end)
                    break
                merger.apply(index, ranges)
            except EntryError as exc:
                self._refuse(index, exc)
            except HalfAppliedError as exc:
                self.fatal = exc  # the driver stops; a restart goes on from the checkpoint
                break
            except InputError as exc:
                self._apply_after = self.now + self.timing.apply_retry
                if self._stalled_since is None:
                    self._stalled_since = self.now
                elif self.now - self._stalled_since >= self.timing.apply_stall_limit:
                    self.fatal = exc
                if str(exc) != self._stalled:
                    self._stalled = str(exc)
                    self._emit(ApplyStalled(index, str(exc), exc.stream))
                break
            pending.popleft()
            applied = True
        if applied:
            self._stalled, self._stalled_since = "", None
            self._emit(PublishOut())
            self._maybe_propose()

    def _refuse(self, index: int, error: EntryError) -> None:
        """Skip entry ``index``, as every node does; a leader proposes again from the
        merge state (its proposals may have counted on the entry)."""
        self.merger.skip(index)
        self._proposed, self._outstanding = None, []
        self._emit(EntryRefused(index, str(error)))

    def _prune_out(self, *, again: bool = False) -> None:
        """Collect the merged log before the retention point, no further than the stored
        snapshot's end (see the module docstring); ``again``: even if asked before."""
        point = min(self.merger.pruned_before, self._snapshot.out_position)
        if point > self.collected_before or (again and point):
            self.collected_before = max(self.collected_before, point)
            self._emit(PruneOut(point))

    def _checkpoint_due(self) -> bool:
        """A checkpoint is wanted (at ``_next_checkpoint``): the merge moved since the last
        one, none is being saved, and no install owns the merged log."""
        return (
            not self._saving
            and self._installing is None
            and self.fatal is None
            and self.merger.applied_index != self.saved.applied_index
        )

    def _maybe_checkpoint(self) -> None:
        if not self._checkpoint_due() or self.now < self._next_checkpoint:
            return
        self._saving = True
        self._next_checkpoint = self.now + self.timing.checkpoint_interval
        self._emit(SaveCheckpoint(self.merger.checkpoint()))

    # -- proposals -----------------------------------------------------------------------

    @staticmethod
    def _ranges_named(entries: Sequence[Entry]) -> list[tuple[int, str, int]]:
        return [(index, r.stream, r.end) for index, r in ranges_named(entries)]

    def _holds_input(self, stream: str, end: int) -> bool:
        """Whether this node holds ``stream`` on disk (or merged it) up to ``end``."""
        return self._own_held.get(stream, 0) >= end or self.merger.merged.get(stream, 0) >= end

    def _maybe_propose(self) -> None:
        raft = self.raft
        if raft.role is not Role.LEADER or self._proposing is not None:
            return
        merger = self.merger
        if self._proposed is None:
            if self._installing is not None or merger.applied_index < raft.last_index:
                return  # entries of earlier terms still to apply
            self._proposed = dict(merger.merged)
            self._proposed_term = raft.term
            self._unproposed = set(self._own_held)
        if self.now < self._next_proposal:
            return
        applied = merger.applied_index
        self._outstanding = [index for index in self._outstanding if index > applied]
        if len(self._outstanding) >= self.timing.max_proposals_in_flight:
            return
        proposed, own = self._proposed, self._own_held
        ranges = []
        for stream in sorted(self._unproposed):
            end = own.get(stream, 0)
            start = proposed.get(stream, 0)
            topic = self._topic_of(stream)
            if end <= start:
                self._unproposed.discard(stream)  # proposed up to its end
            elif topic is not None:
                ranges.append(Range(stream, start, end, topic))
        if ranges:
            self._proposing = ranges
            self._emit(Propose(ranges))

    # -- the backup path -----------------------------------------------------------------

    def _check_backup(self) -> None:
        """Streams a peer holds more of, while their push is quiet, are fetched. Only
        those a peer was heard holding more of are looked at (an idle stream costs
        nothing here)."""
        written = self.merger.inputs.written
        quiet_since = self.now - self.timing.push_quiet
        for stream in sorted(self._behind):  # sorted: the same order every run
            _, held = self.view.best_peer(stream, self.node_id)
            if held <= written(stream):
                self._behind.discard(stream)
            elif self._last_write.get(stream, -NEVER) < quiet_since:
                self._fetch(stream, held)

    def _fetch(self, stream: str, target: int) -> None:
        if stream in self._fetching or self.now < self._fetch_after.get(stream, -NEVER):
            return
        peer, held = self.view.best_peer(stream, self.node_id)
        if held <= self.merger.inputs.written(stream):
            return  # no peer is known to hold more yet: gossip will tell
        topic = self._topic_of(stream)
        if topic is None:
            return  # a stream is never created here under a guessed topic
        self._fetching.add(stream)
        self._emit(Fetch(stream, topic, peer, max(target, held)))

    def _topic_of(self, stream: str) -> str | None:
        """A stream's topic: as merged, else as heard; None while unknown."""
        return self.merger.topics.get(stream) or self.view.topics.get(stream)

    # -- archival ------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        """Raft's snapshot follows the durable checkpoint (a node that lost its state
        starts from it, so the input before it can be archived), every
        ``snapshot_interval``, or sooner once ``compaction_keep`` entries were applied."""
        saved, timing = self.saved, self.timing
        behind = saved.applied_index - self._snapshot_asked
        if behind <= 0 or self._installing is not None:
            return
        if self.now < self._next_snapshot and behind < timing.compaction_keep:
            return
        self._snapshot_asked = saved.applied_index
        self._next_snapshot = self.now + timing.snapshot_interval
        self._emit(Compact(saved, timing.compaction_keep))

    def _done_now(self) -> dict[str, int]:
        """Per stream, where both the durable checkpoint and Raft's snapshot merged to.
        Nothing while Raft's log still starts at its first entry: a node that lost its
        state would replay it from there, reading every input byte."""
        if self.raft.first_index <= 1:
            return {}
        snapshot = self._snapshot.merged
        return {
            stream: min(end, snapshot[stream])
            for stream, end in self.saved.merged.items()
            if stream in snapshot
        }

    def _refresh_done(self) -> None:
        done = self._done_now()
        if done == self._own_done:
            return
        self._own_done = done
        moved = self.view.update_done(self.node_id, done)
        self._gossip()
        self._maybe_archive(moved)

    def _maybe_archive(self, streams: Iterable[str]) -> None:
        """Archive what every node is done with, of ``streams`` (those whose positions
        just moved)."""
        view = self.view
        for stream in sorted(streams):
            position = view.archivable(stream)
            if position > self._archived.get(stream, 0):
                self._archived[stream] = position
                self._emit(Archive(stream, position))

    # -- gossip --------------------------------------------------------------------------

    def _gossip_interval(self, peer: int) -> float:
        timing = self.timing
        return timing.gossip_to_leader if peer == self.raft.leader else timing.gossip_to_followers

    def _gossip(self) -> None:
        own, now = (self._own_held, self._own_done), self.now
        keepalive = self.timing.gossip_keepalive
        for peer in self._peers:
            # Compared as next_deadline() names them, so a tick at a deadline passes it.
            sent, sent_at = self._sent[peer], self._sent_at[peer]
            if now >= sent_at + keepalive:
                topics = dict(self._own_topics)
            elif sent != own and now >= sent_at + self._gossip_interval(peer):
                topics = {s: self._own_topics[s] for s in own[0].keys() - sent[0].keys()}
            else:
                continue
            self._sent[peer], self._sent_at[peer] = own, now
            self._emit(Gossip(peer, own[0], topics, own[1]))

    def _emit(self, action: Action) -> None:
        self._actions.append(action)
