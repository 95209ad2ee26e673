"""The merge layer's values: Raft entry contents, the checkpoint, and the actions the
core asks its driver to carry out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgspec

from ..raft import Entry
from ._errors import CheckpointError, EntryError

__all__ = [
    "NO_LEADER",
    "Action",
    "CatchUpOut",
    "Checkpoint",
    "Compact",
    "Fetch",
    "Gossip",
    "Propose",
    "Prune",
    "PruneOut",
    "PublishOut",
    "Range",
    "SaveCheckpoint",
    "decode_entry",
    "encode_prune",
    "encode_ranges",
    "node_of",
    "raft_id",
]


#: A node id (0-based, as in cluster.json) for "no leader known".
NO_LEADER = -1


def raft_id(node: int) -> int:
    """The Raft id of node ``node``: Raft numbers members from 1 (0 means none)."""
    return node + 1


def node_of(raft: int) -> int:
    """The node id of Raft member ``raft``; NO_LEADER for Raft's 0 (none)."""
    return raft - 1 if raft else NO_LEADER


class Range(msgspec.Struct, array_like=True, frozen=True):
    """Append the records of input stream ``stream`` in ``[start, end)``; the stream
    publishes on ``topic`` (deduplication is per topic; entries written before topics
    existed have none, and such a stream is its own topic)."""

    stream: str
    start: int
    end: int
    topic: str = ""


class Prune(msgspec.Struct, frozen=True):
    """Collect the merged log's rolled files wholly before ``before`` (the retention
    policy's or a lead subscriber's decision). An entry of its own, so that every node
    empties the same files at the same point of the merge."""

    before: int


_encoder = msgspec.msgpack.Encoder()
# A list of ranges is a msgpack array, a Prune a map: the two never mix up.
_entry_decoder = msgspec.msgpack.Decoder(list[Range] | Prune)


def encode_ranges(ranges: list[Range]) -> bytes:
    return _encoder.encode(ranges)


def encode_prune(before: int) -> bytes:
    return _encoder.encode(Prune(before))


def decode_entry(data: bytes) -> list[Range] | Prune:
    """A Raft entry's content: ranges to merge (none: a leader's no-op) or a prune;
    EntryError if it is neither."""
    try:
        return _entry_decoder.decode(data) if data else []
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise EntryError(f"not an entry ({len(data)} bytes): {exc}") from exc


def ranges_named(entries: Iterable[Entry]) -> Iterator[tuple[int, Range]]:
    """(index, range) of every range ``entries`` name (prunes, no-ops and entries that
    are not entries, which every node refuses alike, name none)."""
    for entry in entries:
        try:
            content = decode_entry(entry.data)
        except EntryError:
            continue
        if not isinstance(content, Prune):
            for item in content:
                yield entry.index, item


class Checkpoint(msgspec.Struct, kw_only=True):
    """What the merge needs to go on after a restart; also the Raft snapshot."""

    applied_index: int = 0
    out_position: int = 0  #: the end of the merged log after ``applied_index`` (0: none)
    merged: dict[str, int] = {}  #: stream -> the end of its last range merged
    topics: dict[str, str] = {}  #: stream -> its topic
    watermarks: dict[str, dict[str, int]] = {}  #: dedup topic -> origin -> highest |id|
    dropped: dict[str, dict[str, int]] = {}  #: dedup topic -> origin -> duplicates dropped
    #: The merged log's rolled files wholly before this position are collected (0: none).
    pruned_before: int = 0

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        try:
            return msgspec.msgpack.decode(data, type=cls)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CheckpointError(f"not a checkpoint ({len(data)} bytes): {exc}") from exc


# -- actions ------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Propose:
    """Leader: propose these ranges as one Raft entry, then report with ``proposed``."""

    ranges: list[Range]


@dataclass(slots=True, frozen=True)
class Fetch:
    """The backup path: copy ``stream``'s input from node ``peer``, from what this node
    has written, to at least ``target``, reporting bytes with ``input_written`` and the
    end of the attempt (done or failed) with ``fetch_ended``."""

    stream: str
    topic: str
    peer: int
    target: int


@dataclass(slots=True, frozen=True)
class PublishOut:
    """Records were appended to the merged log: write them out and wake its readers."""


@dataclass(slots=True, frozen=True)
class SaveCheckpoint:
    """Make the merged log durable up to at least ``checkpoint.out_position``, then
    store ``checkpoint`` atomically, then report with ``checkpoint_saved``."""

    checkpoint: Checkpoint


@dataclass(slots=True, frozen=True)
class Compact:
    """Store ``checkpoint`` (encoded) as Raft's snapshot at its applied index; drop the
    entries before ``index - keep`` once that frees at least ``keep`` of them (each cut
    rewrites the log), keeping ``keep`` for followers that lag a little; then report
    with ``snapshot_stored``."""

    checkpoint: Checkpoint
    keep: int

    @property
    def index(self) -> int:
        return self.checkpoint.applied_index


@dataclass(slots=True, frozen=True)
class CatchUpOut:
    """Installing a snapshot: bring the merged log to ``target`` from the peers (its
    bytes are the same on every node), then report with ``out_caught_up``."""

    target: int


@dataclass(slots=True, frozen=True)
class Gossip:
    """Send node ``peer`` what this node holds of each stream, the topics of the streams
    named (all of them on a keepalive), and its ``done`` positions: per stream, where this
    node's durable checkpoint and its Raft snapshot have both merged to (it never reads
    the stream's input before them again, whatever restarts)."""

    peer: int
    held: dict[str, int]
    topics: dict[str, str]
    done: dict[str, int]


@dataclass(slots=True, frozen=True)
class Archive:
    """Drop this node's input copy of ``stream`` before ``position`` (whole files only)
    and tell its publisher it may do the same: every node is done with those bytes."""

    stream: str
    position: int


@dataclass(slots=True, frozen=True)
class PruneOut:
    """Collect the merged log's rolled files wholly before ``before``: empty them in
    place and set their sticky bit (a :class:`Prune` was applied, or Raft's stored
    snapshot moved past an earlier one). Idempotent: asked again after every restart
    and install."""

    before: int


@dataclass(slots=True, frozen=True)
class EntryRefused:
    """Entry ``index`` was skipped, as on every node (an :class:`EntryError`): say so."""

    index: int
    reason: str


@dataclass(slots=True, frozen=True)
class ApplyStalled:
    """Entry ``index`` cannot be applied here for now (this node's input copy of
    ``stream`` could not be read; "": its merged log took none of it); it is tried again
    every ``Timing.apply_retry``. Said once per reason."""

    index: int
    reason: str
    stream: str = ""


Action = (
    Propose
    | Fetch
    | PublishOut
    | SaveCheckpoint
    | Compact
    | CatchUpOut
    | Gossip
    | Archive
    | PruneOut
    | EntryRefused
    | ApplyStalled
)
