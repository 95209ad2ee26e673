"""The merge core on its own: events in, actions out, with in-memory storage."""

from __future__ import annotations

import pytest

from rt_sequencer.core import (
    ApplyStalled,
    CatchUpOut,
    Checkpoint,
    Compact,
    EntryRefused,
    Fetch,
    Gossip,
    HalfAppliedError,
    MergeError,
    Merger,
    Propose,
    PublishOut,
    RaftState,
    Range,
    SaveCheckpoint,
    SequencerCore,
    Timing,
    encode_ranges,
)
from rt_sequencer.nodesim._storage import MemoryInputs, MemoryOut
from rt_sequencer.raft import Accepted, Entry, Message, MessageType, Role
from rtcommon.log import Codec, encode_message, file_start, scan

BASE = file_start(1, 0)


def records(origin: str, ids, topic: str = "t") -> tuple[bytes, list[int]]:
    data, ends = b"", []
    for i in ids:
        data += encode_message(
            b"m%d" % i, origin=origin, ts=i, id=i, codec=Codec.RAW, tags=(topic,)
        )
        ends.append(len(data))
    return data, ends


def push(inputs: MemoryInputs, stream: str, topic: str, origin: str, ids) -> int:
    data, ends = records(origin, ids, topic)
    assert inputs.write(stream, topic, inputs.written(stream) or BASE, data, ends) is None
    inputs.finish_sync(inputs.start_sync())
    return inputs.written(stream)


def merged_ids(out: MemoryOut) -> list[tuple[str, int]]:
    found, _, _, _, _ = scan(bytes(out.data), 0, BASE)
    return [(r.origin, r.id) for r in found]


def new_core(
    node_id: int = 0, nodes: int = 3, **timing
) -> tuple[SequencerCore, MemoryInputs, MemoryOut]:
    inputs, out = MemoryInputs(BASE), MemoryOut(BASE, lambda offset, data: None)
    core = SequencerCore(
        node_id, nodes, inputs=inputs, out=out, checkpoint=Checkpoint(), timing=Timing(**timing)
    )
    return core, inputs, out


