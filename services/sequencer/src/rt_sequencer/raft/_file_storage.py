"""A crash-safe Storage on local files.

What it owns: :class:`FileStorage` and its on-disk format. The directory holds::

    log        append-only records; every save() appends its entries and fsyncs
    hardstate  replaced atomically: write temp, fsync, rename, fsync the directory;
               when the term or vote changes, and when only the commit index moved at
               most every ``COMMIT_WRITE_INTERVAL`` (a leader tells a restarted node the
               commit again; the stored one only bounds the torn-tail check below)
    snapshot   replaced atomically, likewise

Each log record is ``<u32 crc32(body)> <u32 len(body)> body`` with
``body = <u8 kind> <u64 term> <u64 index> data``. The first record is a BASE (kind 2):
the log continues after (index, term). Every other record is an ENTRY (kind 1); an entry
at index i supersedes whatever earlier records said from i on, which is how a follower's
conflicting suffix is truncated without rewriting the file.

On open, records are read until the first one that is incomplete or fails its CRC: that
is the torn tail of a save() cut short by a crash (nothing in it was acknowledged, since
acknowledgements follow the fsync), and the file is truncated there. If a whole record
follows the bad one, or what survives no longer reaches the stored commit index, the
damage was not a torn tail and opening raises CorruptStorageError. ``save`` writes the
snapshot, then the entries, then the hard state, so a crash between them leaves a state
the core accepts. Entries are also held in
memory for reads: the state RT keeps in Raft is small metadata.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from ._errors import CorruptStorageError, UsageError
from ._storage import MemoryStorage
from ._types import EMPTY_SNAPSHOT, Entry, HardState, Snapshot

_LOG = "log"
_HARD_STATE = "hardstate"
_SNAPSHOT = "snapshot"

_ENTRY = 1
_BASE = 2
_RECORD_HEADER = struct.Struct("<II")
_RECORD_BODY = struct.Struct("<BQQ")
_HARD_STATE_BODY = struct.Struct("<QQQ")
_SNAPSHOT_HEAD = struct.Struct("<QQ")
_CRC = struct.Struct("<I")

#: A hard state that only moves the commit index is written at most this often (seconds):
#: rewriting it costs two fsyncs and a rename, at every Raft round otherwise.
COMMIT_WRITE_INTERVAL = 1.0


def _encode_record(kind: int, term: int, index: int, data: bytes) -> bytes:
    body = _RECORD_BODY.pack(kind, term, index) + data
    return _RECORD_HEADER.pack(zlib.crc32(body), len(body)) + body


def _with_crc(body: bytes) -> bytes:
    return _CRC.pack(zlib.crc32(body)) + body


def _encode_hard_state(state: HardState) -> bytes:
    return _with_crc(_HARD_STATE_BODY.pack(state.term, state.vote, state.commit))


def _record(view: memoryview, position: int) -> tuple[int, memoryview | None] | None:
    """The record at ``position``: (its end, its body, or None when the body fails its
    CRC); None when no whole record fits there (a torn tail, or a length that is not one)."""
    if position + _RECORD_HEADER.size > len(view):
        return None
    crc, length = _RECORD_HEADER.unpack_from(view, position)
    start = position + _RECORD_HEADER.size
    end = start + length
    if length < _RECORD_BODY.size or end > len(view):
        return None
    body = view[start:end]
    return end, (body if zlib.crc32(body) == crc else None)


def _check_crc(name: str, raw: bytes) -> bytes:
    if len(raw) < _CRC.size or _CRC.unpack_from(raw)[0] != zlib.crc32(raw[_CRC.size :]):
        raise CorruptStorageError(f"{name}: checksum mismatch in an atomically written file")
    return raw[_CRC.size :]


class FileStorage:
    """Storage in a directory; every ``save``, ``create_snapshot`` and ``compact`` is
    durable when it returns. Not safe for concurrent use."""

    def __init__(
        self, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True)
        self._memory = MemoryStorage()
        self._clock = clock
        hard_state = self._read_hard_state()
        self._stored = hard_state  # what the hardstate file holds
        self._stored_at = clock()
        snapshot = self._read_snapshot()
        self._load_log(hard_state, snapshot)
        if hard_state.commit > self._memory.last_index():
            raise CorruptStorageError(
                f"{self._path(_LOG)}: entries up to the stored commit {hard_state.commit} "
                f"are missing (last index {self._memory.last_index()})"
            )
        self._log_file = open(self._path(_LOG), "ab")  # noqa: SIM115 - lives with the storage

    def close(self) -> None:
        """Close the files, writing a commit index ``save`` held back."""
        try:
            if self._memory.initial_state() != self._stored:
                self._replace_file(_HARD_STATE, _encode_hard_state(self._memory.initial_state()))
        finally:
            self._log_file.close()

    # -- reads ---------------------------------------------------------------------------

    def initial_state(self) -> HardState:
        return self._memory.initial_state()

    def first_index(self) -> int:
        return self._memory.first_index()

    def last_index(self) -> int:
        return self._memory.last_index()

    def term(self, index: int) -> int:
        return self._memory.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self._memory.entries(lo, hi, max_bytes)

    def snapshot(self) -> Snapshot:
        return self._memory.snapshot()

    # -- writes --------------------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        *,
        must_sync: bool = True,
    ) -> None:
        """Persist a Ready's state. A Ready that need not be synced only moves the commit
        index (Ready.must_sync): that hard state is kept in memory and written with a
        later one that must be synced, since a leader tells a restarted node the commit
        index again, and an unsynced rewrite could be torn by a crash. A term or vote is
        durable when this returns; a commit index that alone moved is written by a later
        save at least ``COMMIT_WRITE_INTERVAL`` after the last write, or by ``close``."""
        if not must_sync:
            if snapshot is not None or entries:
                raise UsageError("only a commit-only hard state may skip the sync")
            if hard_state is not None:
                self._memory.set_hard_state(hard_state)
            return
        if snapshot is not None:
            self._memory.apply_snapshot(snapshot)
            self._replace_file(_SNAPSHOT, self._encode_snapshot(snapshot))
            self._rewrite_log()
        if entries:
            self._log_file.write(
                b"".join(_encode_record(_ENTRY, e.term, e.index, e.data) for e in entries)
            )
            self._log_file.flush()
            os.fsync(self._log_file.fileno())
            self._memory.append(entries)
        if hard_state is not None:
            stored, now = self._stored, self._clock()
            if (hard_state.term, hard_state.vote) != (stored.term, stored.vote) or (
                hard_state.commit != stored.commit
                and now - self._stored_at >= COMMIT_WRITE_INTERVAL
            ):
                self._replace_file(_HARD_STATE, _encode_hard_state(hard_state))
                self._stored, self._stored_at = hard_state, now
            self._memory.set_hard_state(hard_state)

    def create_snapshot(self, index: int, data: bytes) -> Snapshot:
        snapshot = self._memory.create_snapshot(index, data)
        self._replace_file(_SNAPSHOT, self._encode_snapshot(snapshot))
        return snapshot

    def compact(self, index: int) -> None:
        self._memory.compact(index)
        self._rewrite_log()

    # -- files ---------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self._directory / name

    def _replace_file(self, name: str, payload: bytes) -> None:
        temporary = self._path(name + ".tmp")
        with open(temporary, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self._path(name))
        self._sync_directory()

    def _sync_directory(self) -> None:
        descriptor = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _rewrite_log(self) -> None:
        self._log_file.close()
        self._replace_file(_LOG, self._encode_log())
        self._log_file = open(self._path(_LOG), "ab")  # noqa: SIM115 - lives with the storage

    def _encode_log(self) -> bytes:
        """A BASE record followed by the entries held in memory."""
        memory = self._memory
        base_index = memory.first_index() - 1
        records = [_encode_record(_BASE, memory.term(base_index), base_index, b"")]
        if memory.last_index() > base_index:
            records.extend(
                _encode_record(_ENTRY, e.term, e.index, e.data)
                for e in memory.entries(base_index + 1, memory.last_index() + 1)
            )
        return b"".join(records)

    @staticmethod
    def _encode_snapshot(snapshot: Snapshot) -> bytes:
        return _with_crc(_SNAPSHOT_HEAD.pack(snapshot.index, snapshot.term) + snapshot.data)

    def _read_hard_state(self) -> HardState:
        path = self._path(_HARD_STATE)
        if not path.exists():
            return HardState()
        body = _check_crc(str(path), path.read_bytes())
        if len(body) != _HARD_STATE_BODY.size:
            raise CorruptStorageError(f"{path}: wrong size")
        return HardState(*_HARD_STATE_BODY.unpack(body))

    def _read_snapshot(self) -> Snapshot:
        path = self._path(_SNAPSHOT)
        if not path.exists():
            return EMPTY_SNAPSHOT
        body = _check_crc(str(path), path.read_bytes())
        if len(body) < _SNAPSHOT_HEAD.size:
            raise CorruptStorageError(f"{path}: too short")
        index, term = _SNAPSHOT_HEAD.unpack_from(body)
        return Snapshot(index, term, body[_SNAPSHOT_HEAD.size :])

    def _load_log(self, hard_state: HardState, snapshot: Snapshot) -> None:
        path = self._path(_LOG)
        if not path.exists():
            if hard_state != HardState() or snapshot.index:
                raise CorruptStorageError(f"{path} is missing but other state exists")
            self._replace_file(_LOG, self._encode_log())
            return
        raw = path.read_bytes()
        (base_index, base_term), entries, valid_end = self._parse_log(str(path), raw)

        base = (base_index, base_term)
        kept = entries
        if snapshot.index > base_index:
            # A crash may fall between writing a received snapshot and resetting the
            # log: keep the entries only if they continue the snapshot's history.
            position = snapshot.index - base_index - 1
            if position >= len(entries) or entries[position].term != snapshot.term:
                base, kept = (snapshot.index, snapshot.term), []
        elif snapshot.index < base_index or snapshot.term != base_term:
            raise CorruptStorageError(
                f"{path}: log base ({base_index}, {base_term}) does not follow the snapshot "
                f"({snapshot.index}, {snapshot.term})"
            )
        self._memory.load(hard_state, snapshot, base, kept)
        if kept is not entries:
            self._replace_file(_LOG, self._encode_log())
        elif valid_end < len(raw):
            with open(path, "r+b") as file:
                file.truncate(valid_end)
                file.flush()
                os.fsync(file.fileno())

    @staticmethod
    def _parse_log(name: str, raw: bytes) -> tuple[tuple[int, int], list[Entry], int]:
        """(base, entries after it, end of the valid prefix) of a log file's bytes."""
        view = memoryview(raw)
        position = 0
        base: tuple[int, int] | None = None
        entries: list[Entry] = []
        while (found := _record(view, position)) is not None:
            end, body = found
            if body is None:
                after = _record(view, end)
                if after is not None and after[1] is not None:
                    # A torn save is the last thing in the file: a bad record with a
                    # whole one after it is damage, which may have been acknowledged. (A
                    # save whose pages reached the disk out of order reads so too; the
                    # node then rejoins from its peers, which is safe.)
                    raise CorruptStorageError(
                        f"{name}: a damaged record at offset {position}, whole records after it"
                    )
                break
            kind, term, index = _RECORD_BODY.unpack_from(body)
            if base is None:
                if kind != _BASE:
                    raise CorruptStorageError(f"{name}: does not start with a base record")
                base = (index, term)
            elif kind != _ENTRY:
                raise CorruptStorageError(f"{name}: unexpected record kind {kind}")
            else:
                slot = index - base[0] - 1
                if slot < 0:
                    raise CorruptStorageError(f"{name}: entry {index} precedes the base")
                if slot > len(entries):
                    raise CorruptStorageError(f"{name}: gap before entry {index}")
                del entries[slot:]
                entries.append(Entry(term, index, bytes(body[_RECORD_BODY.size :])))
            position = end
        if base is None:
            raise CorruptStorageError(f"{name}: no valid base record")
        return base, entries, position
