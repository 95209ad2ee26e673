"""Chunks read from a log and copied into a mirror: byte-identical copies, clean errors."""

import filecmp
import os

import pytest
from crc32c import crc32c

from rtcommon.log import (
    BADTAIL,
    SEAL_TRAILER,
    Chunk,
    Codec,
    LogEvent,
    LogLockedError,
    LogMirror,
    LogReader,
    LogWriter,
    MirrorError,
    Record,
    RecordDecoder,
    encode_message,
    file_start,
    list_log_files,
    make_position,
    read_log,
)


def record(i: int) -> bytes:
    return encode_message(b"r%d" % i, origin="pub", ts=i, id=i + 1, codec=Codec.RAW)


def write_source(directory, sessions=2, per_session=25, roll_size=300):
    for s in range(sessions):
        with LogWriter(directory, roll_size=roll_size) as writer:
            for i in range(per_session):
                writer.append(record(s * per_session + i))


def all_chunks(directory, position=None, chunk_size=4 << 20, pieces=False):
    with LogReader(directory, position, chunk_size=chunk_size, pieces=pieces) as reader:
        return list(iter(reader.read_chunks, []))


def flatten(batches):
    return [item for batch in batches for item in batch]


def test_chunks_copied_into_a_mirror_make_identical_files(tmp_path):
    source, copy = tmp_path / "source", tmp_path / "copy"
    write_source(source)
    items = flatten(all_chunks(source, chunk_size=100))
    assert all(isinstance(item, Chunk) for item in items)
    assert sum(1 for c in items if c.sealed) == len(list_log_files(source))
    with LogMirror(copy) as mirror:
        for chunk in items:
            mirror.write(chunk)
        assert mirror.end == items[-1].end
    names = sorted(n for n in os.listdir(source) if n.startswith("log."))
    match, mismatch, errors = filecmp.cmpfiles(source, copy, names, shallow=False)
    assert (match, mismatch, errors) == (names, [], [])
    assert [r.raw for r in read_log(copy)] == [r.raw for r in read_log(source)]


def test_overlapping_and_repeated_chunks_are_trimmed(tmp_path):
    source, copy = tmp_path / "source", tmp_path / "copy"
    write_source(source, sessions=1)
    items = flatten(all_chunks(source, chunk_size=60))
    with LogMirror(copy) as mirror:
        for chunk in items:
            mirror.write(chunk)
            mirror.write(chunk)  # a second source sending the same
        for chunk in items:
            mirror.write(chunk)  # everything again, long after
        assert mirror.records_written == 25  # each record counted once
    assert [r.id for r in read_log(copy)] == list(range(1, 26))
    big = Chunk(items[0].position, items[0].data + items[1].data)  # overlaps, then new
    with LogMirror(tmp_path / "copy2") as mirror:
        mirror.write(items[0])
        mirror.write(big)
        assert mirror.end == items[1].end


def test_overlapping_bytes_that_differ_are_refused_not_trimmed(tmp_path):
    """Two logs claiming the same positions (a forged push before the real one): the copy
    keeps the first and refuses the other, rather than trimming it away unseen."""
    forged = [encode_message(b"r9", origin="bad", ts=i, id=i, codec=Codec.RAW) for i in (1, 2)]
    real = [record(1), record(2)]
    assert len(forged[0]) == len(real[0])  # the same lengths: only the bytes differ
    with LogMirror(tmp_path) as mirror:
        mirror.write(Chunk(0, forged[0]))
        with pytest.raises(MirrorError, match=r"differs from the \d+ bytes the copy"):
            mirror.write(Chunk(0, real[0] + real[1]))
        assert mirror.end == len(forged[0])
        mirror.write(Chunk(0, forged[0] + forged[1]))  # the same bytes again, then new
        assert mirror.end == len(forged[0]) + len(forged[1])
    assert [r.origin for r in read_log(tmp_path)] == ["bad", "bad"]


def test_gaps_bad_bytes_and_unsealed_files_are_refused(tmp_path):
    one, two = record(1), record(2)
    with LogMirror(tmp_path) as mirror:
        mirror.write(Chunk(0, one))
        with pytest.raises(MirrorError, match="gap"):
            mirror.write(Chunk(len(one) + 1, two))
        with pytest.raises(MirrorError, match="CRC32C mismatch"):
            mirror.write(Chunk(len(one), two[:-1] + b"\0"))
        with pytest.raises(MirrorError, match="partial record"):
            mirror.write(Chunk(len(one), two[:-1]))
        with pytest.raises(MirrorError, match="not sealed"):
            mirror.write(Chunk(file_start(0, 1), two))
        mirror.write(Chunk(len(one), b"", sealed=True))
        with pytest.raises(MirrorError, match="sealed"):
            mirror.write(Chunk(len(one), two))
        with pytest.raises(MirrorError, match="mid-file"):
            mirror.write(Chunk(make_position(0, 1, 5), two))
        mirror.write(Chunk(file_start(3, 0), two))  # a later session starts cleanly
        assert mirror.end == file_start(3, 0) + len(two)
    assert [r.id for r in read_log(tmp_path)] == [2, 3]


