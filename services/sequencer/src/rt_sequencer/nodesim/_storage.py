"""A simulated node's disk: input copies, the merged log and the checkpoint, in memory.

What it owns: :class:`MemoryInputs` (the :class:`~rt_sequencer.core.InputSource` of a
simulated node) and :class:`MemoryOut` (its :class:`~rt_sequencer.core.MergedSink`).
Each keeps what was written apart from what was made durable, so a crash can lose
the difference, or part of it, as a real page cache would: input copies keep whole
records (the real mirror trims a torn tail on recovery), the merged log may keep a
torn prefix of its unsynced bytes (the real writer cuts back to the checkpoint).

Retention of the merged log (a :class:`~rt_sequencer.core.PruneOut`) is modelled with
fake files, since memory has none: the merged log is cut into *files* at the first
record boundary at or past every ``file_bytes`` bytes from its base (so files hold
whole records and every node, holding the same bytes, has the same files). Collecting
before a position empties every file followed by a file starting at or before it, as
``rtcommon.log.archive_log_files`` does (the last file is never collected): the
*collected point* (:attr:`MemoryOut.collected`) moves to the start of the first file
kept. The bytes before it stay in memory but are gone: reading them is a violation, and
a node that goes on past a peer's collected files holds zeros there. The collected point
never goes back, not even when the log is cut below it (emptied files stay collected).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

from rtcommon.log import scan

__all__ = ["MemoryInputs", "MemoryOut", "MemoryStream"]


class MemoryStream:
    """One input copy: bytes of whole records from ``base``."""

    __slots__ = ("archived", "base", "data", "durable", "ends")

    def __init__(self, base: int) -> None:
        self.base = base
        self.data = bytearray()
        self.ends: list[int] = []  # the offset after each record
        self.durable = 0  # bytes made durable
        #: bytes before this position were archived (dropped from disk): never read again
        self.archived = 0

    @property
    def written(self) -> int:
        return self.base + len(self.data)

    @property
    def held(self) -> int:
        return self.base + self.durable


class MemoryInputs:
    """Every input copy of a simulated node."""

    def __init__(self, base: int, on_archived_read: Callable[[str], None] | None = None) -> None:
        self.base = base
        self.streams: dict[str, MemoryStream] = {}
        self.topics: dict[str, str] = {}
        self.dirty: set[str] = set()
        self._on_archived_read = on_archived_read

    # -- InputSource ---------------------------------------------------------------------

    def written(self, stream: str) -> int:
        copy = self.streams.get(stream)
        return copy.written if copy is not None else 0

    def read(self, stream: str, start: int, end: int) -> Iterable[tuple[bytes, int]]:
        copy = self.streams[stream]
        if start < copy.archived:
            what = f"{stream}: read at {start}, archived before {copy.archived}"
            if self._on_archived_read is None:
                raise AssertionError(what)
            self._on_archived_read(what)
        run = bytes(copy.data[start - copy.base : end - copy.base])
        return [(run, scan(run, 0, 0, keep=False, verify=False)[4])]

    def archive(self, stream: str, position: int) -> None:
        """Drop ``stream``'s bytes before ``position`` (kept in memory, but never to be
        read again: a read before it is a violation)."""
        copy = self.streams.get(stream)
        if copy is not None:
            copy.archived = max(copy.archived, min(position, copy.written))

    # -- the node's side -----------------------------------------------------------------

    def held(self) -> dict[str, int]:
        return {name: copy.held for name, copy in self.streams.items()}

    def write(
        self, stream: str, topic: str, position: int, data: bytes, ends: list[int]
    ) -> str | None:
        """Add records (``ends``: their end offsets within ``data``) at ``position``.

        Returns None, or what is wrong: a gap is refused (the sender resends from what
        this copy holds); bytes overlapping the copy must equal it."""
        copy = self.streams.get(stream)
        if copy is None:
            copy = self.streams[stream] = MemoryStream(self.base)
            self.topics[stream] = topic
        written = copy.written
        if position > written:
            return None  # a gap: dropped, as the real mirror refuses it
        skip = written - position
        if skip:
            if skip > len(data):
                skip = len(data)
            if data[:skip] != copy.data[position - copy.base : position - copy.base + skip]:
                return f"{stream}: bytes at {position} differ from the copy"
        grown = False
        for end in ends:
            if end > skip:
                copy.ends.append(len(copy.data) + end - skip)
                grown = True
        if grown:
            copy.data += data[skip:]
            self.dirty.add(stream)
        return None

    def start_sync(self) -> dict[str, int]:
        """What a group sync starting now will make durable: stream -> bytes."""
        marks = {name: len(self.streams[name].data) for name in self.dirty}
        self.dirty.clear()
        return marks

    def finish_sync(self, marks: dict[str, int]) -> None:
        for name, size in marks.items():
            copy = self.streams.get(name)
            if copy is not None:
                copy.durable = max(copy.durable, min(size, len(copy.data)))

    def crash(self, rng: random.Random) -> None:
        """Keep what is durable and, of each copy, some whole records written after it."""
        self.dirty.clear()
        for copy in self.streams.values():
            later = [end for end in copy.ends if end > copy.durable]
            keep = copy.durable
            if later and rng.random() < 0.5:
                keep = rng.choice(later)
            del copy.data[keep:]
            copy.ends = [end for end in copy.ends if end <= keep]
            copy.durable = keep  # what a restarted node finds on disk


class MemoryOut:
    """The merged log of a simulated node, from ``base``, in fake files of about
    ``file_bytes`` bytes (see the module's docstring)."""

    __slots__ = (
        "base",
        "collected",
        "data",
        "durable",
        "file_bytes",
        "on_append",
        "on_collected_read",
    )

    def __init__(
        self,
        base: int,
        on_append: Callable[[int, bytes], None],
        *,
        file_bytes: int = 1024,
        on_collected_read: Callable[[str], None] | None = None,
    ) -> None:
        self.base = base
        self.data = bytearray()
        self.durable = 0
        self.on_append = on_append  # the checker sees every append at its offset
        self.file_bytes = file_bytes
        #: The bytes before this position are collected (gone; zeros where never held).
        self.collected = base
        self.on_collected_read = on_collected_read

    @property
    def position(self) -> int:
        return self.base + len(self.data)

    def append(self, data: bytes) -> None:
        self.on_append(len(self.data), data)
        self.data += data

    def read(self, start: int, end: int, reader: str = "") -> bytes:
        """The bytes in ``[start, end)``, as a Pull serves them to ``reader``: a start before
        the collected point is a violation (the real Pull answers "collected" instead)."""
        if start < self.collected:
            what = (
                f"read{reader and ' by ' + reader} at {start - self.base},"
                f" collected before {self.collected - self.base}"
            )
            if self.on_collected_read is None:
                raise AssertionError(what)
            self.on_collected_read(what)
        return bytes(self.data[start - self.base : end - self.base])

    def file_starts(self) -> list[int]:
        """The starts of the files from the collected point to the end (none when the log
        ends inside its collected files)."""
        start, base, size = self.collected, self.base, self.file_bytes
        if start >= self.position:
            return []
        records, _, _, _, _ = scan(bytes(self.data), start - base, base, verify=False)
        starts = [start]
        boundary = base + ((start - base) // size + 1) * size
        for record in records:
            end = record.position  # a record's position is its end
            if end >= boundary and end < self.position:
                starts.append(end)
                boundary = base + ((end - base) // size + 1) * size
        return starts

    def collect(self, before: int) -> bool:
        """Carry out a PruneOut: collect the files wholly before ``before`` (each followed
        by a file that starts at or before it). Returns whether the collected point moved."""
        point = self.collected
        for start in self.file_starts():
            if start > before:
                break
            point = start
        if point <= self.collected:
            return False
        self.collected = point
        return True

    def skip_to(self, position: int) -> None:
        """Go on at ``position`` (a peer's collected point, a file's start): what this log
        holds before it counts as collected too, as ``rtcommon.log.collect_copy`` empties
        it; the bytes never held are zeros, never to be read."""
        size = position - self.base
        if size > len(self.data):
            self.data += bytes(size - len(self.data))
        self.collected = max(self.collected, position)

    def cut_to(self, position: int) -> bool:
        """Go on from ``position`` (a checkpoint's); False if the log is shorter."""
        size = position - self.base
        if size > len(self.data):
            return False
        del self.data[size:]
        self.durable = min(self.durable, size)
        return True

    def trim_torn(self) -> None:
        """Cut a torn tail back to whole records, as the real mirror does on recovery (the
        files are scanned from the collected point on: the ones before it are empty)."""
        start = self.collected - self.base
        if start >= len(self.data):
            return  # the log ends inside its collected files: nothing there to scan
        _, stop, _, _, _ = scan(bytes(self.data), start, self.base, keep=False)
        del self.data[stop:]
        self.durable = min(self.durable, stop)

    def crash(self, rng: random.Random) -> None:
        """Keep what is durable and a torn prefix of the rest."""
        unsynced = len(self.data) - self.durable
        if unsynced > 0:
            del self.data[self.durable + rng.randint(0, unsynced) :]
