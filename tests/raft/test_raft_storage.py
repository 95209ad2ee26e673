"""Tests of MemoryStorage and of FileStorage's durability and crash recovery."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rt_sequencer.raft import (
    CompactedError,
    Config,
    CorruptStorageError,
    Entry,
    FileStorage,
    HardState,
    MemoryStorage,
    RaftNode,
    Role,
    Snapshot,
    SnapshotOutOfDateError,
    UnavailableError,
    UsageError,
)
from rt_sequencer.raft._file_storage import COMMIT_WRITE_INTERVAL


def entries(term: int, first: int, last: int) -> list[Entry]:
    return [Entry(term, index, b"e%d" % index) for index in range(first, last + 1)]


def log_of(storage: MemoryStorage | FileStorage) -> list[tuple[int, int, bytes]]:
    first, last = storage.first_index(), storage.last_index()
    return [(e.term, e.index, e.data) for e in storage.entries(first, last + 1)]


# -- MemoryStorage ------------------------------------------------------------------------


def test_memory_storage_append_truncates_conflicts() -> None:
    storage = MemoryStorage()
    storage.append(entries(1, 1, 5))
    storage.append(entries(2, 3, 4))
    assert [(t, i) for t, i, _ in log_of(storage)] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    with pytest.raises(UnavailableError):
        storage.term(5)
    assert storage.term(0) == 0


def test_memory_storage_snapshot_and_compaction_rules() -> None:
    storage = MemoryStorage()
    storage.append(entries(1, 1, 10))
    with pytest.raises(UsageError):
        storage.compact(5)  # no snapshot covers 5 yet
    snapshot = storage.create_snapshot(6, b"state")
    assert (snapshot.index, snapshot.term) == (6, 1)
    storage.compact(4)
    assert (storage.first_index(), storage.term(4)) == (5, 1)
    with pytest.raises(CompactedError):
        storage.term(3)
    with pytest.raises(CompactedError):
        storage.entries(4, 6)
    with pytest.raises(SnapshotOutOfDateError):
        storage.create_snapshot(6, b"again")
    with pytest.raises(SnapshotOutOfDateError):
        storage.apply_snapshot(Snapshot(5, 1, b""))
    storage.apply_snapshot(Snapshot(20, 3, b"leader's"))
    assert (storage.first_index(), storage.last_index(), storage.term(20)) == (21, 20, 3)


def test_entries_are_limited_by_size_but_never_empty() -> None:
    storage = MemoryStorage()
    storage.append([Entry(1, i, b"x" * 10) for i in range(1, 6)])
    assert len(storage.entries(1, 6, max_bytes=25)) == 2
    assert len(storage.entries(1, 6, max_bytes=1)) == 1


# -- FileStorage --------------------------------------------------------------------------


def test_file_storage_round_trip(tmp_path: Path) -> None:
    now = [0.0]
    storage = FileStorage(tmp_path, clock=lambda: now[0])
    storage.save(HardState(1, 1, 0), entries(1, 1, 5))
    storage.save(HardState(2, 3, 2), entries(2, 4, 6))  # replaces 4..5
    now[0] += COMMIT_WRITE_INTERVAL
    storage.save(HardState(2, 3, 6), [])
    storage.close()
    reopened = FileStorage(tmp_path)
    assert reopened.initial_state() == HardState(2, 3, 6)
    assert [(t, i) for t, i, _ in log_of(reopened)] == [
        (1, 1),
        (1, 2),
        (1, 3),
        (2, 4),
        (2, 5),
        (2, 6),
    ]


def test_a_commit_only_hard_state_is_not_written_until_the_next_sync(tmp_path: Path) -> None:
    """Ready.must_sync False: only the commit index moved, and it is kept in memory (a
    leader tells a restarted node the commit again); the next synced save writes it."""
    storage = FileStorage(tmp_path)
    storage.save(HardState(1, 1, 2), entries(1, 1, 5))
    storage.save(HardState(1, 1, 5), [], must_sync=False)
    assert storage.initial_state() == HardState(1, 1, 5)
    with pytest.raises(UsageError):
        storage.save(None, entries(1, 6, 6), must_sync=False)
    assert FileStorage(tmp_path).initial_state() == HardState(1, 1, 2)  # lost by a crash
    storage.close()
    assert FileStorage(tmp_path).initial_state() == HardState(1, 1, 5)  # written by close
    storage = FileStorage(tmp_path)
    storage.save(HardState(1, 1, 4), [], must_sync=False)
    storage.save(HardState(2, 1, 4), entries(2, 6, 6))
    storage.close()
    assert FileStorage(tmp_path).initial_state() == HardState(2, 1, 4)


def test_a_moved_commit_alone_is_written_at_most_every_interval(tmp_path: Path) -> None:
    """A term or vote is durable at once; a commit index that alone moved is written at
    most every ``COMMIT_WRITE_INTERVAL`` (each write costs two fsyncs and a rename)."""
    now = [0.0]
    storage = FileStorage(tmp_path, clock=lambda: now[0])
    storage.save(HardState(1, 1, 0), entries(1, 1, 5))
    storage.save(HardState(1, 1, 3), entries(1, 6, 6))
    assert storage.initial_state() == HardState(1, 1, 3)
    assert FileStorage(tmp_path).initial_state() == HardState(1, 1, 0)  # as after a crash
    storage.save(HardState(1, 2, 4), [])  # a vote: at once
    assert FileStorage(tmp_path).initial_state() == HardState(1, 2, 4)
    now[0] += COMMIT_WRITE_INTERVAL / 2
    storage.save(HardState(1, 2, 5), [])
    assert FileStorage(tmp_path).initial_state() == HardState(1, 2, 4)
    now[0] += COMMIT_WRITE_INTERVAL / 2
    storage.save(HardState(1, 2, 6), [])
    assert FileStorage(tmp_path).initial_state() == HardState(1, 2, 6)
    storage.close()


def test_file_storage_snapshot_and_compaction_survive(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save(HardState(1, 1, 8), entries(1, 1, 8))
    storage.create_snapshot(6, b"app-state")
    storage.compact(4)
    storage.save(None, entries(1, 9, 9))
    storage.close()
    reopened = FileStorage(tmp_path)
    assert reopened.snapshot() == Snapshot(6, 1, b"app-state")
    assert (reopened.first_index(), reopened.last_index()) == (5, 9)
    reopened.save(None, [], Snapshot(20, 2, b"installed"))
    reopened.close()
    again = FileStorage(tmp_path)
    assert (again.first_index(), again.last_index(), again.term(20)) == (21, 20, 2)


def test_torn_tail_is_discarded_at_every_cut(tmp_path: Path) -> None:
    """A crash during a save leaves any prefix of its bytes: whatever the cut, reopening
    yields the state before that save plus the entries that made it whole."""
    directory = tmp_path / "node"
    storage = FileStorage(directory)
    storage.save(HardState(1, 1, 2), entries(1, 1, 3))
    storage.close()
    log = directory / "log"
    before = log.stat().st_size
    storage = FileStorage(directory)
    storage.save(None, entries(1, 4, 6))
    storage.close()
    full = log.read_bytes()
    record = (len(full) - before) // 3
    for cut in range(before, len(full)):
        log.write_bytes(full[:cut])
        reopened = FileStorage(directory)
        survivors = (cut - before) // record
        assert reopened.last_index() == 3 + survivors
        # The torn bytes are gone: the next save appends after a clean end.
        reopened.save(None, [Entry(2, reopened.last_index() + 1, b"after")])
        reopened.close()
        assert FileStorage(directory).term(reopened.last_index()) == 2


def test_corrupt_last_record_is_discarded(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save(HardState(1, 1, 1), entries(1, 1, 3))
    storage.close()
    log = tmp_path / "log"
    damaged = bytearray(log.read_bytes())
    damaged[-1] ^= 0xFF
    log.write_bytes(bytes(damaged))
    assert FileStorage(tmp_path).last_index() == 2


def test_a_bad_record_with_whole_ones_after_it_is_not_a_torn_tail(tmp_path: Path) -> None:
    """A torn save is the end of the file: a flipped byte in an earlier record is damage,
    even above the stored commit index (acknowledged entries may follow it)."""
    storage = FileStorage(tmp_path)
    storage.save(HardState(1, 1, 0), entries(1, 1, 3))
    storage.close()
    log = tmp_path / "log"
    damaged = bytearray(log.read_bytes())
    damaged[-60] ^= 0x01  # inside entry 2's record, entry 3 whole after it
    log.write_bytes(bytes(damaged))
    with pytest.raises(CorruptStorageError, match="whole records after it"):
        FileStorage(tmp_path)


def test_losing_committed_entries_is_not_a_torn_tail(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save(HardState(1, 1, 3), entries(1, 1, 3))
    storage.close()
    log = tmp_path / "log"
    log.write_bytes(log.read_bytes()[:-5])
    with pytest.raises(CorruptStorageError):
        FileStorage(tmp_path)


def test_damaged_hard_state_is_reported(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save(HardState(1, 1, 0), entries(1, 1, 1))
    storage.close()
    path = tmp_path / "hardstate"
    path.write_bytes(b"\x00" + path.read_bytes()[1:])
    with pytest.raises(CorruptStorageError):
        FileStorage(tmp_path)


def test_crash_between_snapshot_install_and_log_reset(tmp_path: Path) -> None:
    """The snapshot file is written first: if the crash comes before the log is reset,
    the old log does not continue the snapshot's history and must be dropped."""
    first = tmp_path / "first"
    storage = FileStorage(first)
    storage.save(HardState(1, 0, 0), entries(1, 1, 10))
    storage.close()
    donor = tmp_path / "donor"
    other = FileStorage(donor)
    other.save(HardState(3, 0, 5), [], Snapshot(5, 3, b"leader state"))
    other.close()
    (first / "snapshot").write_bytes((donor / "snapshot").read_bytes())
    reopened = FileStorage(first)
    assert reopened.snapshot().index == 5
    assert (reopened.first_index(), reopened.last_index(), reopened.term(5)) == (6, 5, 3)


