"""The merge layer's errors.

::

    SequencerError
    ├── MergeError          an entry that does not continue the merge (a bug, or a
    │                       damaged state): the node must not go on from it
    └── CheckpointError     a checkpoint that cannot be decoded (torn, garbage)
"""

from __future__ import annotations

__all__ = ["CheckpointError", "MergeError", "SequencerError"]


class SequencerError(Exception):
    """Base of the merge layer's errors."""


class MergeError(SequencerError):
    """An entry that does not continue the merge: a bug or damage, never ignored."""


class CheckpointError(SequencerError):
    """A checkpoint's bytes are not a checkpoint."""
