"""The record: one message as bytes in a log file, and the scan that frames them.

Byte layout (little-endian; ``docs/log-format.md`` is the full specification)::

    offset size field
         0    4 length       u32, bytes of the whole record, this field included
         4    4 crc          u32, CRC32C (Castagnoli) of bytes [8, length)
         8    1 magic        0xA7: record format version 1
         9    1 codec        0 raw, 1 msgpack
        10    1 flags        bit 0: timeout present; bit 1: top-level tuple
        11    1 origin_len   bytes of the origin string
        12    8 ts           i64, nanoseconds since the Unix epoch
        20    8 id           i64, message id
        28    4 timeout      i32, meaningful only with flag bit 0
        32    1 tag_count    0, 1 or 2
        33    . tags         tag_count times: u8 length, UTF-8 bytes
         .    . origin       UTF-8, origin_len bytes
         .    . payload      the rest, encoded by the codec

A sealed file ends with the 8-byte trailer ``SEAL_TRAILER`` (a length field of
0xFFFFFFFF, impossible for a record, then ``b"SEAL"``).

Tags sit at a fixed offset so a tag filter compares bytes in place and never
touches a payload it rejects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from crc32c import crc32c

from ._codec import FLAG_TIMEOUT, MAX_TAGS, Codec, decode_payload, encode_payload, message_tags
from ._errors import RecordError, RecordTooLargeError
from ._position import MAX_FILE_SIZE

MAGIC: Final = 0xA7
HEADER_SIZE: Final = 33
TAGS_OFFSET: Final = 33
SEAL_TRAILER: Final = b"\xff\xff\xff\xffSEAL"
SEAL_SIZE: Final = len(SEAL_TRAILER)
#: The largest record any file can hold: a whole 1 GiB file less its seal.
MAX_RECORD_SIZE: Final = MAX_FILE_SIZE - SEAL_SIZE
MAX_NAME_BYTES: Final = 255
#: A record's fixed header, tags and origin lie within its first this many bytes, so the
#: first piece of a record sent in pieces carries at least these: who a record is from
#: and its format can be told from that piece alone.
RECORD_HEAD_MAX: Final = HEADER_SIZE + MAX_TAGS * (1 + MAX_NAME_BYTES) + MAX_NAME_BYTES

_PREFIX = struct.Struct("<II")
_FIELDS = struct.Struct("<BBBBqqiB")
# length, crc, magic and tag_count: all the scan loop needs of a header.
_SCAN_HEADER = struct.Struct("<IIB23xB")
_SEAL_LENGTH, _SEAL_CHECK = _PREFIX.unpack(SEAL_TRAILER)
_NO_TAGS = (0, b"")
_NEVER = MAX_TAGS + 1  # a tag count no record has: the scan keeps nothing


@lru_cache(maxsize=1024)
def encode_tags(tags: tuple[str, ...]) -> tuple[int, bytes]:
    """``(tag_count, tag bytes)`` for up to two tags, as laid out in a header."""
    if len(tags) > MAX_TAGS:
        raise RecordError(f"a record carries at most {MAX_TAGS} tags, not {len(tags)}")
    parts = []
    for tag in tags:
        if not isinstance(tag, str):
            raise RecordError(f"a tag is a string, not {tag!r}")
        raw = tag.encode()
        if len(raw) > MAX_NAME_BYTES:
            raise RecordError(f"tag {tag[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
        parts.append(bytes((len(raw),)) + raw)
    return len(tags), b"".join(parts)


def encode_record(
    payload: bytes,
    *,
    origin: str,
    ts: int,
    id: int,
    timeout: int | None = None,
    tags: tuple[str, ...] = (),
    codec: Codec = Codec.RAW,
    flags: int = 0,
) -> bytes:
    """Build one record from its fields; ``payload`` is already encoded by ``codec``."""
    tag_count, tag_bytes = encode_tags(tags) if tags else _NO_TAGS
    origin_bytes = origin.encode()
    if len(origin_bytes) > MAX_NAME_BYTES:
        raise RecordError(f"origin {origin[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
    if timeout is not None:
        flags |= FLAG_TIMEOUT
    try:
        fields = _FIELDS.pack(
            MAGIC, codec, flags, len(origin_bytes), ts, id, timeout or 0, tag_count
        )
    except struct.error as exc:
        raise RecordError(
            f"header field out of range (ts and id are signed 64-bit, timeout signed 32-bit;"
            f" got ts={ts!r} id={id!r} timeout={timeout!r}): {exc}"
        ) from exc
    body = b"".join((fields, tag_bytes, origin_bytes, payload))
    length = len(body) + 8
    if length > MAX_RECORD_SIZE:
        raise RecordTooLargeError(f"a record of {length} bytes exceeds {MAX_RECORD_SIZE}")
    return _PREFIX.pack(length, crc32c(body)) + body


def encode_message(
    message: Any,
    *,
    origin: str,
    ts: int,
    id: int,
    timeout: int | None = None,
    codec: Codec = Codec.MSGPACK,
    tags: tuple[str, ...] | None = None,
) -> bytes:
    """Encode ``message`` with ``codec`` into a record, tagged by its leading strings
    unless ``tags`` is given."""
    payload, flags = encode_payload(message, codec)
    return encode_record(
        payload,
        origin=origin,
        ts=ts,
        id=id,
        timeout=timeout,
        tags=message_tags(message) if tags is None else tags,
        codec=codec,
        flags=flags,
    )


class Record:
    """One decoded record: its bytes and the position just after it.

    Header fields are read from ``raw`` on access, so a record that is only
    passed along (copied, filtered, counted) costs no parsing.
    """

    __slots__ = ("position", "raw")

    def __init__(self, raw: bytes, position: int) -> None:
        self.raw = raw
        self.position = position

    def __repr__(self) -> str:
        return (
            f"Record(origin={self.origin!r}, id={self.id}, ts={self.ts}, tags={self.tags!r},"
            f" codec={self.codec.name.lower()}, {len(self.raw)} bytes, position={self.position})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self.raw == other.raw and self.position == other.position

    __hash__ = None  # type: ignore[assignment]

    @property
    def codec(self) -> Codec:
        return Codec(self.raw[9])

    @property
    def flags(self) -> int:
        return self.raw[10]

    @property
    def ts(self) -> int:
        return _FIELDS.unpack_from(self.raw, 8)[4]

    @property
    def id(self) -> int:
        return _FIELDS.unpack_from(self.raw, 8)[5]

    @property
    def timeout(self) -> int | None:
        fields = _FIELDS.unpack_from(self.raw, 8)
        return fields[6] if fields[2] & FLAG_TIMEOUT else None

    @property
    def tags(self) -> tuple[str, ...]:
        raw = self.raw
        tags = []
        cursor = TAGS_OFFSET
        for _ in range(raw[32]):
            size = raw[cursor]
            tags.append(raw[cursor + 1 : cursor + 1 + size].decode())
            cursor += 1 + size
        return tuple(tags)

    def _origin_start(self) -> int:
        raw = self.raw
        cursor = TAGS_OFFSET
        for _ in range(raw[32]):
            cursor += 1 + raw[cursor]
        return cursor

    @property
    def origin(self) -> str:
        start = self._origin_start()
        return self.raw[start : start + self.raw[11]].decode()

    @property
    def payload(self) -> bytes:
        return self.raw[self._origin_start() + self.raw[11] :]

    @property
    def data(self) -> Any:
        """The message, decoded from the payload by the record's codec."""
        raw = self.raw
        return decode_payload(memoryview(raw)[self._origin_start() + raw[11] :], raw[9], raw[10])


