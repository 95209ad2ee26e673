"""The promises of the merge, checked as the simulation runs and at its end.

What it owns: :class:`MergeChecker`. Every record a simulated publisher writes is
tagged with its topic and numbered per (topic, origin) from 1, so the merged log
alone says whether a record came twice, out of order or not at all. It checks:

- **one merged log**: every append of every node, at its offset, matches the bytes
  any node appended there before (the logs are prefixes of one another; once quiet
  they must be equal);
- **exactly once, in order**: the merged log holds, per (topic, origin), ids 1, 2,
  3... with no repeat and no gap: each stream's records in stream order, and on a
  ``.dedup`` topic an HA pair's shared sequence once;
- **nothing acknowledged is lost**: at the end, everything a publisher was told a
  quorum held is merged;
- **liveness**: once faults stop, every node's merged log holds everything published;
  the logs are then compared byte for byte from the later of their collected points on
  (their lengths must agree wholly);
- **prune points**: every node applies a Prune entry to the same point (the same
  ``before`` and the same ``pruned_before`` after it); the point after any applied index,
  wherever it is seen (a prune applied, a checkpoint, a node's state between events), is
  one value per index, never lower than at an earlier index (:meth:`MergeChecker.pruned`,
  :meth:`MergeChecker.prune_state`);
- **collected reads** (reported by the simulation): no node reads merged bytes a node
  collected.

Positions given to it are offsets from the merged log's base (0: nothing pruned).
"""

from __future__ import annotations

import bisect

from rtcommon.log import scan

from ..raftsim import Violation

__all__ = ["MergeChecker", "TopicOrigin"]

TopicOrigin = tuple[str, str]


class MergeChecker:
    def __init__(self) -> None:
        self.now = 0
        self.violations: list[Violation] = []
        self.reference = bytearray()  # the one merged log, as far as any node wrote it
        self._parsed = 0
        self.merged: dict[TopicOrigin, int] = {}  # the last id merged per (topic, origin)
        #: A Prune entry's index -> (its before, pruned_before after it), as first applied.
        self.prunes: dict[int, tuple[int, int]] = {}
        self._pruned: dict[int, tuple[int, str]] = {}  # index -> (pruned_before, seen where)
        self._pruned_indexes: list[int] = []  # the keys of _pruned, sorted

    def pruned(self, node: int, index: int, before: int, pruned_before: int) -> bool:
        """Node ``node`` applied the Prune entry ``index`` (asking ``before``): its point is
        now ``pruned_before``. Returns whether no node had applied this entry before."""
        first = index not in self.prunes
        seen = self.prunes.setdefault(index, (before, pruned_before))
        if seen != (before, pruned_before):
            self.fail(
                "prune points",
                f"n{node} applied the prune at {index} (before {before}) to {pruned_before},"
                f" a node before it (before {seen[0]}) to {seen[1]}",
            )
            return first
        self.prune_state(node, index, pruned_before, "applying its prune")
        return first

    def prune_state(self, node: int, index: int, pruned_before: int, where: str) -> None:
        """Node ``node``'s merge, at applied index ``index``, had ``pruned_before`` (seen
        ``where``): the same at this index on every node, never lower than at an earlier
        index, never higher than at a later one."""
        indexes, states = self._pruned_indexes, self._pruned
        what = f"n{node} pruned before {pruned_before} at applied index {index} ({where})"
        seen = states.get(index)
        if seen is not None:
            if seen[0] != pruned_before:
                self.fail("prune points", f"{what}; {seen[1]} had {seen[0]} there")
            return
        at = bisect.bisect_left(indexes, index)
        if at > 0 and states[indexes[at - 1]][0] > pruned_before:
            earlier = indexes[at - 1]
            value, by = states[earlier]
            self.fail("prune points", f"{what}: back from {value} at index {earlier} ({by})")
            return
        if at < len(indexes) and states[indexes[at]][0] < pruned_before:
            later = indexes[at]
            value, by = states[later]
            self.fail("prune points", f"{what}: past {value} at the later index {later} ({by})")
            return
        indexes.insert(at, index)
        states[index] = (pruned_before, f"n{node} {where}")

    def fail(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, detail, self.now))

    def appended(self, node: int, offset: int, data: bytes) -> None:
        """Node ``node`` appended ``data`` to its merged log at byte ``offset``."""
        reference = self.reference
        overlap = min(len(data), max(0, len(reference) - offset))
        if offset > len(reference):
            self.fail("merged logs", f"n{node} appended at {offset}, past any log's end")
            return
        if data[:overlap] != reference[offset : offset + overlap]:
            self.fail("merged logs", f"n{node} wrote other bytes at {offset} than a peer")
            return
        if overlap < len(data):
            reference += data[overlap:]
            self._parse()

    def _parse(self) -> None:
        tail = bytes(self.reference[self._parsed :])
        records, stop, _, reason, _ = scan(tail, 0, self._parsed)
        if stop != len(tail):
            where = self._parsed + stop
            self.fail("merged logs", f"the merged log is not whole records at {where}: {reason}")
        self._parsed += stop
        merged = self.merged
        for record in records:
            key = (record.tags[0], record.origin)
            expected = merged.get(key, 0) + 1
            if record.id != expected:
                what = "again" if record.id < expected else "with a gap"
                where = f"(expected {expected}) at {record.position}"
                self.fail("exactly once", f"{key} id {record.id} merged {what} {where}")
                return
            merged[key] = expected

    def check_end(
        self, published: dict[TopicOrigin, int], acknowledged: dict[TopicOrigin, int]
    ) -> None:
        for key, count in acknowledged.items():
            if self.merged.get(key, 0) < count:
                self.fail(
                    "acknowledged lost",
                    f"{key}: {count} acknowledged, {self.merged.get(key, 0)} merged",
                )
        for key, count in published.items():
            if self.merged.get(key, 0) != count:
                self.fail(
                    "exactly once", f"{key}: {count} published, {self.merged.get(key, 0)} merged"
                )

    def is_whole(self, data: bytes | bytearray, collected: int) -> bool:
        """Whether a merged log collected before offset ``collected`` is the one merged
        log, wholly: as long, and the same bytes from its collected point on (two logs
        that both pass compare equal from the later of their collected points)."""
        reference = self.reference
        return len(data) == len(reference) and data[collected:] == reference[collected:]

    def complete(self, published: dict[TopicOrigin, int]) -> bool:
        return all(self.merged.get(key, 0) >= count for key, count in published.items())
