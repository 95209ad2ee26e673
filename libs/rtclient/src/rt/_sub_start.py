"""Where a subscriber starts: its ``position`` argument, checked against the local copy.

What it owns: parsing ``position`` (``None``/``"start"``, ``"end"``, or a position),
settling it against what the local copy holds (an ``"end"`` start becomes the copy's
end; a position before the copy, or inside a record, is refused), where delivery
begins, and what replication first asks a node for.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from rtcommon.log import (
    LogReader,
    check_position,
    file_name,
    file_start,
    is_collected,
    list_log_files,
    read_mirror_start,
    split_position,
    starts_a_record,
)
from rtproto.v1 import pull_pb2

from ._errors import SubscriberError

__all__ = ["END", "START", "Start"]

START = "start"
END = "end"


class Start:
    """A subscriber's start: ``mode`` (START, END or "position") and, once known, the
    explicit position delivery and replication begin from."""

    def __init__(self, position: int | str | None) -> None:
        if position is None or position == START:
            self.mode, self.position = START, None
        elif position == END:
            self.mode, self.position = END, None
        elif isinstance(position, str):
            raise ValueError(f"position is an integer, None, 'start' or 'end', not {position!r}")
        else:
            self.mode, self.position = "position", check_position(position)

    def settle(self, log_dir: Path, *, copy_end: int | None, replicated: bool) -> None:
        """Check the start against the local copy in ``log_dir``, or fix it for ``"end"``
        (``copy_end``: where a replicated copy's mirror found its end)."""
        files = list_log_files(log_dir)
        if self.mode == END and files:
            self.position = copy_end if copy_end is not None else _local_end(log_dir, files)
        elif self.position is not None and files:
            begins = copy_start(log_dir, files)  # collected files included: an event
            if self.position < begins and replicated:
                raise SubscriberError(
                    f"position {self.position} lies before the local copy in"
                    f" {log_dir}, which begins at {begins}; subscribe with another log_dir"
                )
            if not starts_a_record(log_dir, self.position):
                raise SubscriberError(
                    f"position {self.position} is not the start of a record in"
                    f" {log_dir}: pass a position a callback was handed"
                )
        if not replicated and self.position is not None:
            # No replication will fill the log up to the position: refuse it now if it is
            # past the end.
            LogReader(log_dir, self.position).close()

    def delivery_start(self, log_dir: Path) -> int | None:
        """Where delivery begins in ``log_dir`` (None while the copy holds no file)."""
        files = list_log_files(log_dir)
        if not files:
            return None
        return self.position if self.position is not None else first_held_position(log_dir, files)

    def pull_request(self, copy_end: int | None, max_chunk_bytes: int) -> pull_pb2.PullRequest:
        """What replication asks a node for: from the copy's end once it holds data, else
        from the start position (or the node's START or END)."""
        if copy_end is not None:
            start, position = pull_pb2.PullRequest.POSITION, copy_end
        elif self.position is not None:
            start, position = pull_pb2.PullRequest.POSITION, self.position
        elif self.mode == END:
            start, position = pull_pb2.PullRequest.END, 0
        else:
            start, position = pull_pb2.PullRequest.START, 0
        return pull_pb2.PullRequest(
            **{"from": start}, position=position, max_chunk_bytes=max_chunk_bytes, pieces=True
        )


def first_held_position(directory: Path, files: list[tuple[int, int]]) -> int:
    """The first position whose bytes the copy holds: its collected files hold none."""
    held = [file for file in files if not is_collected(directory / file_name(*file))]
    return copy_start(directory, held or files[-1:])


def copy_start(directory: Path, files: list[tuple[int, int]]) -> int:
    """Where the copy of ``files`` begins (a copy may begin mid-file)."""
    first = files[0]
    start = read_mirror_start(directory)
    if start is not None and split_position(start)[:2] == first:
        with contextlib.suppress(FileNotFoundError):
            if (directory / file_name(*first)).stat().st_size > split_position(start)[2]:
                return start
    # An emptied (pruned) first file is read from its start, which simply moves on.
    return file_start(*first)


def _local_end(directory: Path, files: list[tuple[int, int]]) -> int:
    """The position after the last whole record of a local log."""
    last = files[-1]
    start = read_mirror_start(directory)
    begin = start if start is not None and split_position(start)[:2] == last else file_start(*last)
    with LogReader(directory, begin, pieces=True) as reader:  # a long record not held whole
        while reader.read_chunks():
            pass
        end = reader.position
    return begin if end is None else end
