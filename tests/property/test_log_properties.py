"""Properties of the log format, checked on generated records and damaged files."""

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from rtcommon.log import (
    BADTAIL,
    NEED_DATA,
    SEAL_TRAILER,
    Chunk,
    Corrupt,
    LogEvent,
    LogMirror,
    LogReader,
    LogWriter,
    Record,
    RecordDecoder,
    encode_message,
    encode_record,
    file_start,
    read_log,
    split_position,
)
from rtcommon.log._record import RECORD_HEAD_MAX

i64 = st.integers(-(2**63), 2**63 - 1)
names = st.text(max_size=20).filter(lambda s: len(s.encode()) <= 255)
msgpack_values = st.recursive(
    st.none() | st.booleans() | i64 | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    payload=st.binary(max_size=300),
    origin=names,
    ts=i64,
    id=i64,
    timeout=st.none() | st.integers(-(2**31), 2**31 - 1),
    tags=st.lists(names, max_size=2).map(tuple),
)
def test_any_raw_record_round_trips(payload, origin, ts, id, timeout, tags):
    raw = encode_record(payload, origin=origin, ts=ts, id=id, timeout=timeout, tags=tags)
    decoder = RecordDecoder(7)
    decoder.feed(raw)
    (record,), outcome = decoder.next_records()
    assert outcome is NEED_DATA
    assert (record.payload, record.origin, record.ts, record.id, record.timeout, record.tags) == (
        payload,
        origin,
        ts,
        id,
        timeout,
        tags,
    )
    assert record.position == 7 + len(raw)


@given(message=msgpack_values | st.tuples(names, names, msgpack_values))
def test_any_msgpack_message_round_trips(message):
    raw = encode_message(message, origin="o", ts=0, id=1)
    decoder = RecordDecoder(0)
    decoder.feed(raw)
    (record,), _ = decoder.next_records()
    assert record.data == message


def _write_damaged_log(directory: Path, raws: list[bytes], damage) -> bytes:
    """log.0.0 holds ``raws`` and a seal, damaged by ``damage``; log.1.0 holds one marker."""
    first = bytearray(b"".join(raws) + SEAL_TRAILER)
    damage(first)
    (directory / "log.0.0").write_bytes(bytes(first))
    marker = encode_message(("marker",), origin="m", ts=0, id=1)
    (directory / "log.1.0").write_bytes(marker)
    return marker


def _check(items, raws, intact_count, bad_offset):
    """Exactly the intact records, then a badtail at ``bad_offset`` if any, then the marker."""
    delivered = [item for item in items if isinstance(item, Record)]
    assert [r.raw for r in delivered[:-1]] == raws[:intact_count]
    events = [item for item in items if isinstance(item, LogEvent)]
    if bad_offset is None:
        assert events == []
    else:
        assert events == [LogEvent(BADTAIL, (bad_offset, file_start(1, 0)))]
    assert delivered[-1].tags == ("marker",)
    assert items[-1] is delivered[-1]


record_lists = st.lists(
    st.tuples(st.binary(max_size=60), st.lists(st.sampled_from(["upd", "trade"]), max_size=2)),
    min_size=1,
    max_size=12,
).map(
    lambda specs: [
        encode_record(p, origin="o", ts=i, id=i, tags=tuple(t)) for i, (p, t) in enumerate(specs)
    ]
)


@settings(max_examples=300, deadline=None)
@given(raws=record_lists, data=st.data())
def test_truncation_gives_a_clean_end_or_a_badtail(raws, data):
    total = sum(map(len, raws)) + len(SEAL_TRAILER)
    cut = data.draw(st.integers(0, total))
    boundaries = [0]
    for raw in raws:
        boundaries.append(boundaries[-1] + len(raw))
    intact = sum(1 for b in boundaries[1:] if b <= cut)
    clean = cut in boundaries or cut == total
    with tempfile.TemporaryDirectory() as tmp:
        _write_damaged_log(Path(tmp), raws, lambda buf: buf.__delitem__(slice(cut, None)))
        _check(read_log(tmp), raws, intact, None if clean else boundaries[intact])


