"""The safety properties of Raft, checked incrementally as the simulation runs.

What it owns: :class:`SafetyChecker` and :class:`Violation`. The simulation reports to it
every leader it sees, every batch of entries a node is about to persist, every commit
index a node is about to persist and every entry a node applies; it checks:

- election safety: at most one leader per term;
- log matching: an entry (index, term) always has the same data and the same previous
  term wherever it appears, so by induction two logs sharing an entry share the prefix;
- leader completeness: a node becoming leader holds every entry known committed;
- state-machine safety: all nodes apply the same entry at each index, each node applies
  indexes in order with no gap or repeat, and snapshots carry the state of that prefix.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from rt_sequencer.raft import Entry, RaftNode


@dataclass(slots=True, frozen=True)
class Violation:
    kind: str
    detail: str
    time: int

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail} (at t={self.time})"


class SafetyChecker:
    __slots__ = (
        "_applied_data",
        "_applied_terms",
        "_committed",
        "_digests",
        "_entries",
        "_leaders",
        "_max_committed",
        "now",
        "violations",
    )

    def __init__(self) -> None:
        self.now = 0
        self.violations: list[Violation] = []
        self._leaders: dict[int, int] = {}
        self._entries: dict[tuple[int, int], tuple[int, bytes]] = {}
        self._committed: dict[int, int] = {}
        self._max_committed = 0
        # The agreed state-machine history: index -> term, data, digest after applying.
        self._applied_terms: list[int] = [0]
        self._applied_data: list[bytes] = [b""]
        self._digests: list[int] = [0]

    @property
    def leader_count(self) -> int:
        """How many terms had a leader."""
        return len(self._leaders)

    def _fail(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, detail, self.now))

    # -- election safety and leader completeness ------------------------------------------

    def leader_seen(self, node: RaftNode) -> None:
        term = node.term
        known = self._leaders.get(term)
        if known == node.node_id:
            return
        if known is not None:
            self._fail(
                "election safety", f"term {term} has two leaders: {known} and {node.node_id}"
            )
            return
        self._leaders[term] = node.node_id
        self._check_leader_log(node)

    def _check_leader_log(self, node: RaftNode) -> None:
        if self._max_committed > node.last_index:
            self._fail(
                "leader completeness",
                f"leader {node.node_id} of term {node.term} ends at {node.last_index} but "
                f"{self._max_committed} is committed",
            )
            return
        committed = self._committed
        # Entries below first_index are in the leader's snapshot, checked when restored.
        for index in range(max(node.first_index, 1), self._max_committed + 1):
            term = committed.get(index)
            if term is None:
                continue
            ours = node.log_term(index)
            if ours != term:
                self._fail(
                    "leader completeness",
                    f"leader {node.node_id} of term {node.term} has term {ours} at {index}, "
                    f"where term {term} was committed",
                )
                return

    # -- log matching and commits ----------------------------------------------------------

    def entries_persisted(self, node_id: int, entries: list[Entry], prev_term: int) -> None:
        seen = self._entries
        for entry in entries:
            key = (entry.index, entry.term)
            record = seen.get(key)
            if record is None:
                seen[key] = (prev_term, entry.data)
            elif record[0] != prev_term or record[1] != entry.data:
                self._fail(
                    "log matching",
                    f"node {node_id} holds entry {entry.term}/{entry.index} after term "
                    f"{prev_term} with data {entry.data!r}; elsewhere it follows term "
                    f"{record[0]} with data {record[1]!r}",
                )
                return
            prev_term = entry.term

    def committed(self, node_id: int, index: int, term: int) -> None:
        known = self._committed.get(index)
        if known is None:
            self._committed[index] = term
            if index > self._max_committed:
                self._max_committed = index
        elif known != term:
            self._fail(
                "state machine safety",
                f"node {node_id} committed term {term} at {index}, where term {known} was "
                "committed",
            )

    # -- state machine ---------------------------------------------------------------------

    def applied(self, node_id: int, expected_index: int, entry: Entry) -> None:
        index = entry.index
        if index != expected_index:
            self._fail(
                "state machine safety",
                f"node {node_id} applied index {index} when {expected_index} was next",
            )
            return
        terms = self._applied_terms
        if index < len(terms):
            if terms[index] != entry.term or self._applied_data[index] != entry.data:
                self._fail(
                    "state machine safety",
                    f"node {node_id} applied {entry.term}/{index} {entry.data!r}; another "
                    f"node applied {terms[index]}/{index} {self._applied_data[index]!r}",
                )
        elif index == len(terms):
            terms.append(entry.term)
            self._applied_data.append(entry.data)
            self._digests.append(zlib.crc32(entry.data, self._digests[-1]))
        else:
            self._fail(
                "state machine safety",
                f"node {node_id} applied index {index} before anyone applied {len(terms)}",
            )

    def digest_at(self, index: int) -> int | None:
        """The agreed state digest after applying ``index``, if anyone got that far."""
        return self._digests[index] if index < len(self._digests) else None

    def snapshot_restored(self, node_id: int, index: int, digest: int) -> None:
        if self.digest_at(index) != digest:
            self._fail(
                "state machine safety",
                f"node {node_id} restored a snapshot at {index} whose state differs from "
                "the applied history",
            )
