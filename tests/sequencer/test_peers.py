"""What a node sends a peer (``rt_sequencer._peers``): gossip states whole first and
whenever a stream drops out, else only the streams that moved; and only what the peer
said it understands (its peer protocol)."""

from __future__ import annotations

from rt_sequencer._peers import PEER_PROTOCOL, for_peer, gossip_state, raft_batches
from rt_sequencer.raft import Message, MessageType


def whole(state) -> tuple[dict, dict, bool]:
    return dict(state.held), dict(state.done), state.partial


def test_after_a_whole_state_only_what_moved_is_sent() -> None:
    held = {f"h{n}.feed": n for n in range(100)}
    done = {"h1.feed": 1}
    state, told = gossip_state(2, 7, held, {"h1.feed": "feed"}, done, None)
    assert whole(state) == (held, done, False) and (state.node, state.session) == (2, 7)
    assert dict(state.topics) == {"h1.feed": "feed"}

    # The core hands over whole maps; states it replaced before they went are not lost:
    # each is compared with what the stream last told.
    moved = {**held, "h3.feed": 30, "h4.feed": 40}
    moved_again = {**moved, "h4.feed": 41, "new.feed": 5}
    state, told = gossip_state(2, 7, moved_again, {"new.feed": "feed"}, done, told)
    assert whole(state) == ({"h3.feed": 30, "h4.feed": 41, "new.feed": 5}, {}, True)
    assert dict(state.topics) == {"new.feed": "feed"}

    state, told = gossip_state(2, 7, moved_again, {}, {"h1.feed": 2}, told)
    assert whole(state) == ({}, {"h1.feed": 2}, True)

    # A stream gone from the held (or done) positions: a whole state replaces them all.
    fewer = {k: v for k, v in moved_again.items() if k != "h0.feed"}
    state, told = gossip_state(2, 7, fewer, {}, {"h1.feed": 2}, told)
    assert whole(state) == (fewer, {"h1.feed": 2}, False)
    state, told = gossip_state(2, 7, fewer, {}, {}, told)
    assert whole(state) == (fewer, {}, False)


def test_a_peer_is_spoken_to_in_the_protocol_it_said_it_speaks() -> None:
    commit = Message(MessageType.COMMIT, src=1, dst=2, term=3, log_term=3, index=9, commit=9)
    # A peer that said nothing (an older node, or one not heard yet) gets no COMMIT: the
    # same as an empty APPEND, which it answers.
    older = for_peer(commit, 0)
    assert older.type is MessageType.APPEND
    assert (older.term, older.log_term, older.index, older.commit) == (3, 3, 9, 9)
    assert not older.entries
    assert for_peer(commit, PEER_PROTOCOL) is commit
    heartbeat = Message(MessageType.HEARTBEAT, src=1, dst=2, term=3)
    assert for_peer(heartbeat, 0) is heartbeat
    # Every state names the protocol its sender speaks.
    state, _ = gossip_state(2, 7, {}, {}, {}, None)
    assert state.protocol == PEER_PROTOCOL


def test_raft_messages_go_in_batches_of_a_bounded_size_in_order() -> None:
    """A lagging follower's queue of appends is not one gRPC message over what a node
    takes: batches close at the limit (a longer message goes alone)."""
    messages = [bytes([n]) * size for n, size in enumerate([300, 300, 500, 1200, 10, 10, 990])]
    batches = list(raft_batches(messages, limit=1000))
    assert [sum(map(len, batch)) for batch in batches] == [600, 500, 1200, 20, 990]
    assert [m for batch in batches for m in batch] == messages
    assert list(raft_batches([])) == []