def test_one_mirror_per_directory(tmp_path):
    with LogMirror(tmp_path), pytest.raises(LogLockedError):
        LogMirror(tmp_path)


def test_a_suspended_mirror_holds_no_descriptor_and_goes_on_at_the_next_write(
    tmp_path, open_descriptors
):
    source, copy = tmp_path / "source", tmp_path / "copy"
    write_source(source)
    items = flatten(all_chunks(source, chunk_size=100))
    idle = open_descriptors()
    with LogMirror(copy, sync="none") as mirror:
        for n, chunk in enumerate(items):
            mirror.write(chunk)
            if n % 3 == 0:
                end = mirror.end
                mirror.suspend()
                assert mirror.suspended and open_descriptors() == idle
                assert mirror.end == mirror.durable == end  # forced to disk first
                with LogMirror(copy, sync="none"):  # the lock is free meanwhile
                    pass
                mirror.write(chunk)  # taken again; the same bytes compare equal
                assert not mirror.suspended
        mirror.suspend()
        with LogMirror(copy):  # another writer holds it: the next write says so
            with pytest.raises(LogLockedError):
                mirror.write(items[-1])
            assert mirror.suspended
    assert open_descriptors() == idle
    assert [r.raw for r in read_log(copy)] == [r.raw for r in read_log(source)]


def test_a_file_that_cannot_be_started_leaves_the_copy_as_it_was(tmp_path):
    """A new file the copy cannot create (here a folder in its way; a full disk alike):
    the write fails, the copy still holds its last file (an old chunk is still compared
    with it, not with whatever took its descriptor), and the same chunk goes in later."""
    source, copy = tmp_path / "source", tmp_path / "copy"
    write_source(source, sessions=1)
    items = flatten(all_chunks(source))
    first_file = [c for c in items if c.position < file_start(0, 1)]
    second = next(c for c in items if c.position == file_start(0, 1))
    (tmp_path / "other").write_bytes(bytes(1 << 16))
    with LogMirror(copy) as mirror:
        for chunk in first_file:
            mirror.write(chunk)
        end = mirror.end
        (copy / "log.0.1").mkdir()
        with pytest.raises(IsADirectoryError):
            mirror.write(second)
        with open(tmp_path / "other", "rb"):  # takes the lowest free descriptor
            assert mirror.write(first_file[0]) == end
        (copy / "log.0.1").rmdir()
        for chunk in items[len(first_file) :]:
            mirror.write(chunk)
    assert [r.raw for r in read_log(copy)] == [r.raw for r in read_log(source)]


def test_reopen_cuts_a_torn_tail_and_resumes(tmp_path):
    with LogMirror(tmp_path) as mirror:
        mirror.write(Chunk(0, record(1) + record(2)))
        end = mirror.end
    with open(tmp_path / "log.0.0", "ab") as file:
        file.write(record(3)[:10])  # a crash mid-write
    with LogMirror(tmp_path) as mirror:
        assert mirror.end == end and not mirror.sealed
        assert os.path.getsize(tmp_path / "log.0.0") == end
        mirror.write(Chunk(end, record(3), sealed=True))
    with LogMirror(tmp_path) as mirror:
        assert mirror.sealed and mirror.end == end + len(record(3))


def test_a_copy_may_begin_mid_file(tmp_path):
    source, copy = tmp_path / "source", tmp_path / "copy"
    write_source(source, sessions=1, roll_size=1 << 20)
    everything = read_log(source)
    start = everything[9].position
    items = flatten(all_chunks(source, start, chunk_size=64))
    with LogMirror(copy) as mirror, pytest.raises(MirrorError, match="mid-file"):
        mirror.write(items[0])
    with LogMirror(copy, start_mid_file=True) as mirror:
        mirror.write(items[0])
    with LogMirror(copy) as mirror:  # reopening knows where the copy began
        assert mirror.end == items[0].end
        for chunk in items[1:]:
            mirror.write(chunk)
    assert [r.raw for r in read_log(copy, start)] == [r.raw for r in everything[10:]]


