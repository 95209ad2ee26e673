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
- **liveness**: once faults stop, every node's merged log holds everything published.
"""

from __future__ import annotations

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
        records, stop, _, reason = scan(tail, 0, self._parsed)
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

    def complete(self, published: dict[TopicOrigin, int]) -> bool:
        return all(self.merged.get(key, 0) >= count for key, count in published.items())
