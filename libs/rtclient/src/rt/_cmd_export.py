"""``rt export --cluster FILE [--from start|POS] [--to end|POS] [--format F] OUTPUT``.

Writes the merged log's messages between two positions to a file, for tools that read
files: ``jsonl`` (one ``rt sub`` line per message, topic included), ``csv`` (columns
``pos, on, id, ts, data``, ``data`` as JSON) or ``parquet`` (the same columns; needs
``pyarrow``, which RT does not install: the command says so). ``--to end`` (the default)
is the end of the merged log when the export starts, so an export of a live stream ends.
A message is written when the position after it (its ``pos``) is at most ``--to``.
``--filter`` and ``--time iso`` are as for ``rt sub``; ``-`` writes to stdout.

On a terminal a progress bar (rich) shows how far it got; catching up a large log takes a
while. Exit status 0 done, 1 a failure (no node answered within ``--timeout``), 2 a usage
error (a malformed position, a format it cannot write), 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from rtcommon import env
from rtcommon.cluster import ClusterError
from rtcommon.log import Record, split_position

from ._cluster import Cluster
from ._cmd_sub import message_line, parse_filter, parse_from
from ._exits import FAILED, INTERRUPTED, OK, USAGE
from ._status import ask_nodes
from ._subscriber import END, START, Subscriber

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    try:
        cluster = Cluster.from_file(args.cluster)
        start = parse_from(args.from_)
        end = parse_from(args.to) if args.to not in (None, END) else END
        tag_filter = parse_filter(args.filter)
        if end == START:
            raise ValueError("--to takes end or a position")
        sink = _open_sink(args.format, args.output, iso_time=args.time == "iso", topic=cluster.name)
    except (ClusterError, ValueError) as exc:
        print(f"rt export: {exc}", file=sys.stderr)
        return USAGE
    try:
        if end == END:
            ends = [a.out_position for a in ask_nodes(cluster.nodes, 5.0) if not isinstance(a, str)]
            if not ends:
                print("rt export: no node answered", file=sys.stderr)
                return FAILED
            end = max(ends)
        return _export(cluster, start, end, tag_filter, sink, args.timeout)
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        sink.close()


def _export(cluster, start, end: int, tag_filter, sink, timeout: float | None) -> int:
    done = threading.Event()
    state: dict[str, Any] = {"position": None, "count": 0}

    def on_message(record: Record, position: int) -> None:
        if position > end:
            done.set()
            return
        sink.write(record, position)
        state["position"], state["count"] = position, state["count"] + 1
        if position == end:
            done.set()

    settings = env.settings()
    parent = settings.log_path if settings.log_path_set else None
    with (
        tempfile.TemporaryDirectory(prefix="rt-export-", dir=parent) as copy,
        _progress(cluster, start, end) as advance,
    ):
        subscriber = Subscriber(
            cluster, log_dir=Path(copy), position=start, on_message=on_message, filter=tag_filter
        )
        subscriber.start()
        started = time.monotonic()
        try:
            while not done.wait(0.2):
                if subscriber.join(0):
                    break
                advance(state["position"], subscriber.position)
                heard = subscriber.last_contact or started
                if timeout is not None and time.monotonic() - heard > timeout:
                    print(f"rt export: no node answered for {timeout:g} s", file=sys.stderr)
                    return FAILED
                if subscriber.position is not None and subscriber.position >= end:
                    break  # reached without a message at the end (filtered, or none)
        finally:
            subscriber.unsubscribe()
        advance(end, end)
    if subscriber.error is not None:
        print(f"rt export: {subscriber.error}", file=sys.stderr)
        return FAILED
    print(f"rt export: {state['count']} message(s) up to {end}", file=sys.stderr)
    return OK


class _Sink:
    """Where exported messages go; ``close`` finishes the file."""

    def __init__(self, file: IO[str], iso_time: bool) -> None:
        self.file, self.iso_time = file, iso_time

    def write(self, record: Record, position: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.file is not sys.stdout:
            self.file.close()
        else:
            self.file.flush()


class _Jsonl(_Sink):
    def __init__(self, file: IO[str], iso_time: bool, topic: str) -> None:
        super().__init__(file, iso_time)
        self.topic = topic

    def write(self, record: Record, position: int) -> None:
        line = message_line(record, position, topic=self.topic, iso_time=self.iso_time)
        self.file.write(line + "\n")


class _Csv(_Sink):
    def __init__(self, file: IO[str], iso_time: bool) -> None:
        super().__init__(file, iso_time)
        self.writer = csv.writer(file)
        self.writer.writerow(("pos", "on", "id", "ts", "data"))

    def write(self, record: Record, position: int) -> None:
        line = message_line(record, position, iso_time=self.iso_time)
        fields = jsonable_line(line)
        self.writer.writerow((position, record.origin, record.id, fields["ts"], fields["data"]))


def jsonable_line(line: str) -> dict[str, Any]:
    """The fields of one ``rt sub`` line, ``data`` kept as its JSON text."""
    fields = json.loads(line)
    fields["data"] = json.dumps(fields["data"], separators=(",", ":"))
    return fields


class _Parquet(_Sink):
    def __init__(self, path: str, iso_time: bool, pyarrow: Any, parquet: Any) -> None:
        self.path, self.iso_time = path, iso_time
        self.pyarrow, self.parquet = pyarrow, parquet
        self.rows: dict[str, list] = {"pos": [], "on": [], "id": [], "ts": [], "data": []}

    def write(self, record: Record, position: int) -> None:
        fields = jsonable_line(message_line(record, position, iso_time=self.iso_time))
        for name in self.rows:
            self.rows[name].append(fields[name])

    def close(self) -> None:
        self.parquet.write_table(self.pyarrow.table(self.rows), self.path)


def _open_sink(kind: str, output: str, *, iso_time: bool, topic: str) -> _Sink:
    if kind == "parquet":
        try:
            import pyarrow
            import pyarrow.parquet as parquet
        except ImportError:
            raise ValueError(
                "--format parquet needs pyarrow, which RT does not install: pip install"
                " pyarrow into RT's environment, or export jsonl or csv"
            ) from None
        if output == "-":
            raise ValueError("--format parquet writes a file, not stdout")
        return _Parquet(output, iso_time, pyarrow, parquet)
    file = sys.stdout if output == "-" else open(output, "w", newline="")  # noqa: SIM115
    if kind == "csv":
        return _Csv(file, iso_time)
    return _Jsonl(file, iso_time, topic)


class _progress:
    """A progress bar on stderr when it is a terminal (else nothing): ``advance(done_at,
    reader_at)`` moves it to the furthest of the two positions."""

    def __init__(self, cluster: Cluster, start: int | str, end: int) -> None:
        self.roll = cluster.spec.roll_size
        self.first = 0 if not isinstance(start, int) else self._linear(start)
        self.total = max(1, self._linear(end) - self.first)
        self.bar: Progress | None = None

    def _linear(self, position: int) -> int:
        session, roll, offset = split_position(position)
        return (session << 44) + roll * self.roll + offset

    def __enter__(self) -> Callable[[int | None, int | None], None]:
        if sys.stderr.isatty():
            self.bar = Progress(
                TextColumn("exporting"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("export", total=self.total)
        return self.advance

    def advance(self, *positions: int | None) -> None:
        if self.bar is None:
            return
        reached = max((self._linear(p) for p in positions if p is not None), default=self.first)
        self.bar.update(self.task, completed=min(self.total, reached - self.first))

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.stop()