def test_random_saves_and_crashes_keep_a_consistent_prefix(tmp_path: Path) -> None:
    """After a crash mid-save the log is the previous one with a prefix of the batch
    applied: k whole entries of it (k may be 0), never a part of one."""
    rng = random.Random(7)
    directory = tmp_path / "node"
    model: list[tuple[int, int]] = []  # (term, index) of the log as last opened
    term = 1
    crashes = 0
    for _ in range(60):
        storage = FileStorage(directory)
        assert [(t, i) for t, i, _ in log_of(storage)] == model
        log = directory / "log"
        size_before = log.stat().st_size
        start = rng.randint(max(1, len(model) - 2), len(model) + 1)
        term += rng.random() < 0.3
        batch = [(term, i) for i in range(start, start + 4)]
        storage.save(None, [Entry(t, i, b"x" * rng.randint(0, 9)) for t, i in batch])
        storage.close()
        if rng.random() < 0.5:
            crashes += 1
            written = log.read_bytes()
            log.write_bytes(written[: rng.randint(size_before, len(written) - 1)])
            survivors = [(t, i) for t, i, _ in log_of(FileStorage(directory))]
            kept = len(survivors) - (start - 1)
            if survivors == model:
                continue
            assert 0 < kept < len(batch)
            assert survivors == model[: start - 1] + batch[:kept]
            model = survivors
        else:
            model = model[: start - 1] + batch
    assert crashes > 10


