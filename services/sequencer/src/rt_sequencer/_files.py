"""The merge core's storage interfaces over a node's files.

What it owns: :class:`InputFiles`, the :class:`~rt_sequencer.core.InputSource` of the
input copies under ``s/in`` (read with a reader cached per stream while it is busy), and
:class:`MergedLog`, the :class:`~rt_sequencer.core.MergedSink` of ``s/out`` (a
buffered writer whose readers, the pull servers, follow its ``appended`` signal),
with the helpers that load a checkpoint, check the merged log still reaches it, and
choose where the merged log goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from rtcommon.log import (
    LogEvent,
    LogMirror,
    LogReader,
    LogWriter,
    SyncPolicy,
    file_name,
    file_start,
    list_log_files,
    split_position,
)

from ._inputs import InputStore
from ._metrics import FSYNC_SECONDS, merged
from ._signal import Signal
from .core import Checkpoint, CheckpointError, MergeError

__all__ = [
    "InputFiles",
    "MergedLog",
    "load_checkpoint",
    "merged_log_end",
    "merged_log_holds",
    "out_start",
]

log = logging.getLogger(__name__)


class InputFiles:
    """The input copies as the merge reads them: a reader kept open for each stream read
    in the last ``IDLE_READER_SECONDS`` (an idle stream holds no file open for the
    merge; entries read streams in name order, so a cache bounded by count would miss on
    every read once more streams are busy than it holds)."""

    IDLE_READER_SECONDS = 10.0

    def __init__(self, store: InputStore) -> None:
        self.store = store
        self._readers: dict[str, LogReader] = {}  # least recently read first
        self._read_at: dict[str, float] = {}

    def written(self, stream: str) -> int:
        copy = self.store.streams.get(stream)
        return copy.written if copy is not None else 0

    def read(self, stream: str, start: int, end: int) -> Iterable[tuple[bytes, int]]:
        reader = self._readers.pop(stream, None)
        if reader is None or reader.position != start:
            if reader is not None:
                reader.close()
            # Each record's CRC again: the input copy checked it as it arrived, but a
            # byte may rot at rest, and a damaged record must stop the entry here (the
            # scrubber then mends the file from a peer) rather than reach the merged log.
            reader = LogReader(self.store.open(stream).directory, start)
        self._readers[stream] = reader  # now the most recently read
        self._read_at[stream] = time.monotonic()
        try:
            while reader.position is None or reader.position < end:
                items = reader.read_chunks(end)
                if not items:
                    raise MergeError(f"{stream} ends before {end} at {reader.position}")
                for item in items:
                    if isinstance(item, LogEvent):
                        raise MergeError(f"{item.kind} in the input copy of {stream}: {item}")
                    if item.data:
                        yield item.data, item.records
        except BaseException:
            self._readers.pop(stream, None)
            reader.close()
            raise

    def close_idle(self, now: float) -> None:
        """Close the readers not read in the last ``IDLE_READER_SECONDS`` before ``now``
        (the node calls this every few seconds, reads or none)."""
        for idle in [s for s in self._readers if now - self._read_at[s] > self.IDLE_READER_SECONDS]:
            self._readers.pop(idle).close()

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


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

    @property
    def first_position(self) -> int:
        """The first position still held: the start of the oldest file not emptied (by a
        hard reset), else of the newest file."""
        files = list_log_files(self.directory)
        for file in files:
            with contextlib.suppress(FileNotFoundError):
                if (self.directory / file_name(*file)).stat().st_size:
                    return file_start(*file)
        return file_start(*files[-1]) if files else self.written_position

    def append(self, data: bytes) -> None:
        self.writer.append_run(data)
        merged(data)

    def publish(self) -> None:
        """Write what the merge appended, and wake the readers."""
        self.writer.commit()
        self.appended.fire()

    async def sync(self) -> None:
        pending = self.writer.detach_sync()
        started = time.perf_counter()
        await asyncio.to_thread(pending.run)
        FSYNC_SECONDS.record(time.perf_counter() - started, {"what": "merged"})
        self.writer.synced(pending)

    def close(self) -> None:
        self.writer.close()


def load_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at ``path``; a missing or damaged one counts as none (the node
    then replays its Raft log, or installs a snapshot from its peers). An error reading
    it (EIO, EACCES) is raised: the disk, not the checkpoint, needs attention."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Checkpoint()
    try:
        return Checkpoint.decode(data)
    except CheckpointError as exc:
        log.error(
            "checkpoint %s is damaged (%s): recovering from the Raft log and peers", path, exc
        )
        return Checkpoint()


def merged_log_end(directory: Path) -> int:
    """The end of the whole, valid records of the merged log's newest file (0: no file).
    Opening it this way cuts off what follows them (a torn or damaged tail)."""
    with LogMirror(directory, sync=SyncPolicy.NONE) as mirror:
        return mirror.end or 0


def merged_log_holds(directory: Path, position: int, end: int) -> bool:
    """Whether the merged log holds whole, valid records up to ``position`` (where a
    checkpoint says it ends), given ``end``, what :func:`merged_log_end` found: the
    newest file's records are checked one by one (a crash or damage leaves them torn or
    wrong); a file before it by its length only: it was sealed whole when the next
    began, and being cut short is what its length shows."""
    session, roll, offset = split_position(position)
    if split_position(end)[:2] <= (session, roll):
        return end >= position
    try:
        return (directory / file_name(session, roll)).stat().st_size >= offset
    except FileNotFoundError:
        return False


def out_start(checkpoint: Checkpoint, session: int) -> int:
    """Where the merged log goes on after ``checkpoint``."""
    return checkpoint.out_position or file_start(session, 0)
