"""What every node holds of every stream, as this node last heard it, and each
stream's topic: from this the leader learns the range a quorum holds."""

from __future__ import annotations

from collections import deque

from rtcommon.cluster import quorum

__all__ = ["ClusterView"]


class ClusterView:
    def __init__(self, node_count: int) -> None:
        self.node_count = node_count
        self.quorum = quorum(node_count)
        self.held: list[dict[str, int]] = [{} for _ in range(node_count)]
        #: per node, per stream: where it is done with the input (``Gossip.done``)
        self.done: list[dict[str, int]] = [{} for _ in range(node_count)]
        self.topics: dict[str, str] = {}
        #: Topic disagreements heard (the latest few), for the node to log.
        self.conflicts: deque[str] = deque(maxlen=16)

    def update(self, node: int, held: dict[str, int], topics: dict[str, str]) -> set[str]:
        """Take node ``node``'s held positions; return the streams whose position moved.

        A stream whose topic is not known yet is left out until it is (its topic comes
        with the first state that names it, which may have been lost, and with every
        keepalive): nothing is proposed or fetched under a guessed topic."""
        for stream, topic in topics.items():
            known = self.topics.setdefault(stream, topic)
            if known != topic:
                conflict = f"node {node} says stream {stream} is on topic {topic!r}, not {known!r}"
                if conflict not in self.conflicts:
                    self.conflicts.append(conflict)
        if not held.keys() <= self.topics.keys():
            held = {stream: end for stream, end in held.items() if stream in self.topics}
        return _replace(self.held, node, held)

    def update_done(self, node: int, done: dict[str, int]) -> set[str]:
        """Take node ``node``'s done positions; return the streams whose position moved."""
        return _replace(self.done, node, done)

    def archivable(self, stream: str) -> int:
        """The position before which every node is done with ``stream``'s input and holds
        it (0 for a node not heard from yet; a node that went down counts with what it
        last said, so nothing after that is archived until it speaks again). A node whose
        copy lags what it merged (after a snapshot install) fetches the bytes it lacks
        before anyone drops them."""
        return min(
            min(done.get(stream, 0), held.get(stream, 0))
            for done, held in zip(self.done, self.held, strict=True)
        )

    def claim_topics(self, topics: dict[str, str]) -> None:
        """This node's own input copies' topics: they override what peers said."""
        self.topics.update(topics)

    def streams(self) -> set[str]:
        return {name for held in self.held for name in held}

    def quorum_held(self, stream: str) -> int:
        """The position before which a quorum of nodes holds every record of ``stream``."""
        positions = sorted((held.get(stream, 0) for held in self.held), reverse=True)
        return positions[self.quorum - 1]

    def best_peer(self, stream: str, me: int) -> tuple[int, int]:
        """``(node, held)`` of the peer holding most of ``stream`` (``me`` if alone)."""
        node = max(
            (n for n in range(self.node_count) if n != me),
            key=lambda n: self.held[n].get(stream, 0),
            default=me,
        )
        return node, self.held[node].get(stream, 0)


def _replace(per_node: list[dict[str, int]], node: int, positions: dict[str, int]) -> set[str]:
    """Put ``positions`` in ``per_node[node]``; return the streams whose position moved."""
    before = per_node[node]
    if before == positions:
        return set()
    per_node[node] = dict(positions)
    return {stream for stream, _ in positions.items() ^ before.items()}
