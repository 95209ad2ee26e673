"""The merge: committed ranges applied, in order, from input copies to the merged log.

Every node applies the same entries in the same order, copying records from its
input copy of each stream into the merged log, so merged logs are byte-identical
and positions mean the same everywhere. Streams of a topic ending in ``.dedup``
pass through a filter: a record is dropped unless its ``|id|`` is above the
highest merged so far for its (topic, origin). Watermarks are per topic, shared by
every stream of the topic (an HA pair of hosts is merged once) and never shared
between topics. A stream's first range fixes its topic.

The merger does no I/O of its own: it reads through an :class:`InputSource` and
appends to a :class:`MergedSink` (files on a node, memory in the simulator).
An entry is applied whole or not at all: everything it appends is gathered, and
every check made, before the first byte reaches the sink. An entry that fails a check
(:class:`EntryError`: decided from the entry and the merge state alone, so alike on
every node) is skipped with :meth:`Merger.skip`; one whose input this node cannot read
(:class:`InputError`) waits. If the sink fails part way through an entry, the merger
refuses to checkpoint from then on (:class:`HalfAppliedError`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from rtcommon.log import LogError, scan
from rtcommon.streams import is_dedup_topic, is_stream_name

from ._errors import EntryError, HalfAppliedError, InputError, MergeError
from ._types import Checkpoint, Range

__all__ = ["InputSource", "MergedSink", "Merger"]


class InputSource(Protocol):
    """This node's input copies, as the merge reads them."""

    def written(self, stream: str) -> int:
        """The position before which every record of ``stream`` is here (0: none)."""

    def read(self, stream: str, start: int, end: int) -> Iterable[tuple[bytes, int]]:
        """Runs of whole records of ``stream`` covering exactly ``[start, end)``, each
        with how many records it holds (the reader framed them anyway); raise MergeError
        if they cannot be read (``end`` is at most ``written``)."""


class MergedSink(Protocol):
    """The merged log, as the merge appends to it."""

    @property
    def position(self) -> int:
        """The end of the merged log, appended records included."""

    def append(self, data: bytes) -> None:
        """Append whole records."""