def test_cluster_restarts_from_file_storage(tmp_path: Path) -> None:
    peers = (1, 2, 3)

    def start(node_id: int) -> tuple[RaftNode, FileStorage]:
        storage = FileStorage(tmp_path / str(node_id))
        node = RaftNode(Config(node_id, peers, random.Random(node_id)), storage)
        return node, storage

    def stabilize(cluster: dict[int, tuple[RaftNode, FileStorage]]) -> dict[int, list[bytes]]:
        applied: dict[int, list[bytes]] = {i: [] for i in cluster}
        busy = True
        while busy:
            busy = False
            messages = []
            for node_id, (node, storage) in cluster.items():
                while node.has_ready():
                    busy = True
                    ready = node.ready()
                    storage.save(ready.hard_state, ready.entries, ready.snapshot)
                    messages.extend(ready.messages)
                    applied[node_id].extend(e.data for e in ready.committed_entries if e.data)
                    node.advance(ready)
            for message in messages:
                cluster[message.dst][0].step(message)
        return applied

    cluster = {i: start(i) for i in peers}
    cluster[1][0].campaign()
    stabilize(cluster)
    cluster[1][0].propose_batch([b"a", b"b"])
    stabilize(cluster)
    for _, storage in cluster.values():
        storage.close()

    cluster = {i: start(i) for i in peers}
    applied = stabilize(cluster)
    assert all(applied[i] == [b"a", b"b"] for i in peers)
    assert all(node.term == 1 for node, _ in cluster.values())
    cluster[2][0].campaign()
    stabilize(cluster)
    assert cluster[2][0].role is Role.LEADER and cluster[2][0].term == 2
    cluster[2][0].propose(b"c")
    applied = stabilize(cluster)
    assert all(applied[i] == [b"c"] for i in peers)
