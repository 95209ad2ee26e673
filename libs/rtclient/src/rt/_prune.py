"""``rt.prune``: give back the disk of a local log copy up to a position.

A subscriber's local copy of the merged log only grows. Once its messages up to
some position are consumed for good (checkpointed downstream), the files that
lie wholly before that position can go. Pruning truncates them to zero bytes
but keeps their names: the directory still says which files existed, so a reader
positioned later skips them, and a reader that meets an emptied file goes on to
the next one (``docs/log-format.md`` section 7).

What is never touched: the file holding ``position`` and every later one, and
the last file of the directory whatever the position (the writer of the copy
resumes from it), so a copy never loses what has not been consumed.
"""

from __future__ import annotations

import os
from pathlib import Path

from rtcommon.log import check_position, file_name, list_log_files, split_position

__all__ = ["prune"]


def prune(log_dir: str | os.PathLike[str], position: int) -> list[Path]:
    """Truncate to zero bytes every rolled file of ``log_dir`` wholly before ``position``.

    ``position`` is one handed to a subscriber callback. Returns the files pruned
    by this call, in log order (files already empty are not listed again).
    """
    check_position(position)
    directory = Path(log_dir)
    files = list_log_files(directory)
    keep_from = split_position(position)[:2]
    # Every file but the last has a later one, so it is complete (rolled).
    rolled_before = [file for file in files[:-1] if file < keep_from]
    pruned = []
    for file in rolled_before:
        path = directory / file_name(*file)
        try:
            if path.stat().st_size == 0:
                continue
            os.truncate(path, 0)
        except FileNotFoundError:
            continue  # removed meanwhile: nothing left to give back
        pruned.append(path)
    return pruned
