"""Record encoding, the codecs, tags and the tag filter."""

import pytest

from rtcommon.log import (
    HEADER_SIZE,
    NEED_DATA,
    SEALED,
    Codec,
    CodecError,
    Corrupt,
    RecordDecoder,
    RecordError,
    TagFilter,
    encode_message,
    encode_record,
    message_tags,
)


def decode_one(raw: bytes):
    decoder = RecordDecoder(0)
    decoder.feed(raw)
    records, outcome = decoder.next_records()
    assert outcome is NEED_DATA
    assert len(records) == 1
    return records[0]


def test_header_fields_round_trip():
    raw = encode_record(
        b"payload", origin="feed-1", ts=-5, id=-(2**63), timeout=-7, tags=("upd", "trade")
    )
    record = decode_one(raw)
    assert record.raw == raw
    assert record.position == len(raw)
    assert (record.origin, record.ts, record.id, record.timeout) == ("feed-1", -5, -(2**63), -7)
    assert record.tags == ("upd", "trade")
    assert record.codec is Codec.RAW
    assert record.payload == b"payload"
    assert record.data == b"payload"


def test_no_timeout_reads_back_as_none():
    assert decode_one(encode_record(b"", origin="", ts=0, id=0)).timeout is None
    assert decode_one(encode_record(b"", origin="", ts=0, id=0, timeout=0)).timeout == 0


def test_empty_record_is_header_only():
    assert len(encode_record(b"", origin="", ts=0, id=0)) == HEADER_SIZE


def test_msgpack_message_keeps_tuples_and_tags():
    message = ("upd", "trade", {"sym": "A", "px": 1.5, "sizes": [1, 2]})
    record = decode_one(encode_message(message, origin="o", ts=1, id=1))
    assert record.codec is Codec.MSGPACK
    assert record.tags == ("upd", "trade")
    assert record.data == message
    assert type(record.data) is tuple


def test_lists_stay_lists():
    record = decode_one(encode_message(["upd", 3], origin="o", ts=1, id=1))
    assert record.data == ["upd", 3]
    assert record.tags == ("upd",)


@pytest.mark.parametrize(
    ("message", "tags"),
    [
        (("upd", "trade", 1), ("upd", "trade")),
        (("upd", 1, "x"), ("upd",)),
        ([1, "upd"], ()),
        (("a", "b", "c"), ("a", "b")),
        ("upd", ()),
        ({"upd": 1}, ()),
        ((), ()),
    ],
)
def test_tags_are_the_leading_strings_of_a_sequence(message, tags):
    assert message_tags(message) == tags


def test_explicit_tags_override():
    record = decode_one(encode_message(b"x", origin="o", ts=1, id=1, codec=Codec.RAW, tags=("t",)))
    assert record.tags == ("t",)


@pytest.mark.parametrize("message", [object(), 1j, 2**70, {"k": Ellipsis}])
def test_msgpack_refuses_what_it_cannot_encode(message):
    with pytest.raises(CodecError):
        encode_message(message, origin="o", ts=1, id=1)


def test_raw_codec_takes_bytes_only():
    assert (
        decode_one(encode_message(bytearray(b"ab"), origin="o", ts=1, id=1, codec=Codec.RAW)).data
        == b"ab"
    )
    with pytest.raises(CodecError, match="raw codec takes bytes"):
        encode_message("text", origin="o", ts=1, id=1, codec=Codec.RAW)


def test_codec_lookup():
    assert Codec.named("msgpack") is Codec.MSGPACK
    assert Codec.named("RAW") is Codec.RAW
    assert Codec.named(1) is Codec.MSGPACK
    with pytest.raises(CodecError, match="unknown codec 'pickle'"):
        Codec.named("pickle")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"id": 2**63},
        {"ts": -(2**63) - 1},
        {"timeout": 2**31},
        {"origin": "x" * 256},
        {"tags": ("x" * 256,)},
        {"tags": ("a", "b", "c")},
        {"tags": (1,)},
    ],
)
def test_out_of_range_fields_are_refused(kwargs):
    fields = {"origin": "o", "ts": 0, "id": 0} | kwargs
    with pytest.raises(RecordError):
        encode_record(b"", **fields)


