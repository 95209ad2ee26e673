"""``rt.prune``: give back the disk of a local log copy up to a position.

A subscriber's local copy of the merged log only grows. Once its messages up to
some position are consumed for good (checkpointed downstream), the files that
lie wholly before that position can go. Pruning is garbage collection as RT does
it everywhere (:func:`rtcommon.log.archive_log_files`): files are emptied in place
and get the sticky bit, so the directory still says which files existed, a reader
with no position skips them, and a reader that meets them reports a ``collected``
event (``docs/log-format.md`` section 7).

What is never touched: the file holding ``position`` and every later one, and
the last file of the directory whatever the position (the writer of the copy
resumes from it), so a copy never loses what has not been consumed.
"""

from __future__ import annotations

import os
from pathlib import Path

from rtcommon.log import archive_log_files, check_position

__all__ = ["prune"]


def prune(log_dir: str | os.PathLike[str], position: int) -> list[Path]:
    """Empty every rolled file of ``log_dir`` wholly before ``position``, setting its
    sticky bit.

    ``position`` is one handed to a subscriber callback. Returns the files pruned
    by this call, in log order (files collected already are not listed again).
    """
    return archive_log_files(log_dir, check_position(position))