@dataclass(frozen=True, slots=True)
class RecordInPieces:
    """A record checked as its bytes come in pieces (one too long to travel whole): what
    its header says, and its CRC32C so far. Immutable: :meth:`add` returns the next."""

    start: int  #: the position of its first byte
    length: int  #: bytes of the whole record
    stored_crc: int  #: the CRC32C its header gives
    origin: str  #: who it is from, read from its head
    crc: int = 0  #: the CRC32C of its bytes [8, have)
    have: int = 0  #: its bytes come so far

    @classmethod
    def begin(cls, head: bytes, start: int, max_length: int = MAX_RECORD_SIZE) -> RecordInPieces:
        """The record whose first bytes are ``head`` (``RECORD_HEAD_MAX`` of them, or
        fewer if the record is shorter), none of it come yet. RecordError unless they can
        begin a record: a possible length, its format, at most two tags, and its tags
        and origin within ``head`` (so the origin read here is the one every reader of
        the whole record reads)."""
        if len(head) < HEADER_SIZE:
            raise RecordError(f"a record's first {len(head)} bytes do not hold its header")
        length, stored_crc = _PREFIX.unpack_from(head)
        if not HEADER_SIZE <= length <= MAX_RECORD_SIZE:
            raise RecordError(f"impossible record length {length}")
        if length > max_length:
            raise RecordError(f"a record of {length} bytes, over the limit of {max_length}")
        if len(head) < min(length, RECORD_HEAD_MAX):
            raise RecordError(
                f"a record's first piece holds {len(head)} bytes, not its head (its first"
                f" {RECORD_HEAD_MAX} bytes)"
            )
        if head[8] != MAGIC:
            raise RecordError(f"unknown record format 0x{head[8]:02x} (expected 0x{MAGIC:02x})")
        if head[32] > MAX_TAGS:
            raise RecordError(f"a record with {head[32]} tags (at most {MAX_TAGS})")
        cursor = TAGS_OFFSET
        for _ in range(head[32]):
            cursor += 1 + head[cursor] if cursor < len(head) else len(head)
        if cursor + head[11] > min(length, len(head)):
            raise RecordError("a record whose tags and origin run past its head")
        try:
            origin = bytes(head[cursor : cursor + head[11]]).decode()
        except UnicodeDecodeError:
            raise RecordError("a record whose origin is not UTF-8") from None
        return cls(start, length, stored_crc, origin)

    @property
    def missing(self) -> int:
        """Its bytes still to come."""
        return self.length - self.have

    @property
    def intact(self) -> bool:
        """Whole, and its CRC32C matches."""
        return self.have == self.length and self.crc == self.stored_crc

    def add(self, data: bytes | memoryview) -> RecordInPieces:
        """With ``data``, its next bytes (no more than are missing), come too."""
        skip = max(0, 8 - self.have)  # the length and CRC fields: not covered by the CRC
        crc = crc32c(memoryview(data)[skip:], self.crc) if len(data) > skip else self.crc
        return RecordInPieces(
            self.start, self.length, self.stored_crc, self.origin, crc, self.have + len(data)
        )


