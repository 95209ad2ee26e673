"""Errors raised by the Raft core and its storages.

Every error this package raises derives from :class:`RaftError`::

    RaftError
     ├── ConfigError                 a Config that cannot work (ids, tick counts, limits)
     ├── UsageError                  the API called out of order or with bad arguments
     ├── ProposalDroppedError        propose() could not place the data in the log
     │    ├── NoLeaderError          no leader is known right now: retry later
     │    └── NotLeaderError         forwarding is off; ``leader_id`` names the leader
     ├── StorageError                a storage cannot answer or accept a request
     │    ├── CompactedError         the index is below the first retained entry
     │    ├── UnavailableError       the index is beyond the last entry
     │    ├── SnapshotOutOfDateError the snapshot is not newer than the one held
     │    └── CorruptStorageError    files are damaged other than by a torn tail
     └── InvariantError              the core found a state Raft rules out (a bug)
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by :mod:`rt_sequencer.raft`."""


class ConfigError(RaftError, ValueError):
    """The Config is invalid: unknown node id, bad tick counts or limits."""


class UsageError(RaftError):
    """The API was used out of order (ready() twice, a stale advance()) or with bad arguments."""


class ProposalDroppedError(RaftError):
    """The proposal was not appended anywhere; the caller may retry it."""


class NoLeaderError(ProposalDroppedError):
    """This node knows no leader (it is a candidate, or a follower between terms)."""


class NotLeaderError(ProposalDroppedError):
    """This node is a follower with proposal forwarding disabled."""

    def __init__(self, leader_id: int) -> None:
        super().__init__(f"not the leader; the leader is node {leader_id}")
        self.leader_id = leader_id


class StorageError(RaftError):
    """A storage cannot answer or accept a request."""


class CompactedError(StorageError):
    """The requested index was compacted away into a snapshot."""


class UnavailableError(StorageError):
    """The requested index is beyond the last entry held."""


class SnapshotOutOfDateError(StorageError):
    """The snapshot offered is not newer than the one already held."""


class CorruptStorageError(StorageError):
    """Stored files are damaged in a way a torn tail cannot explain."""


class InvariantError(RaftError):
    """The core met a state that Raft rules out: a bug in the core or in its storage."""