def of_type(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


# -- the merger -----------------------------------------------------------------------------


def test_dedup_is_per_topic_and_shared_by_the_streams_of_a_topic() -> None:
    inputs, out = MemoryInputs(BASE), MemoryOut(BASE, lambda offset, data: None)
    a = push(inputs, "h1.trades.dedup", "trades.dedup", "host", range(1, 6))
    b = push(inputs, "h2.trades.dedup", "trades.dedup", "host", range(3, 9))
    q = push(inputs, "h1.quotes.dedup", "quotes.dedup", "host", range(1, 6))
    merger = Merger(inputs, out, Checkpoint())
    merger.apply(1, [Range("h1.trades.dedup", 0, a, "trades.dedup")])
    merger.apply(2, [Range("h2.trades.dedup", 0, b, "trades.dedup")])
    merger.apply(3, [Range("h1.quotes.dedup", 0, q, "quotes.dedup")])
    assert merged_ids(out) == [("host", i) for i in [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5]]
    state = merger.checkpoint()
    assert state.watermarks == {"trades.dedup": {"host": 8}, "quotes.dedup": {"host": 5}}
    assert state.dropped == {"trades.dedup": {"host": 3}}
    # Records merged per stream: what each stream brought, past the dedup filter.
    assert merger.records_merged == {
        "h1.trades.dedup": 5,
        "h2.trades.dedup": 3,
        "h1.quotes.dedup": 5,
    }


def test_an_entry_is_applied_whole_or_not_at_all() -> None:
    inputs, out = MemoryInputs(BASE), MemoryOut(BASE, lambda offset, data: None)
    a = push(inputs, "a", "a.dedup", "o", range(1, 4))
    merger = Merger(inputs, out, Checkpoint())
    before = merger.checkpoint()
    with pytest.raises(MergeError, match="does not continue"):
        merger.apply(1, [Range("a", 0, a, "a.dedup"), Range("b", 5, 9, "b")])
    with pytest.raises(MergeError, match="topic"):
        merger.apply(1, [Range("a", 0, a, "a.dedup"), Range("a", a, a, "other")])
    assert merger.checkpoint() == before and out.data == b""
    with pytest.raises(MergeError, match="after applied index"):
        merger.apply(2, [])


# -- proposals ------------------------------------------------------------------------------


def lead(core: SequencerCore, term: int = 1, last_index: int = 0) -> None:
    core.raft_changed(RaftState(role=Role.LEADER, term=term, leader=0, last_index=last_index))


def test_a_leader_proposes_what_it_holds_with_each_streams_topic() -> None:
    """No gossip round first: the followers' appends wait for the bytes instead."""
    core, inputs, _ = new_core(proposal_spacing=0.01)
    lead(core)
    end = push(inputs, "h.feed", "feed", "o", range(1, 4))
    core.held(1, {"h.feed": end}, {"h.feed": "feed"})
    assert not of_type(core.take_actions(), Propose)  # a peer's word alone proposes nothing
    core.held(0, {"h.feed": end - 10}, {"h.feed": "feed"})
    (proposal,) = of_type(core.take_actions(), Propose)
    assert proposal.ranges == [Range("h.feed", 0, end - 10, "feed")]
    core.proposed(Accepted(1, 2, 2))
    core.held(0, {"h.feed": end}, {})
    assert not of_type(core.take_actions(), Propose)  # spaced
    core.tick(0.02)
    (proposal,) = of_type(core.take_actions(), Propose)
    assert proposal.ranges == [Range("h.feed", end - 10, end, "feed")]  # pipelined
    core.proposed(None)  # refused: starts over from the merge state, after the spacing
    core.tick(0.025)
    assert not of_type(core.take_actions(), Propose)
    core.tick(0.04)
    (proposal,) = of_type(core.take_actions(), Propose)
    assert proposal.ranges == [Range("h.feed", 0, end, "feed")]


def append(term: int, index: int, ranges: list[Range], commit: int = 0) -> Message:
    entry = Entry(term, index, encode_ranges(ranges))
    return Message(MessageType.APPEND, 1, 2, term, term, index - 1, [entry], commit)


def test_a_follower_takes_an_append_once_it_holds_the_bytes_it_names() -> None:
    core, inputs, _ = new_core(node_id=1)
    end = push(inputs, "s", "s", "o", range(1, 4))
    first = append(1, 1, [Range("s", 0, end - 10, "s")])
    second = append(1, 2, [Range("s", end - 10, end, "s")])
    heartbeat = Message(MessageType.HEARTBEAT, 1, 2, 1)
    notice = Message(MessageType.COMMIT, 1, 2, 1, 1, 2)
    assert core.appends.offer(first) == []  # nothing held here yet: it waits
    assert core.appends.offer(heartbeat) == [heartbeat]  # heartbeats pass
    assert core.appends.offer(second) == []  # behind the first, in order
    assert core.appends.offer(notice) == []  # a commit notice too: it names entry 2
    core.held(1, {"s": end - 10}, {"s": "s"})
    assert core.appends.release() == [first]
    core.held(1, {"s": end}, {"s": "s"})
    assert core.appends.release() == [second, notice]
    # Committed already (at or below the leader's commit): a quorum held its bytes.
    old = append(1, 3, [Range("t", 0, 99, "t")], commit=3)
    assert core.appends.offer(old) == [old]


def test_a_commit_the_leader_sends_later_frees_an_append_waiting_for_bytes() -> None:
    """Bytes this node may never hold (archived, pruned, a disk that failed): once any
    message of the leader says the entry committed, a quorum held them."""
    core, _, _ = new_core(node_id=1)
    waiting = append(1, 1, [Range("s", 0, 50, "s")])
    assert core.appends.offer(waiting) == []
    resent = append(1, 1, [Range("s", 0, 50, "s")], commit=1)
    assert core.appends.offer(resent) == [waiting, resent]


def test_a_newer_leader_s_append_drops_the_stale_ones_waiting() -> None:
    core, _, _ = new_core(node_id=1)
    stale = append(1, 1, [Range("s", 0, 50, "s")])
    assert core.appends.offer(stale) == []
    newer = append(2, 1, [Range("s", 0, 50, "s")])
    assert core.appends.offer(newer) == []
    assert len(core.appends) == 1  # the term-1 append went: its leader is gone
    late = append(1, 2, [Range("s", 50, 60, "s")])
    (passed,) = core.appends.offer(late)
    assert passed.entries == () and passed.index == late.index  # without what it names


def test_a_new_leader_applies_its_log_before_proposing() -> None:
    core, inputs, _ = new_core()
    end = push(inputs, "s", "s", "o", range(1, 3))
    for node in range(3):
        core.held(node, {"s": end}, {"s": "s"})
    lead(core, last_index=2)
    assert not of_type(core.take_actions(), Propose)
    core.committed([Entry(1, 1, encode_ranges([Range("s", 0, end, "s")])), Entry(1, 2, b"")])
    assert of_type(core.take_actions(), PublishOut)
    push(inputs, "s", "s", "o", range(3, 4))
    for node in range(3):
        core.held(node, inputs.held(), {})
    (proposal,) = of_type(core.take_actions(), Propose)
    assert proposal.ranges[0].start == end  # from where the merge stands


# -- the backup path ------------------------------------------------------------------------


def test_a_committed_range_missing_here_is_fetched_and_then_applied() -> None:
    core, inputs, out = new_core()
    source = MemoryInputs(BASE)
    end = push(source, "s", "s", "o", range(1, 5))
    core.held(2, {"s": end}, {"s": "s"})
    core.committed([Entry(1, 1, encode_ranges([Range("s", 0, end, "s")]))])
    (fetch,) = of_type(core.take_actions(), Fetch)
    assert (fetch.stream, fetch.topic, fetch.peer, fetch.target) == ("s", "s", 2, end)
    core.committed([])
    assert not of_type(core.take_actions(), Fetch)  # one fetch per stream at a time
    data = bytes(source.streams["s"].data)
    inputs.write("s", "s", BASE, data, source.streams["s"].ends)
    core.input_written("s")
    assert core.applied_index == 1 and merged_ids(out) == [("o", i) for i in range(1, 5)]


def test_a_stream_of_unknown_topic_is_neither_fetched_nor_proposed() -> None:
    core, _, _ = new_core(push_quiet=0.0)
    lead(core)
    core.held(1, {"s": BASE + 100}, {})  # the state that named its topic was lost
    core.held(2, {"s": BASE + 100}, {})
    core.tick(1.0)
    assert not of_type(core.take_actions(), Fetch | Propose)
    core.held(1, {"s": BASE + 100}, {"s": "s.dedup"})  # a keepalive brings it
    core.held(2, {"s": BASE + 100}, {})
    core.tick(2.0)
    (fetch,) = of_type(core.take_actions(), Fetch)
    assert fetch.topic == "s.dedup"
    # Proposed once the leader holds it itself (the fetch brought it), with its topic.
    core.held(0, {"s": BASE + 100}, {"s": "s.dedup"})
    assert of_type(core.take_actions(), Propose)[0].ranges[0].topic == "s.dedup"


def test_a_leader_proposes_no_further_than_it_holds_itself() -> None:
    """Issue 14 #2: peers' word alone (two followers claiming 10**18) puts nothing in
    the Raft log that the leader could not read."""
    core, inputs, _ = new_core()
    lead(core)
    end = push(inputs, "h.feed", "feed", "o", range(1, 4))
    core.held(0, inputs.held(), {"h.feed": "feed"})
    core.held(1, {"h.feed": 10**18}, {"h.feed": "feed"})
    core.held(2, {"h.feed": 10**18}, {"h.feed": "feed"})
    (proposal,) = of_type(core.take_actions(), Propose)
    assert proposal.ranges == [Range("h.feed", 0, end, "feed")]


def test_an_entry_no_node_can_apply_is_skipped_alike_and_reported() -> None:
    """Issue 14 #1 and #9: garbage, a name that is no stream, a range that does not
    continue the merge: each is passed over at its index (as on every node), and the
    entries after it apply; the node does not stop."""
    core, inputs, out = new_core()
    end = push(inputs, "s", "s", "o", range(1, 3))
    core.committed(
        [
            Entry(1, 1, b"\xc1garbage"),
            Entry(1, 2, encode_ranges([Range("..", 0, 10, "s")])),
            Entry(1, 3, encode_ranges([Range("s", 5, end, "s")])),
            Entry(1, 4, encode_ranges([Range("s", 0, end, "s")])),
        ]
    )
    refused = of_type(core.take_actions(), EntryRefused)
    assert [r.index for r in refused] == [1, 2, 3]
    assert "not a stream" in refused[1].reason and "does not continue" in refused[2].reason
    assert core.applied_index == 4
    assert merged_ids(out) == [("o", 1), ("o", 2)]


class FailingInputs(MemoryInputs):
    """Input copies whose reads fail while ``failing`` (a file that cannot be opened)."""

    failing = True

    def read(self, stream, start, end):
        if self.failing:
            raise OSError(24, "Too many open files")
        return super().read(stream, start, end)


class FailingOut(MemoryOut):
    """A merged log whose second append of an entry fails (a roll that cannot open)."""

    appends = 0

    def append(self, data: bytes) -> None:
        self.appends += 1
        if self.appends == 2:
            raise OSError(24, "Too many open files")
        super().append(data)


def test_an_entry_whose_input_cannot_be_read_waits_and_is_tried_again() -> None:
    inputs = FailingInputs(BASE)
    out = MemoryOut(BASE, lambda offset, data: None)
    core = SequencerCore(0, 3, inputs=inputs, out=out, checkpoint=Checkpoint())
    end = push(inputs, "s", "s", "o", range(1, 3))
    core.committed([Entry(1, 1, encode_ranges([Range("s", 0, end, "s")]))])
    (stalled,) = of_type(core.take_actions(), ApplyStalled)
    assert stalled.index == 1 and "Too many open files" in stalled.reason
    inputs.failing = False
    core.tick(Timing().apply_retry - 0.01)  # not before the retry is due
    assert core.applied_index == 0 and not of_type(core.take_actions(), ApplyStalled)
    core.tick(Timing().apply_retry)
    assert core.applied_index == 1 and merged_ids(out) == [("o", 1), ("o", 2)]


def test_a_node_stuck_on_an_entry_stops_after_the_stall_limit() -> None:
    """A leader whose input cannot be read holds up every node's merge: past
    apply_stall_limit the core asks to stop (the restart opens files afresh, and another
    node leads meanwhile)."""
    inputs = FailingInputs(BASE)
    out = MemoryOut(BASE, lambda offset, data: None)
    core = SequencerCore(0, 3, inputs=inputs, out=out, checkpoint=Checkpoint())
    end = push(inputs, "s", "s", "o", range(1, 3))
    core.committed([Entry(1, 1, encode_ranges([Range("s", 0, end, "s")]))])
    limit = Timing().apply_stall_limit
    for now in range(1, int(limit)):
        core.tick(float(now))
    assert core.fatal is None and core.applied_index == 0
    core.tick(limit + 1)
    assert "cannot be read" in str(core.fatal) and core.checkpoint() is None


def test_an_entry_the_merged_log_took_in_part_is_never_checkpointed() -> None:
    """Issue 14 #9: the merged log fails between two runs of one entry: the merge state
    no longer matches the log, so no checkpoint is taken from it (the node restarts from
    its last one, whose end cuts the half entry away)."""
    inputs = MemoryInputs(BASE)
    out = FailingOut(BASE, lambda offset, data: None)
    core = SequencerCore(0, 3, inputs=inputs, out=out, checkpoint=Checkpoint())
    a = push(inputs, "a", "a", "o", range(1, 3))
    b = push(inputs, "b", "b", "p", range(1, 3))
    core.committed([Entry(1, 1, encode_ranges([Range("a", 0, a, "a"), Range("b", 0, b, "b")]))])
    assert isinstance(core.fatal, HalfAppliedError)  # the driver stops the process
    assert core.checkpoint() is None and not of_type(core.take_actions(), SaveCheckpoint)
    core.tick(10.0)
    assert not of_type(core.take_actions(), SaveCheckpoint)
    with pytest.raises(HalfAppliedError):
        core.merger.checkpoint()


# -- checkpoints and snapshots --------------------------------------------------------------


def test_checkpoints_then_compaction() -> None:
    core, _, _ = new_core(checkpoint_interval=0.5, compaction_keep=2)
    core.raft_changed(RaftState(last_index=6, first_index=1))
    core.committed([Entry(1, i, b"") for i in range(1, 7)])
    core.take_actions()
    core.tick(0.1)
    assert not of_type(core.take_actions(), SaveCheckpoint)
    core.tick(0.6)
    (save,) = of_type(core.take_actions(), SaveCheckpoint)
    assert save.checkpoint.applied_index == 6
    core.checkpoint_saved(save.checkpoint)
    (compact,) = of_type(core.take_actions(), Compact)
    assert (compact.index, compact.keep, compact.checkpoint) == (6, 2, save.checkpoint)


def test_done_positions_move_only_once_raft_stored_the_snapshot() -> None:
    """A node says it is done with input only when a replay from its stored snapshot, or
    a restart from its checkpoint, would not read it: not when the snapshot is asked."""
    core, _, _ = new_core(compaction_keep=2, snapshot_interval=5.0)
    core.raft_changed(RaftState(last_index=9, first_index=4))  # the log was cut before
    checkpoint = Checkpoint(applied_index=9, out_position=BASE + 5, merged={"s": BASE + 7})
    core.checkpoint_saved(checkpoint)
    (compact,) = of_type(core.take_actions(), Compact)
    assert compact.checkpoint == checkpoint
    assert core.view.done[0] == {}
    core.snapshot_stored(checkpoint)
    assert core.view.done[0] == {"s": BASE + 7}
    # the next checkpoint, a few entries later, waits for the snapshot interval
    later = Checkpoint(applied_index=10, out_position=BASE + 6, merged={"s": BASE + 8})
    core.checkpoint_saved(later)
    assert not of_type(core.take_actions(), Compact)
    core.tick(5.1)
    (compact,) = of_type(core.take_actions(), Compact)
    assert compact.checkpoint == later


def test_a_snapshot_catches_the_merged_log_up_and_a_replaced_one_changes_nothing() -> None:
    core, _, out = new_core()
    older = Checkpoint(applied_index=5, out_position=BASE + 10, merged={"s": 7})
    newer = Checkpoint(applied_index=9, out_position=BASE + 20, merged={"s": 9})
    core.snapshot(older.encode())
    assert of_type(core.take_actions(), CatchUpOut) == [CatchUpOut(BASE + 10)]
    core.snapshot(newer.encode())
    assert of_type(core.take_actions(), CatchUpOut) == [CatchUpOut(BASE + 20)]
    assert core.install_target == BASE + 20
    out.data += b"x" * 10
    core.out_caught_up(BASE + 10, out)  # the older one's: nothing happens
    assert core.installing and core.applied_index == 0
    out.data += b"x" * 10
    core.out_caught_up(BASE + 20, out)
    assert not core.installing and core.applied_index == 9 and core.merger.merged == {"s": 9}
    (save,) = of_type(core.take_actions(), SaveCheckpoint)
    assert save.checkpoint.applied_index == 9


# -- gossip ---------------------------------------------------------------------------------


def test_gossip_goes_to_the_leader_first_with_topics_of_new_streams() -> None:
    core, _, _ = new_core(gossip_to_leader=0.002, gossip_to_followers=0.05, gossip_keepalive=1.0)
    core.raft_changed(RaftState(leader=1))
    core.tick(0.0)
    core.take_actions()  # the first keepalive
    core.tick(0.01)
    core.held(0, {"a": 5}, {"a": "ta"})
    assert [(g.peer, g.topics) for g in of_type(core.take_actions(), Gossip)] == [(1, {"a": "ta"})]
    core.held(0, {"a": 6}, {"a": "ta"})
    assert not of_type(core.take_actions(), Gossip)  # coalesced
    assert core.next_deadline() == pytest.approx(0.012)
    core.tick(0.06)
    sent = {g.peer: g for g in of_type(core.take_actions(), Gossip)}
    assert sent[1].held == {"a": 6} and sent[1].topics == {}
    assert sent[2].held == {"a": 6} and sent[2].topics == {"a": "ta"}
    core.tick(1.5)
    assert all(g.topics == {"a": "ta"} for g in of_type(core.take_actions(), Gossip))