class Merger:
    def __init__(self, inputs: InputSource, out: MergedSink, checkpoint: Checkpoint) -> None:
        self.inputs = inputs
        self.out = out
        self.bytes_merged = 0
        #: records of each stream this merger appended since it was made (kept records
        #: of a ``.dedup`` topic only); not part of the checkpoint
        self.records_merged: dict[str, int] = {}
        self.half_applied: int | None = None  #: the entry the sink failed in the middle of
        self.restore(checkpoint)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Take a checkpoint's state (the sink must stand at its position)."""
        self.applied_index = checkpoint.applied_index
        self.merged = dict(checkpoint.merged)
        self.topics = dict(checkpoint.topics)
        self.watermarks = {topic: dict(marks) for topic, marks in checkpoint.watermarks.items()}
        self.dropped = {topic: dict(counts) for topic, counts in checkpoint.dropped.items()}
        self.pruned_before = checkpoint.pruned_before

    def checkpoint(self) -> Checkpoint:
        if self.half_applied is not None:
            raise HalfAppliedError(
                f"entry {self.half_applied} reached the merged log only in part: no checkpoint"
                " may be taken from this merge state"
            )
        return Checkpoint(
            applied_index=self.applied_index,
            out_position=self.out.position,
            merged=dict(self.merged),
            topics=dict(self.topics),
            watermarks={topic: dict(marks) for topic, marks in self.watermarks.items()},
            dropped={topic: dict(counts) for topic, counts in self.dropped.items()},
            pruned_before=self.pruned_before,
        )

    def missing(self, ranges: list[Range]) -> list[Range]:
        """The ranges whose input bytes this node has not written yet."""
        written = self.inputs.written
        return [item for item in ranges if written(item.stream) < item.end]

    def prune(self, index: int, before: int) -> bool:
        """Apply entry ``index``, a :class:`Prune`: the merged log is collected before
        ``before``, or before its end if it ends sooner (the same end on every node at
        this index). Returns whether the collected point moved."""
        self._check_next(index)
        self.applied_index = index
        before = min(before, self.out.position)
        if before <= self.pruned_before:
            return False
        self.pruned_before = before
        return True

    def skip(self, index: int) -> None:
        """Pass over entry ``index``, which every node refuses (an :class:`EntryError`)."""
        self._check_next(index)
        self.applied_index = index

    def _check_next(self, index: int) -> None:
        if index != self.applied_index + 1:
            raise MergeError(f"entry {index} after applied index {self.applied_index}")

    def check(self, index: int, ranges: list[Range]) -> dict[str, str]:
        """Raise EntryError unless entry ``index`` can follow the merge: a stream name and
        topic for each range, each continuing its stream's merge, each stream on the
        topic it had. Decided from the entry and the merge state alone, so alike on every
        node. Returns each stream's topic."""
        self._check_next(index)
        ends: dict[str, int] = {}
        topics: dict[str, str] = {}
        for item in ranges:
            stream = item.stream
            if not (is_stream_name(stream) and (not item.topic or is_stream_name(item.topic))):
                raise EntryError(f"entry {index}: {stream!r} on {item.topic!r} is not a stream")
            merged = ends.get(stream, self.merged.get(stream, 0))
            if item.start != merged or item.end < item.start:
                raise EntryError(
                    f"entry {index}: range [{item.start}, {item.end}) of {stream} does not"
                    f" continue its merge ({merged})"
                )
            wanted = item.topic or stream  # entries from before topics: a stream its own
            topic = topics.setdefault(stream, self.topics.get(stream, wanted))
            if topic != wanted:
                raise EntryError(f"entry {index}: {stream} is on topic {topic!r}, not {wanted!r}")
            ends[stream] = item.end
        return topics

    def apply(self, index: int, ranges: list[Range]) -> None:
        """Apply entry ``index`` (no ranges: a leader's no-op), whose input bytes must all
        be written here (see :meth:`missing`); it must pass :meth:`check`."""
        topics = self.check(index, ranges)
        runs: list[bytes] = []
        ends: dict[str, int] = {}
        marks: dict[str, dict[str, int]] = {}  # copies of the watermarks this entry moves
        drops: dict[str, dict[str, int]] = {}
        counts: dict[str, int] = {}
        for item in ranges:
            stream, topic = item.stream, topics[item.stream]
            try:
                data = list(self.inputs.read(stream, item.start, item.end))
            except (MergeError, OSError, LogError) as exc:
                raise InputError(
                    f"entry {index}: the input copy of {stream} cannot be read"
                    f" in [{item.start}, {item.end}): {exc}",
                    stream,
                ) from exc
            if is_dedup_topic(topic):
                if topic not in marks:
                    marks[topic] = dict(self.watermarks.get(topic, {}))
                    drops[topic] = dict(self.dropped.get(topic, {}))
                data = [_deduplicate(run, marks[topic], drops[topic]) for run, _ in data]
            for run, records in data:
                if run:
                    runs.append(run)
                    counts[stream] = counts.get(stream, 0) + records
            ends[stream] = item.end
        # Every check passed: only the sink can fail now, and if it does part way the
        # merge state no longer matches the merged log.
        start = self.out.position
        try:
            for run in runs:
                self.out.append(run)
                self.bytes_merged += len(run)
        except Exception as exc:
            if self.out.position == start:  # nothing taken: the entry waits, whole
                raise InputError(f"entry {index}: the merged log took none of it: {exc}") from exc
            self.half_applied = index
            raise HalfAppliedError(
                f"entry {index} reached the merged log only in part: {exc}"
            ) from exc
        self.merged.update(ends)
        records_merged = self.records_merged
        for stream, count in counts.items():
            records_merged[stream] = records_merged.get(stream, 0) + count
        self.topics.update(topics)
        self.watermarks.update(marks)
        self.dropped.update({topic: counts for topic, counts in drops.items() if counts})
        self.applied_index = index


def _deduplicate(
    data: bytes, watermarks: dict[str, int], dropped: dict[str, int]
) -> tuple[bytes, int]:
    """``data``'s records above their origin's watermark (moving it), and how many they
    are; count the rest as dropped."""
    records, _, _, _, _ = scan(data, 0, 0, verify=False)  # checked on arrival
    kept = []
    for record in records:
        origin, distance = record.origin, abs(record.id)
        if distance > watermarks.get(origin, 0):
            watermarks[origin] = distance
            kept.append(record.raw)
        else:
            dropped[origin] = dropped.get(origin, 0) + 1
    return (data if len(kept) == len(records) else b"".join(kept)), len(kept)