# Outcomes of a scan, besides the records it found.
NEED_DATA: Final = "need-data"  #: the buffer ends inside a record (or is empty)
SEALED: Final = "sealed"  #: the seal trailer: the file is complete
CORRUPT: Final = "corrupt"  #: the bytes at the stop offset are not a valid record


class TagFilter:
    """Matches records whose leading tags equal ``tags`` (one or two strings)."""

    __slots__ = ("need", "tag_bytes", "tags")

    def __init__(self, tags: tuple[str, ...]) -> None:
        if not 1 <= len(tags) <= MAX_TAGS:
            raise RecordError(f"a tag filter names 1 or {MAX_TAGS} tags, not {tags!r}")
        self.tags = tuple(tags)
        self.need, self.tag_bytes = encode_tags(self.tags)

    def __repr__(self) -> str:
        return f"TagFilter({self.tags!r})"

    def matches(self, raw: bytes) -> bool:
        return raw[32] >= self.need and raw.startswith(self.tag_bytes, TAGS_OFFSET)


def scan(
    buf: bytes,
    offset: int,
    base: int,
    tag_filter: TagFilter | None = None,
    *,
    keep: bool = True,
    end: int | None = None,
    verify: bool = True,
    max_length: int = MAX_RECORD_SIZE,
) -> tuple[list[Record], int, str, str, int]:
    """Frame and check the records in ``buf`` from ``offset`` on.

    ``base`` is the log position of ``buf[0]``. Returns ``(records, stop, outcome,
    reason, count)``: the records that passed their CRC (and the filter), the offset
    where scanning stopped, why it stopped (:data:`NEED_DATA`, :data:`SEALED`,
    :data:`CORRUPT`), when corrupt a human-readable reason, and how many records were
    framed before the stop (those the filter passed over included). With
    ``keep=False`` it only frames and checks: no record objects are made. With
    ``end`` it stops at that offset of ``buf`` as if the buffer ended there. With
    ``verify=False`` records are framed by their lengths without their CRC32C checked:
    only for bytes this process checked itself when they arrived (it halves the cost).
    A record longer than ``max_length`` stops the scan as corrupt (what a copy takes in).
    """
    # The loop is the per-record cost of every reader: it breaks on anything
    # unusual and leaves the diagnosis to _stop_reason.
    records: list[Record] = []
    append = records.append
    view = memoryview(buf)
    unpack = _SCAN_HEADER.unpack_from
    startswith = buf.startswith
    end = len(buf) if end is None else min(end, len(buf))
    last_header = end - HEADER_SIZE
    if not keep:
        need, tag_bytes = _NEVER, b""
    elif tag_filter is None:
        need, tag_bytes = 0, b""
    else:
        need, tag_bytes = tag_filter.need, tag_filter.tag_bytes
    count = 0
    while offset <= last_header:
        length, stored_crc, magic, tag_count = unpack(buf, offset)
        stop = offset + length
        if (
            length < HEADER_SIZE
            or length > max_length
            or stop > end
            or magic != MAGIC
            or (verify and crc32c(view[offset + 8 : stop]) != stored_crc)
        ):
            break
        if tag_count >= need and startswith(tag_bytes, offset + TAGS_OFFSET):
            append(Record(buf[offset:stop], base + stop))
        offset = stop
        count += 1
    outcome, reason = _stop_reason(buf, offset, end, max_length)
    return records, offset, outcome, reason, count


def _stop_reason(buf: bytes, offset: int, end: int, max_length: int) -> tuple[str, str]:
    available = end - offset
    if available < 8:
        return NEED_DATA, ""
    length, stored_crc = _PREFIX.unpack_from(buf, offset)
    if length == _SEAL_LENGTH and stored_crc == _SEAL_CHECK:
        return SEALED, ""
    if not HEADER_SIZE <= length <= MAX_RECORD_SIZE:
        return CORRUPT, f"impossible record length {length}"
    if length > max_length:
        return CORRUPT, f"a record of {length} bytes, over the limit of {max_length}"
    if length > available:
        return NEED_DATA, ""
    if crc32c(memoryview(buf)[offset + 8 : offset + length]) != stored_crc:
        return CORRUPT, "CRC32C mismatch"
    return CORRUPT, f"unknown record format 0x{buf[offset + 8]:02x} (expected 0x{MAGIC:02x})"