def test_chunks_of_a_torn_source_seal_at_the_last_good_record(tmp_path):
    writer = LogWriter(tmp_path)
    writer.append(record(0))
    writer.commit()
    with open(tmp_path / "log.0.0", "ab") as file:
        file.write(record(1)[:-1])
    os.close(writer._fd)
    writer._lock.release()
    with LogWriter(tmp_path) as restarted:
        restarted.append(record(2))
    items = flatten(all_chunks(tmp_path))
    good = len(record(0))
    assert items[0] == Chunk(0, record(0))
    assert items[1] == Chunk(good, b"", sealed=True)
    assert items[2] == LogEvent(BADTAIL, (good, file_start(1, 0)))
    assert items[3] == Chunk(file_start(1, 0), record(2), sealed=True)  # ends its sealed file
    assert len(items) == 4


def test_reading_up_to_a_limit_stops_exactly_there(tmp_path):
    write_source(tmp_path, sessions=2, per_session=10, roll_size=150)
    everything = read_log(tmp_path)
    with LogReader(tmp_path) as records, LogReader(tmp_path) as chunks:
        for stop in [everything[i].position for i in (0, 2, 3, 9, 10, 15, 19)]:
            got = flatten(iter(lambda stop=stop: records.read(stop), []))
            assert got and got[-1].position == stop
            assert records.position == stop
            copied = [
                c for c in flatten(iter(lambda stop=stop: chunks.read_chunks(stop), [])) if c.data
            ]
            assert copied[-1].end == stop and chunks.position == stop


def pieces(raw: bytes, position: int, size: int) -> list[Chunk]:
    return [Chunk(position + i, raw[i : i + size]) for i in range(0, len(raw), size)]


def test_a_record_in_pieces_counts_only_once_whole_and_checked(tmp_path):
    small, big = record(1), encode_message(b"b" * 50_000, origin="pub", ts=2, id=2)
    with LogMirror(tmp_path / "copy") as mirror:
        mirror.write(Chunk(0, small))
        first, *rest = pieces(big, len(small), 4096)
        assert mirror.write(Chunk(0, small + first.data)) == len(small)  # overlap, then a piece
        for chunk in rest[:-1]:
            assert mirror.write(chunk) == len(small)
        broken = Chunk(rest[-1].position, rest[-1].data[:-1] + b"\0")
        with pytest.raises(MirrorError, match="fails its CRC32C check"):
            mirror.write(broken)
        assert mirror.end == mirror.received == len(small)  # the part went: sent again
        assert (tmp_path / "copy/log.0.0").stat().st_size == len(small)
        for chunk in [first, *rest]:
            mirror.write(chunk)
        assert mirror.end == len(small) + len(big)
        assert mirror.records_written == 2
    assert [r.raw for r in read_log(tmp_path / "copy")] == [small, big]


def test_a_record_cut_short_is_cut_at_reopen_and_sent_again(tmp_path):
    big = encode_message(b"b" * 50_000, origin="pub", ts=1, id=1)
    chunks = pieces(big, 0, 8192)
    with LogMirror(tmp_path / "copy") as mirror:
        for chunk in chunks[:3]:
            mirror.write(chunk)
        assert mirror.end == 0
    assert (tmp_path / "copy/log.0.0").stat().st_size == 3 * 8192
    with LogMirror(tmp_path / "copy") as mirror:  # reopened: the part is not held
        assert mirror.end == 0
        assert (tmp_path / "copy/log.0.0").stat().st_size == 0
        for chunk in chunks:
            mirror.write(chunk)
        assert mirror.end == len(big)


def test_a_part_of_a_record_that_differs_is_refused(tmp_path):
    """Two sources of one copy send the same bytes: other bytes where a record has come
    in part are another log's, refused as for whole records."""
    old = encode_message(b"o" * 20_000, origin="pub", ts=1, id=1)
    new = encode_message(b"n" * 30_000, origin="pub", ts=1, id=1)
    with LogMirror(tmp_path / "copy") as mirror:
        mirror.write(pieces(old, 0, 8192)[0])
        with pytest.raises(MirrorError, match="another log"):
            mirror.write(pieces(new, 0, 8192)[0])
        for chunk in pieces(old, 0, 8192):
            mirror.write(chunk)
        assert mirror.end == len(old)