def test_tag_filter_matches_leading_tags_only():
    records = [
        encode_message(("upd", "trade", 1), origin="o", ts=1, id=1),
        encode_message(("upd", "quote", 2), origin="o", ts=1, id=2),
        encode_message(("upd",), origin="o", ts=1, id=3),
        encode_message(("upd", "tradex", 4), origin="o", ts=1, id=4),
        encode_message(b"trade", origin="upd", ts=1, id=5, codec=Codec.RAW, tags=("upd",)),
        encode_message(("xupd", "trade", 6), origin="o", ts=1, id=6),
    ]
    ids = {}
    for tags in [("upd", "trade"), ("upd",), ("trade",)]:
        decoder = RecordDecoder(0, TagFilter(tags))
        decoder.feed(b"".join(records))
        found, outcome = decoder.next_records()
        assert outcome is NEED_DATA
        assert decoder.position == sum(map(len, records))
        ids[tags] = [record.id for record in found]
    assert ids == {("upd", "trade"): [1], ("upd",): [1, 2, 3, 4, 5], ("trade",): []}


def test_tag_filter_needs_one_or_two_tags():
    with pytest.raises(RecordError):
        TagFilter(())
    with pytest.raises(RecordError):
        TagFilter(("a", "b", "c"))


def test_decoder_frames_byte_by_byte():
    raws = [encode_message(("m", i), origin="o", ts=i, id=i) for i in range(5)]
    stream = b"".join(raws)
    decoder = RecordDecoder(1000)
    taken = []
    for i in range(len(stream)):
        decoder.feed(stream[i : i + 1])
        while True:
            item = decoder.next_record()
            if item is NEED_DATA:
                break
            taken.append(item)
    assert [r.raw for r in taken] == raws
    assert taken[-1].position == 1000 + len(stream)
    assert decoder.position == 1000 + len(stream)


def test_decoder_reports_seal_and_corruption():
    good = encode_message(("m", 1), origin="o", ts=1, id=1)
    from rtcommon.log import SEAL_TRAILER

    decoder = RecordDecoder(0)
    decoder.feed(good + SEAL_TRAILER + good)
    records, outcome = decoder.next_records()
    assert len(records) == 1 and outcome is SEALED

    bad = bytearray(good)
    bad[-1] ^= 0xFF
    decoder = RecordDecoder(10)
    decoder.feed(good + bytes(bad) + good)
    records, outcome = decoder.next_records()
    assert len(records) == 1
    assert outcome == Corrupt(10 + len(good), "CRC32C mismatch")
    decoder.feed(good)  # nothing after corruption is ever a record
    assert decoder.next_records() == ([], outcome)


def test_decoder_reports_impossible_lengths_at_once():
    decoder = RecordDecoder(0)
    decoder.feed(b"\x05\x00\x00\x00" + b"\x00" * 40)
    records, outcome = decoder.next_records()
    assert records == [] and isinstance(outcome, Corrupt)
    assert "impossible record length 5" in outcome.reason


def test_framing_without_crc_checks_lengths_and_format_only():
    good = encode_message(("m", 1), origin="o", ts=1, id=1)
    flipped = bytearray(good)
    flipped[-1] ^= 0xFF
    trusted = RecordDecoder(0, verify=False)
    trusted.feed(bytes(flipped))
    (record,), outcome = trusted.next_records()
    assert outcome is NEED_DATA and record.raw == bytes(flipped)  # the CRC is not looked at
    bad_format = bytearray(good)
    bad_format[8] = 0x00
    trusted = RecordDecoder(0, verify=False)
    trusted.feed(bytes(bad_format))
    assert trusted.next_records()[1] == Corrupt(0, "CRC32C mismatch")
