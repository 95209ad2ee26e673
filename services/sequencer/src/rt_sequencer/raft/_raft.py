"""The Raft protocol state machine: roles, terms, votes, replication and commit.

What it owns: :class:`Raft`. It reacts to ``tick()``, ``step(message)`` and proposals by
changing its state and queueing outgoing messages in ``msgs``; it never does I/O, reads
no clock and starts no thread. :class:`~rt_sequencer.raft.RaftNode` wraps it and turns
its state changes into Ready batches.

Beyond the Raft paper it implements pre-vote and check-quorum (so a node rejoining from a
partition cannot depose a healthy leader), fast log back-tracking on rejected appends,
snapshot install for lagging followers, and the flow control of ``_progress``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from ._config import Config
from ._errors import ConfigError, InvariantError, NoLeaderError, NotLeaderError
from ._log import RaftLog
from ._progress import Progress, ProgressState
from ._storage import Storage
from ._types import NO_NODE, Accepted, Entry, Message, MessageType, Role

_APPEND = MessageType.APPEND
_APPEND_RESPONSE = MessageType.APPEND_RESPONSE
_HEARTBEAT = MessageType.HEARTBEAT
_COMMIT = MessageType.COMMIT
_HEARTBEAT_RESPONSE = MessageType.HEARTBEAT_RESPONSE
_VOTE = MessageType.VOTE
_VOTE_RESPONSE = MessageType.VOTE_RESPONSE
_PRE_VOTE = MessageType.PRE_VOTE
_PRE_VOTE_RESPONSE = MessageType.PRE_VOTE_RESPONSE
_SNAPSHOT = MessageType.SNAPSHOT
#: What only a leader sends: a newer term in one makes its sender the leader known.
_FROM_LEADER = frozenset({_APPEND, _HEARTBEAT, _COMMIT, _SNAPSHOT})
#: What a leader sends while it leads (a stale one is answered with the newer term).
_LEADING = _FROM_LEADER - {_SNAPSHOT}
_PROPOSE = MessageType.PROPOSE
_REPLICATE = ProgressState.REPLICATE
_PROBE = ProgressState.PROBE
_LEADER = Role.LEADER


class _Tally(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


class Raft:
    def __init__(self, config: Config, storage: Storage) -> None:
        config.validate()
        self.id = config.node_id
        self.peers = tuple(sorted(config.peers))
        self.others = tuple(p for p in self.peers if p != self.id)
        self.quorum = len(self.peers) // 2 + 1
        self.rng = config.rng
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.pre_vote = config.pre_vote
        self.check_quorum = config.check_quorum
        self.max_size_per_msg = config.max_size_per_msg
        self.max_inflight = config.max_inflight
        self.forward_proposals = config.forward_proposals
        #: No votes, no campaigns: see Config.abstain. Ends by itself (_end_abstention);
        #: the driver keeps it across restarts until then.
        self.abstaining = config.abstain
        self.on_event = config.on_event
        self._name = config.node_name

        self.log = RaftLog(storage)
        hard_state = storage.initial_state()
        if hard_state.commit > self.log.last_index():
            raise InvariantError(
                f"stored commit {hard_state.commit} is beyond the stored log "
                f"(last index {self.log.last_index()})"
            )
        self.log.commit_to(hard_state.commit)
        if config.applied > self.log.committed:
            raise ConfigError(
                f"applied {config.applied} is beyond the stored commit {self.log.committed}"
            )
        self.log.applied = max(self.log.applied, config.applied)
        self.term = hard_state.term
        self.vote = hard_state.vote

        self.msgs: list[Message] = []
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.role = Role.FOLLOWER
        self.lead = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        # Proposals appended since the last broadcast. They go out together when the
        # driver next asks for a Ready, however many came in: batching for free.
        self.proposals_pending = False
        self._become_follower(self.term, NO_NODE)

    # -- events --------------------------------------------------------------------------

    def _note(self, text: str) -> None:
        if self.on_event is not None:
            self.on_event(f"{self._name(self.id)} {text}")

    # -- inputs --------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is _LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_election_timeout:
                self.election_elapsed = 0
                self.campaign()

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            self._expire_stuck_snapshots()
            if self.check_quorum and not self._quorum_recently_active():
                self._note(f"stepped down at term {self.term}: no quorum heard from")
                self._become_follower(self.term, NO_NODE)
                return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def campaign(self) -> None:
        if self.role is _LEADER or self.abstaining:
            return
        self._campaign(pre_vote=self.pre_vote)

    def propose(self, data: Iterable[bytes]) -> Accepted | None:
        """Append ``data`` as new entries if leader (returning where), forward them to
        the leader if one is known (returning None), else raise NoLeaderError."""
        if self.role is _LEADER:
            return self._append_proposals(data)
        if self.lead == NO_NODE:
            raise NoLeaderError(f"node {self.id} knows no leader at term {self.term}")
        if not self.forward_proposals:
            raise NotLeaderError(self.lead)
        entries = [Entry(0, 0, item) for item in data]
        self.msgs.append(Message(_PROPOSE, self.id, self.lead, 0, entries=entries))
        return None

    def step(self, m: Message) -> None:
        if m.type is _PROPOSE:
            self._step_forwarded_proposal(m)
            return
        if m.term > self.term:
            if (m.type is _VOTE or m.type is _PRE_VOTE) and self._in_lease():
                self._note(
                    f"ignored {m.type.name} from {self._name(m.src)} at term {m.term}: "
                    f"leader {self.lead} heard from recently"
                )
                return
            if m.type is _PRE_VOTE or (m.type is _PRE_VOTE_RESPONSE and not m.reject):
                # A pre-vote (or a grant of one) speaks of a term not yet started.
                pass
            elif m.type in _FROM_LEADER:
                self._become_follower(m.term, m.src)
            else:
                # Only a leader's message or a granted vote restarts the election timer
                # (Raft §5.2). Otherwise a node whose log is too old to win would, by
                # campaigning first, keep every other node from ever timing out.
                elapsed = self.election_elapsed
                self._become_follower(m.term, NO_NODE)
                self.election_elapsed = elapsed
        elif m.term < self.term:
            self._step_stale(m)
            return

        if m.type is _VOTE or m.type is _PRE_VOTE:
            self._handle_vote_request(m)
        elif self.role is _LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _in_lease(self) -> bool:
        """With check-quorum, a node that heard from a leader within the last election
        timeout (or is a leader with a quorum) keeps it: vote requests cannot depose it."""
        return (
            self.check_quorum
            and self.lead != NO_NODE
            and self.election_elapsed < self.election_timeout
        )

    def _step_stale(self, m: Message) -> None:
        if (self.check_quorum or self.pre_vote or self.abstaining) and m.type in _LEADING:
            # A leader of an older term. Our term may have grown while we were cut off
            # (or rejoining above our peers' terms) and, with pre-vote/check-quorum or
            # while we abstain from campaigns, nothing else would tell it: answer with
            # our term so it steps down and the cluster can converge.
            self.msgs.append(Message(_APPEND_RESPONSE, self.id, m.src, self.term))
        elif m.type is _PRE_VOTE:
            self.msgs.append(Message(_PRE_VOTE_RESPONSE, self.id, m.src, self.term, reject=True))

    # -- role changes --------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.lead = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )
        self.votes = {}
        self.progress = {}
        self.proposals_pending = False

    def _become_follower(self, term: int, lead: int) -> None:
        previous_role, previous_term = self.role, self.term
        self._reset(term)
        self.lead = lead
        self.role = Role.FOLLOWER
        if previous_role is not Role.FOLLOWER or previous_term != term:
            self._note(f"became follower at term {term}")

    def _become_pre_candidate(self) -> None:
        # Neither the term nor the vote changes: a pre-candidate that cannot win
        # leaves no trace on anyone.
        self.votes = {}
        self.progress = {}
        self.lead = NO_NODE
        self.role = Role.PRE_CANDIDATE
        self._note(f"became pre-candidate at term {self.term}")

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._note(f"became candidate at term {self.term}")

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.lead = self.id
        self.role = _LEADER
        last = self.log.last_index()
        for peer in self.peers:
            self.progress[peer] = Progress(last + 1, self.max_inflight)
        own = self.progress[self.id]
        own.match = last
        own.recent_active = True
        own.become_replicate()
        self._note(f"became leader at term {self.term}")
        # The no-op of the new term: entries of older terms commit only once an entry
        # of the current term does (Raft §5.4.2).
        self._append_entries([Entry(self.term, last + 1, b"")])

    # -- elections -----------------------------------------------------------------------

    def _campaign(self, pre_vote: bool) -> None:
        if pre_vote:
            self._become_pre_candidate()
            request, term = _PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            request, term = _VOTE, self.term
        if self._tally(self.id, True) is _Tally.WON:
            if pre_vote:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
            return
        last_index = self.log.last_index()
        last_term = self.log.term(last_index)
        for peer in self.others:
            self.msgs.append(
                Message(request, self.id, peer, term, log_term=last_term, index=last_index)
            )

    def _tally(self, voter: int, granted: bool) -> _Tally:
        self.votes.setdefault(voter, granted)
        grants = sum(1 for vote in self.votes.values() if vote)
        if grants >= self.quorum:
            return _Tally.WON
        if len(self.votes) - grants > len(self.peers) - self.quorum:
            return _Tally.LOST
        return _Tally.PENDING

    def _handle_vote_request(self, m: Message) -> None:
        response = _VOTE_RESPONSE if m.type is _VOTE else _PRE_VOTE_RESPONSE
        can_vote = (
            self.vote == m.src
            or (self.vote == NO_NODE and self.lead == NO_NODE)
            or (m.type is _PRE_VOTE and m.term > self.term)
        )
        if can_vote and not self.abstaining and self.log.is_up_to_date(m.index, m.log_term):
            self._note(f"granted {m.type.name} to {self._name(m.src)} at term {m.term}")
            self.msgs.append(Message(response, self.id, m.src, m.term))
            if m.type is _VOTE:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._note(f"rejected {m.type.name} from {self._name(m.src)} at term {m.term}")
            self.msgs.append(Message(response, self.id, m.src, self.term, reject=True))

    # -- candidate -----------------------------------------------------------------------

    def _step_candidate(self, m: Message) -> None:
        kind = m.type
        if kind is _APPEND:
            self._become_follower(m.term, m.src)
            self._handle_append(m)
        elif kind is _HEARTBEAT:
            self._become_follower(m.term, m.src)
            self._handle_heartbeat(m)
        elif kind is _COMMIT:
            self._become_follower(m.term, m.src)
            self._handle_commit(m)
        elif kind is _SNAPSHOT:
            self._become_follower(m.term, m.src)
            self._handle_snapshot(m)
        elif (kind is _VOTE_RESPONSE and self.role is Role.CANDIDATE) or (
            kind is _PRE_VOTE_RESPONSE and self.role is Role.PRE_CANDIDATE
        ):
            result = self._tally(m.src, not m.reject)
            if result is _Tally.WON:
                if self.role is Role.PRE_CANDIDATE:
                    self._campaign(pre_vote=False)
                else:
                    self._become_leader()
                    self._broadcast_append()
            elif result is _Tally.LOST:
                self._become_follower(self.term, NO_NODE)

    # -- follower ------------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        kind = m.type
        if kind is _APPEND:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif kind is _HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_heartbeat(m)
        elif kind is _COMMIT:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_commit(m)
        elif kind is _SNAPSHOT:
            self.election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m)
        if self.abstaining:
            self._end_abstention()

    def _end_abstention(self) -> None:
        """A leader of this term committed an entry of its term that this log holds: every
        entry committed before it is here too, among them any this node acknowledged
        before it lost its state. Its word counts again."""
        log = self.log
        if self.lead != NO_NODE and log.committed and log.term_or_zero(log.committed) == self.term:
            self.abstaining = False
            self._note(f"caught up at index {log.committed} of term {self.term}: votes again")

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self.msgs.append(
                Message(_APPEND_RESPONSE, self.id, m.src, self.term, index=log.committed)
            )
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.msgs.append(Message(_APPEND_RESPONSE, self.id, m.src, self.term, index=last_new))
            return
        # Tell the leader the latest entry that may match, so it skips a whole
        # conflicting term per round trip instead of one entry.
        hint_index, hint_term = log.find_conflict_by_term(
            min(m.index, log.last_index()), m.log_term
        )
        self.msgs.append(
            Message(
                _APPEND_RESPONSE,
                self.id,
                m.src,
                self.term,
                log_term=hint_term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
            )
        )

    def _handle_commit(self, m: Message) -> None:
        """An empty APPEND that wants no answer: the commit index is taken up to the
        entry it names, if this log holds that entry (so the prefix is the leader's)."""
        log = self.log
        if log.match_term(m.index, m.log_term):
            log.commit_to(min(m.commit, m.index))

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(m.commit)
        self.msgs.append(Message(_HEARTBEAT_RESPONSE, self.id, m.src, self.term))

    def _handle_snapshot(self, m: Message) -> None:
        snapshot = m.snapshot
        if snapshot is None:
            raise InvariantError(f"SNAPSHOT message from {m.src} without a snapshot")
        log = self.log
        if snapshot.index <= log.committed:
            index = log.committed
        elif log.match_term(snapshot.index, snapshot.term):
            # Our log already holds the snapshot's last entry: just commit up to it.
            log.commit_to(snapshot.index)
            index = log.committed
        else:
            self._note(f"restoring snapshot at {snapshot.index} (term {snapshot.term})")
            log.restore(snapshot)
            index = log.last_index()
        self.msgs.append(Message(_APPEND_RESPONSE, self.id, m.src, self.term, index=index))

    # -- leader --------------------------------------------------------------------------

    def _step_forwarded_proposal(self, m: Message) -> None:
        if not self.forward_proposals:
            # No node of this cluster forwards any: whatever sent it, the leader's own
            # checks never saw its entries.
            self._note(f"dropped {len(m.entries)} proposal(s) from {self._name(m.src)}")
        elif self.role is _LEADER:
            if m.entries:
                self._append_proposals(entry.data for entry in m.entries)
        else:
            # Forwarding again could bounce between nodes with stale leaders.
            self._note(
                f"dropped {len(m.entries)} proposal(s) forwarded by {self._name(m.src)}: not leader"
            )

    def _append_proposals(self, data: Iterable[bytes]) -> Accepted:
        term = self.term
        first = self.log.last_index() + 1
        entries = [Entry(term, index, item) for index, item in enumerate(data, first)]
        self._append_entries(entries)
        self.proposals_pending = True
        return Accepted(term, first, entries[-1].index)

    def _append_entries(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        own = self.progress[self.id]
        last = entries[-1].index
        own.match = last
        own.next = last + 1
        if self.quorum == 1:
            self._maybe_commit()

    def flush_proposals(self) -> None:
        """Send appended proposals, as many APPENDs per follower as its window allows."""
        if self.proposals_pending:
            self.proposals_pending = False
            send_append = self._send_append
            for peer in self.others:
                while send_append(peer, send_empty=False):
                    pass

    def _step_leader(self, m: Message) -> None:
        kind = m.type
        if kind is _APPEND_RESPONSE:
            self._handle_append_response(m)
        elif kind is _HEARTBEAT_RESPONSE:
            self._handle_heartbeat_response(m)

    def _handle_append_response(self, m: Message) -> None:
        progress = self.progress.get(m.src)
        if progress is None:
            return
        progress.recent_active = True
        if m.reject:
            match_hint = m.reject_hint
            if m.log_term > 0:
                match_hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if progress.maybe_decrease_to(m.index, match_hint):
                if progress.state is _REPLICATE:
                    progress.become_probe()
                self._send_append(m.src, send_empty=True)
            return
        was_paused = progress.is_paused()
        if not progress.maybe_update(m.index) and not (
            progress.match == m.index and progress.state is _PROBE
        ):
            return
        state = progress.state
        if state is _PROBE:
            progress.become_replicate()
        elif state is _REPLICATE:
            progress.inflights.free_up_to(m.index)
        elif progress.match + 1 >= self.log.first_index():
            # The follower installed the snapshot (or caught up otherwise).
            progress.become_replicate()
        if self._maybe_commit():
            self._broadcast_commit()
        elif was_paused:
            self._send_append(m.src, send_empty=True)
        while self._send_append(m.src, send_empty=False):
            pass

    def _handle_heartbeat_response(self, m: Message) -> None:
        progress = self.progress.get(m.src)
        if progress is None:
            return
        progress.recent_active = True
        progress.probe_sent = False
        if progress.state is _REPLICATE and progress.inflights.full():
            # An APPEND may have been lost: free a slot so the next one (rejected if
            # there is a gap) finds out.
            progress.inflights.free_first()
        if progress.match < self.log.last_index() or progress.state is _PROBE:
            self._send_append(m.src, send_empty=True)

    def _maybe_commit(self) -> bool:
        matches = sorted((p.match for p in self.progress.values()), reverse=True)
        return self.log.maybe_commit(matches[self.quorum - 1], self.term)

    def _broadcast_append(self) -> None:
        for peer in self.others:
            self._send_append(peer, send_empty=True)

    def _broadcast_commit(self) -> None:
        """Tell every follower the commit index moved: with the entries it lacks, or
        as a COMMIT naming the last entry sent to it (an empty APPEND it does not answer:
        the answer would tell the leader nothing new) while replicating to it, or as an
        empty APPEND while it is probed."""
        log = self.log
        for peer in self.others:
            if self._send_append(peer, send_empty=False):
                continue
            progress = self.progress[peer]
            last_sent = progress.next - 1
            if (
                progress.state is _REPLICATE
                and not progress.is_paused()
                and last_sent >= log.first_index() - 1
            ):
                self.msgs.append(
                    Message(
                        _COMMIT,
                        self.id,
                        peer,
                        self.term,
                        log.term(last_sent),
                        last_sent,
                        commit=log.committed,
                    )
                )
            else:
                self._send_append(peer, send_empty=True)

    def _send_append(self, to: int, send_empty: bool) -> bool:
        """Send ``to`` the entries it lacks (or a snapshot) if its flow allows."""
        progress = self.progress[to]
        if progress.is_paused():
            return False
        log = self.log
        if progress.next < log.first_index():
            return self._send_snapshot(to, progress)
        prev_index = progress.next - 1
        prev_term = log.term(prev_index)
        entries = log.entries_from(progress.next, self.max_size_per_msg)
        if not entries and not send_empty:
            return False
        self.msgs.append(
            Message(
                _APPEND,
                self.id,
                to,
                self.term,
                prev_term,
                prev_index,
                entries,
                log.committed,
            )
        )
        progress.sent_entries(len(entries), prev_index + len(entries))
        return True

    def _send_snapshot(self, to: int, progress: Progress) -> bool:
        if not progress.recent_active:
            return False
        snapshot = self.log.snapshot()
        if snapshot.index == 0:
            raise InvariantError(f"follower {to} needs compacted entries but no snapshot exists")
        self._note(f"sending snapshot at {snapshot.index} to {self._name(to)}")
        self.msgs.append(Message(_SNAPSHOT, self.id, to, self.term, snapshot=snapshot))
        progress.become_snapshot(snapshot.index)
        return True

    def _broadcast_heartbeat(self) -> None:
        committed = self.log.committed
        for peer in self.others:
            # Never tell a follower to commit past what it is known to hold.
            commit = min(self.progress[peer].match, committed)
            self.msgs.append(Message(_HEARTBEAT, self.id, peer, self.term, commit=commit))

    def _quorum_recently_active(self) -> bool:
        active = 0
        for peer, progress in self.progress.items():
            if peer == self.id or progress.recent_active:
                active += 1
            progress.recent_active = peer == self.id
        return active >= self.quorum

    def _expire_stuck_snapshots(self) -> None:
        """A snapshot unanswered for a whole election timeout is taken as lost: probe
        again, which sends a fresh snapshot if the follower still needs one."""
        for progress in self.progress.values():
            if progress.state is ProgressState.SNAPSHOT:
                if progress.snapshot_overdue:
                    progress.become_probe()
                else:
                    progress.snapshot_overdue = True