def test_a_long_record_its_writer_stopped_inside_is_let_go_when_the_source_moves_on(tmp_path):
    """A publisher killed while writing a long record leaves it torn, and its next
    session writes a new file. The pieces already sent are let go where the source
    seals the torn file, and the copy goes on with the next file, as the log reads."""
    source = tmp_path / "source"
    small, big = record(1), encode_message(b"b" * 50_000, origin="pub", ts=2, id=2)
    source.mkdir()
    (source / "log.0.0").write_bytes(small + big[:30_000])  # no seal: its writer died
    with LogWriter(source, roll_size=1 << 20) as writer:  # the next session: log.1.0
        writer.append(record(3))
    chunks = flatten(all_chunks(source, chunk_size=4096, pieces=True))
    assert any(isinstance(item, LogEvent) and item.kind == BADTAIL for item in chunks)
    with LogMirror(tmp_path / "copy") as mirror:
        for chunk in (c for c in chunks if isinstance(c, Chunk)):
            mirror.write(chunk)
    assert (tmp_path / "copy/log.0.0").read_bytes() == small + SEAL_TRAILER
    assert [r.raw for r in read_log(tmp_path / "copy") if isinstance(r, Record)] == [
        small,
        record(3),
    ]


def test_a_first_piece_is_refused_unless_its_head_names_its_origin(tmp_path):
    """A record's origin is read from its first piece (admission of an external
    client's records): a head with more than two tags could put the origin past what
    the piece holds, so that the piece read as 'alice' and the record as 'alice-admin'."""
    raw = bytearray(
        encode_message(b"x" * 20_000, origin="alice-admin", ts=1, id=1, tags=("a" * 255, "b" * 255))
    )
    raw[32] = 3  # a third "tag": the origin then starts where the piece ends
    raw[4:8] = crc32c(bytes(raw[8:])).to_bytes(4, "little")
    admitted = []
    with LogMirror(tmp_path / "copy") as mirror, pytest.raises(MirrorError, match="3 tags"):
        mirror.write(Chunk(0, bytes(raw[:4096])), admit=lambda *a: admitted.append(a))
    assert admitted == []


def test_pieces_that_cannot_be_a_record_are_refused(tmp_path):
    big = encode_message(b"b" * 20_000, origin="pub", ts=1, id=1)
    with LogMirror(tmp_path / "copy") as mirror:
        with pytest.raises(MirrorError, match="partial record"):
            mirror.write(Chunk(0, big[:100]))  # a first piece without the record's head
        with pytest.raises(MirrorError, match="inside a record"):
            mirror.write(Chunk(0, big[:4096], sealed=True))
        mirror.write(Chunk(0, big[:4096]))
        with pytest.raises(MirrorError, match="gap"):
            mirror.write(Chunk(5000, big[5000:8000]))
        assert mirror.end == 0


def test_admit_sees_every_new_record_once_a_long_one_by_its_first_piece(tmp_path):
    seen = []
    small = encode_message(b"s", origin="alice", ts=1, id=1)
    big = encode_message(b"b" * 20_000, origin="bob", ts=2, id=2)

    def admit(origin: str, position: int) -> None:
        seen.append((origin, position))
        if origin == "mallory":
            raise PermissionError(origin)

    with LogMirror(tmp_path / "copy") as mirror:
        head, *rest = pieces(small + big, 0, 4096)
        mirror.write(head, admit=admit)
        mirror.write(head, admit=admit)  # nothing new
        for chunk in rest:
            mirror.write(chunk, admit=admit)
        assert seen == [("alice", 0), ("bob", len(small))]
        end = mirror.end
        forged = encode_message(b"f" * 20_000, origin="mallory", ts=3, id=3)
        with pytest.raises(PermissionError):
            mirror.write(Chunk(end, forged[:4096]), admit=admit)
        assert (tmp_path / "copy/log.0.0").stat().st_size == end  # nothing of it written


def test_a_reader_reads_a_long_record_once_it_is_all_there(tmp_path, monkeypatch):
    """A reader following a copy whose long record arrives in pieces (a subscriber's
    copy) does not feed its decoder the record bit by bit: each feed would copy again
    all it holds of it (a 256 MiB message took 23 s to deliver so)."""
    copied = []

    class Counting(RecordDecoder):
        def feed(self, data: bytes) -> None:
            super().feed(data)
            copied.append(self.buffered)

    monkeypatch.setattr("rtcommon.log._reader.RecordDecoder", Counting)
    big = encode_message(bytes(4 << 20), origin="pub", ts=1, id=1)
    read = []
    with LogMirror(tmp_path / "copy") as mirror, LogReader(tmp_path / "copy", 0) as reader:
        for chunk in pieces(big, 0, 64 << 10):
            mirror.write(chunk)
            read += reader.read()
    assert [r.raw for r in read] == [big]
    assert sum(copied) <= 2 * len(big)