@settings(max_examples=300, deadline=None)
@given(raws=record_lists, data=st.data())
def test_any_single_byte_corruption_is_a_badtail_never_a_wrong_record(raws, data):
    total = sum(map(len, raws)) + len(SEAL_TRAILER)
    index = data.draw(st.integers(0, total - 1))
    flip = data.draw(st.integers(1, 255))
    boundaries = [0]
    for raw in raws:
        boundaries.append(boundaries[-1] + len(raw))
    hit = sum(1 for b in boundaries[1:] if b <= index)  # records wholly before the byte

    def corrupt(buf):
        buf[index] ^= flip

    with tempfile.TemporaryDirectory() as tmp:
        _write_damaged_log(Path(tmp), raws, corrupt)
        _check(read_log(tmp), raws, hit, boundaries[hit])
        # the same holds with a tag filter, which must not skip the check
        filtered = read_log(tmp, tag_filter=("marker",))
        assert filtered[0] == LogEvent(BADTAIL, (boundaries[hit], file_start(1, 0)))


@settings(max_examples=100, deadline=None)
@given(raws=record_lists, chunk=st.integers(1, 64))
def test_chunked_reads_match_whole_reads(raws, chunk):
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "log.0.0").write_bytes(b"".join(raws))
        from rtcommon.log import LogReader

        with LogReader(tmp, chunk_size=chunk) as reader:
            items = list(reader)
        assert [r.raw for r in items] == raws
        assert os.path.getsize(Path(tmp, "log.0.0")) == items[-1].position


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 9000), min_size=1, max_size=12),
    chunk_size=st.integers(100, 3000),
    roll_size=st.integers(12_000, 40_000),
)
def test_a_log_read_in_pieces_and_copied_into_a_mirror_is_the_same_log(
    sizes, chunk_size, roll_size
):
    """Records longer than the read size travel in pieces of about that size; a mirror
    fed the pieces holds the same files, byte for byte, and counts a record only once
    it is whole."""
    with tempfile.TemporaryDirectory() as tmp:
        source, copy = Path(tmp) / "source", Path(tmp) / "copy"
        with LogWriter(source, roll_size=roll_size) as writer:
            for i, size in enumerate(sizes):
                writer.append(encode_record(bytes([i % 251]) * size, origin="o", ts=i, id=i + 1))
        ends = {r.position for r in read_log(source) if isinstance(r, Record)}
        with (
            LogReader(source, chunk_size=chunk_size, pieces=True) as reader,
            LogMirror(copy) as mirror,
        ):
            for chunk in (c for batch in iter(reader.read_chunks, []) for c in batch):
                assert isinstance(chunk, Chunk)
                # A piece past its own record's head and one read of leftover: bounded.
                assert len(chunk.data) <= 2 * max(chunk_size, RECORD_HEAD_MAX)
                end = mirror.write(chunk)
                assert end is None or end in ends or end == file_start(*split_position(end)[:2])
            assert not reader.mid_record
        for name in os.listdir(source):
            if name.startswith("log."):
                assert (copy / name).read_bytes() == (source / name).read_bytes(), name


@settings(max_examples=40, deadline=None)
@given(size=st.integers(2000, 20_000), piece=st.integers(100, 1500), flip=st.integers(0, 10**6))
def test_a_record_in_pieces_that_fails_its_crc_is_never_handed_out_whole(size, piece, flip):
    raw = bytearray(encode_record(b"x" * size, origin="o", ts=0, id=1))
    raw[8 + flip % (len(raw) - 8)] ^= 0x01
    decoder = RecordDecoder(100, piece_size=piece)
    handed = b""
    for start in range(0, len(raw), piece):
        decoder.feed(bytes(raw[start : start + piece]))
        _, data, outcome, records = decoder.next_chunk()
        handed += data
        assert records == 0
    assert isinstance(outcome, Corrupt) and outcome.position == 100  # the magic byte: format
    assert decoder.position == 100
    assert len(handed) < len(raw)
