"""The merge: applying committed Raft entries to the merged log, ``s/out``.

Raft agrees on metadata only. An entry's data is a list of ranges
``(stream, start, end, topic)``: "append the records of input stream S between
these two positions". Every node applies the same entries in the same order,
copying the records from its input copy into the merged log, so the merged logs
of all nodes are byte-identical and positions mean the same everywhere.

A stream's topic comes with its ranges (the leader knows it from the publisher's
push, directly or through gossip); the first range of a stream fixes it. Streams
of a topic ending in ``.dedup`` pass through a filter: a record is dropped unless
the absolute value of its id is above the highest merged so far for its topic and
origin. Watermarks are per topic, shared by every stream of the topic (two hosts
sending the same messages for high availability are merged once), and never
shared between topics.

The state the merge needs to go on after a restart (applied index, end of the
merged log, merged position and topic of each stream, watermarks and counts of
dropped duplicates) is a small :class:`Checkpoint`, saved in ``s/state`` after
the merged log is synced, and used as the Raft snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import msgspec

from rtcommon.log import (
    Chunk,
    LogEvent,
    LogReader,
    LogWriter,
    SyncPolicy,
    file_start,
    scan,
    write_file_atomically,
)
from rtcommon.streams import is_dedup_topic

from ._inputs import InputStore, InputStream
from ._signal import Signal

__all__ = [
    "Checkpoint",
    "MergeError",
    "MergedLog",
    "Merger",
    "Range",
    "decode_ranges",
    "encode_ranges",
]

log = logging.getLogger(__name__)


class Range(msgspec.Struct, array_like=True, frozen=True):
    """Append the records of input stream ``stream`` in ``[start, end)``."""

    stream: str
    start: int
    end: int
    topic: str


_ranges_encoder = msgspec.msgpack.Encoder()
_ranges_decoder = msgspec.msgpack.Decoder(list[Range])


def encode_ranges(ranges: list[Range]) -> bytes:
    return _ranges_encoder.encode(ranges)


def decode_ranges(data: bytes) -> list[Range]:
    return _ranges_decoder.decode(data)


class MergeError(RuntimeError):
    """An entry that does not continue the merge: a bug, never ignored."""


class Checkpoint(msgspec.Struct, kw_only=True):
    applied_index: int = 0
    out_position: int = 0
    merged: dict[str, int] = {}  #: stream -> the end of its last range merged
    topics: dict[str, str] = {}  #: stream -> its topic
    watermarks: dict[str, dict[str, int]] = {}  #: dedup topic -> origin -> highest |id|
    dropped: dict[str, dict[str, int]] = {}  #: dedup topic -> origin -> duplicates dropped

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        try:
            return msgspec.msgpack.decode(path.read_bytes(), type=cls)
        except FileNotFoundError:
            return None

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        return msgspec.msgpack.decode(data, type=cls)


class MergedLog:
    """``s/out``: the writer of the merged log and the signal its readers follow."""

    def __init__(self, directory: Path, *, roll_size: int, position: int) -> None:
        self.directory = directory
        # Rolled files are synced as they seal; the open file is synced by checkpoints.
        self.writer = LogWriter(
            directory,
            roll_size=roll_size,
            sync=SyncPolicy.INTERVAL,
            sync_interval=float("inf"),
            at=position,
            seal_on_close=False,
            buffer_size=4 << 20,
        )
        self.appended = Signal()  #: fires when records reach the file (pull servers follow)

    @property
    def position(self) -> int:
        """The end of the merged log, buffered records included."""
        return self.writer.position

    @property
    def written_position(self) -> int:
        """The end of what readers of the files can see."""
        return self.writer.written_position

    def publish(self) -> None:
        """Write what the merge appended, and wake the readers."""
        self.writer.commit()
        self.appended.fire()

    async def sync(self) -> None:
        pending = self.writer.detach_sync()
        await asyncio.to_thread(pending.run)
        self.writer.synced(pending)

    def close(self) -> None:
        self.writer.close()


class Merger:
    """Applies committed entries, in order, from the input copies to the merged log."""

    def __init__(
        self,
        inputs: InputStore,
        out: MergedLog,
        checkpoint: Checkpoint,
        *,
        checkpoint_path: Path,
        fetch: Callable[[str, int], None],
    ) -> None:
        self.inputs = inputs
        self.out = out
        self.applied_index = checkpoint.applied_index
        self._take_state(checkpoint)
        self.checkpoint_path = checkpoint_path
        self.saved = checkpoint
        self.applied = Signal()  #: fires when the applied index moves
        self.bytes_merged = 0
        self._fetch = fetch
        self._readers: dict[str, LogReader] = {}

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            applied_index=self.applied_index,
            out_position=self.out.position,
            merged=dict(self.merged),
            topics=dict(self.topics),
            watermarks={topic: dict(marks) for topic, marks in self.watermarks.items()},
            dropped={topic: dict(counts) for topic, counts in self.dropped.items()},
        )

    def _take_state(self, checkpoint: Checkpoint) -> None:
        self.applied_index = checkpoint.applied_index
        self.merged = dict(checkpoint.merged)
        self.topics = dict(checkpoint.topics)
        self.watermarks = {topic: dict(marks) for topic, marks in checkpoint.watermarks.items()}
        self.dropped = {topic: dict(counts) for topic, counts in checkpoint.dropped.items()}

    async def apply(self, index: int, data: bytes) -> None:
        """Apply entry ``index`` (empty data: a leader's no-op).

        An entry is applied whole or not at all, as other tasks see it: every input byte
        it needs is waited for first, then its ranges are appended with no await between
        them, so a checkpoint never holds half an entry.
        """
        if index <= self.applied_index:
            return  # applied before a restart, and already in the checkpoint
        if index != self.applied_index + 1:
            raise MergeError(f"entry {index} after applied index {self.applied_index}")
        ranges = decode_ranges(data) if data else []
        for item in ranges:
            stream = self.inputs.open(item.stream)
            while stream.written < item.end:
                self._fetch(item.stream, item.end)  # this node missed the bytes: backup path
                await stream.held_changed.wait_for(0.2)
        for item in ranges:
            self._apply_range(item)
        self.applied_index = index

    def finish_batch(self) -> None:
        self.out.publish()
        self.applied.fire()

    async def save_checkpoint(self) -> Checkpoint:
        """Sync the merged log, then record how far it goes."""
        state = self.checkpoint()
        await self.out.sync()
        await asyncio.to_thread(write_file_atomically, self.checkpoint_path, state.encode())
        self.saved = state
        return state

    def _apply_range(self, item: Range) -> None:
        stream_name, start, end = item.stream, item.start, item.end
        merged = self.merged.get(stream_name, 0)
        if start != merged:
            raise MergeError(
                f"range [{start}, {end}) of {stream_name} does not start where its merge"
                f" stands ({merged})"
            )
        topic = self.topics.setdefault(stream_name, item.topic)
        stream = self.inputs.open(stream_name)
        reader = self._reader(stream, start)
        dedup = is_dedup_topic(topic)
        while reader.position is None or reader.position < end:
            items = reader.read_chunks(end)
            if not items:
                raise MergeError(f"{stream_name} ends before {end} at {reader.position}")
            for item in items:
                if isinstance(item, LogEvent):
                    raise MergeError(f"{item.kind} in the input copy of {stream_name}: {item}")
                if item.data:
                    self._append(item, topic if dedup else None)
        self.merged[stream_name] = end

    def _append(self, chunk: Chunk, dedup_topic: str | None) -> None:
        data = chunk.data
        if dedup_topic is not None:
            data = self._deduplicate(data, dedup_topic)
        if data:
            self.out.writer.append_run(data)
            self.bytes_merged += len(data)

    def _deduplicate(self, data: bytes, topic: str) -> bytes:
        watermarks = self.watermarks.setdefault(topic, {})
        kept = []
        dropped: dict[str, int] | None = None
        records, _, _, _ = scan(data, 0, 0, verify=False)  # checked on arrival
        for record in records:
            origin, distance = record.origin, abs(record.id)
            if distance > watermarks.get(origin, 0):
                watermarks[origin] = distance
                kept.append(record.raw)
            else:
                if dropped is None:
                    dropped = self.dropped.setdefault(topic, {})
                dropped[origin] = dropped.get(origin, 0) + 1
        return data if len(kept) == len(records) else b"".join(kept)

    def _reader(self, stream: InputStream, start: int) -> LogReader:
        reader = self._readers.get(stream.name)
        if reader is None or reader.position != start:
            if reader is not None:
                reader.close()
            # The input copy checked every record's CRC as it arrived.
            reader = self._readers[stream.name] = LogReader(stream.directory, start, verify=False)
        return reader

    def restore(self, checkpoint: Checkpoint) -> None:
        """Take a snapshot's state (the merged log must already reach its position)."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._take_state(checkpoint)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def initial_out_position(checkpoint: Checkpoint | None, session: int) -> int:
    if checkpoint is not None and checkpoint.out_position:
        return checkpoint.out_position
    return file_start(session, 0)
