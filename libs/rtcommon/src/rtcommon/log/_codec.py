"""Payload codecs: how a message object becomes the payload bytes of a record.

Two codecs exist, named by a one-byte id in every record header:

- ``raw`` (0): the payload is the message itself, which must be bytes-like.
- ``msgpack`` (1): any msgpack-representable Python object (None, bool, int,
  float, str, bytes, list, tuple, dict, ...), encoded by msgspec. A message that
  is a tuple at top level decodes as a tuple again (a header flag records it);
  nested sequences decode as lists.

Pickle is never used: a log is input from the network.

Tags are taken from a message, not from its payload: a list or tuple whose
first one or two elements are strings is tagged by them, so
``("upd", "trade", data)`` carries the tags ``upd`` and ``trade``.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from ._errors import CodecError

FLAG_TIMEOUT = 0x01  #: the header's timeout field holds a value
FLAG_TUPLE = 0x02  #: msgpack: the top-level sequence was a tuple

MAX_TAGS = 2


class Codec(enum.IntEnum):
    """The codec ids written into record headers."""

    RAW = 0
    MSGPACK = 1

    @classmethod
    def named(cls, name: str | int | Codec) -> Codec:
        """Look a codec up by name (``"raw"``, ``"msgpack"``) or id."""
        if isinstance(name, Codec):
            return name
        try:
            return cls(name) if isinstance(name, int) else cls[name.upper()]
        except (KeyError, ValueError):
            known = ", ".join(codec.name.lower() for codec in cls)
            raise CodecError(f"unknown codec {name!r} (known: {known})") from None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def encode_payload(message: Any, codec: Codec) -> tuple[bytes, int]:
    """Encode ``message`` with ``codec``; return the payload and its header flags."""
    if codec is Codec.MSGPACK:
        try:
            payload = _encoder.encode(message)
        except (TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"msgpack cannot encode {type(message).__name__}: {exc}") from exc
        return payload, FLAG_TUPLE if type(message) is tuple else 0
    if codec is Codec.RAW:
        if isinstance(message, bytes):
            return message, 0
        if isinstance(message, bytearray | memoryview):
            return bytes(message), 0
        raise CodecError(f"the raw codec takes bytes, not {type(message).__name__}")
    raise CodecError(f"unknown codec {codec!r}")


def decode_payload(payload: bytes | memoryview, codec: int, flags: int) -> Any:
    """Decode a record payload written by :func:`encode_payload`."""
    if codec == Codec.MSGPACK:
        try:
            value = _decoder.decode(payload)
        except msgspec.DecodeError as exc:
            raise CodecError(f"corrupt msgpack payload: {exc}") from exc
        return tuple(value) if flags & FLAG_TUPLE and type(value) is list else value
    if codec == Codec.RAW:
        return bytes(payload)
    raise CodecError(f"record has unknown codec id {codec}")


def message_tags(message: Any) -> tuple[str, ...]:
    """The leading one or two strings of a list or tuple message, else ``()``."""
    if type(message) is tuple or type(message) is list:
        tags = []
        for element in message[:MAX_TAGS]:
            if type(element) is not str:
                break
            tags.append(element)
        return tuple(tags)
    return ()
