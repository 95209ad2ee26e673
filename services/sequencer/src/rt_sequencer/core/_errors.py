"""The merge layer's errors.

::

    SequencerError
    ├── MergeError          an entry cannot be applied here (of no kind below: entries
    │   │                   out of order, a bug: the node stops)
    │   ├── EntryError      every node refuses it alike (undecodable, a bad name, a
    │   │                   range that does not continue the merge): skipped
    │   ├── InputError      this node cannot read the input it names, or its merged
    │   │                   log took none of it: it waits (and stops the process if
    │   │                   that lasts ``Timing.apply_stall_limit``)
    │   └── HalfAppliedError  the merged log failed in the middle of an entry: the
    │                       process must restart from its last checkpoint
    └── CheckpointError     a checkpoint that cannot be decoded (torn, garbage)
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "EntryError",
    "HalfAppliedError",
    "InputError",
    "MergeError",
    "SequencerError",
]


class SequencerError(Exception):
    """Base of the merge layer's errors."""


class MergeError(SequencerError):
    """An entry cannot be applied here now."""


class EntryError(MergeError):
    """An entry no node can apply, decided from the entry and the merge state alone (the
    same on every node at its index): it is skipped everywhere alike."""


class InputError(MergeError):
    """This node cannot apply an entry now, with nothing of it applied: its input copy
    cannot be read there (a file it cannot open now, damaged bytes) or its merged log
    took none of it. The entry waits here; a node that stays stuck stops, so that a
    restart opens its files afresh and leadership moves to a node that can merge.
    ``stream``: the input copy that could not be read ("" for the merged log)."""

    def __init__(self, message: str, stream: str = "") -> None:
        super().__init__(message)
        self.stream = stream


class HalfAppliedError(MergeError):
    """Appending an entry to the merged log failed part way: the merge state no longer
    matches the merged log, and nothing may be checkpointed from it."""


class CheckpointError(SequencerError):
    """A checkpoint's bytes are not a checkpoint."""
