"""``rt sub``: print the merged stream of a cluster as JSON lines.

One line per message and one per event, flushed as each is written::

    {"pos":56,"topic":"rt","on":"feed","id":1,"ts":1700000000000000000,"data":["upd","trade",1]}
    {"event":"reset","pos":[130,17592186044416]}

``topic`` is the stream's, the cluster's name (an RT cluster carries one topic, as its
nodes' names say in Kubernetes). ``pos`` is the position after the message: ``rt sub
--from POS`` with it prints exactly what follows. ``data`` is the decoded message as
JSON: tuples and lists become arrays, dict keys that are not strings become strings, and
**bytes** become a string when they are valid UTF-8, else ``{"$base64": "<base64>"}``. A
payload that cannot be decoded at all (an unknown codec) is printed as
``{"$undecodable": "<base64 of the payload>", "codec": <id>}``.

Options: ``--from start|end|POS`` (default start; ``end`` asks the node for the
end of the merged log now; POS is decimal or ``0x`` hexadecimal), ``--filter
upd,trade`` (one or two leading tags), ``--count N`` (exit 0 after N messages;
events are printed but not counted), ``--timeout S`` (exit 1 once no node has
answered for S seconds, from the start or later; a live node sends a heartbeat
every second even when the stream is idle), ``--time iso`` (``ts`` as
``2026-12-01T14:30:00.123456789Z`` instead of nanoseconds since the epoch).

The local copy of the merged log is a fresh temporary directory under
``$RT_LOG_PATH`` when it is set, else in the system's temporary directory; it is
removed on exit, Ctrl-C and SIGTERM included. Exit status: 0 done
(``--count`` reached, or stdout closed), 1 no node answered within ``--timeout``, 2 a
usage error (a missing or malformed
cluster file, a malformed ``--from`` or ``--filter``, a position past the end of
the merged log), 1 any other failure, 130 interrupted, 143 terminated.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec

from rtcommon import env
from rtcommon.cluster import ClusterError
from rtcommon.log import CodecError, PositionError, Record, TagFilter, check_position

from ._cluster import Cluster
from ._exits import FAILED, INTERRUPTED, USAGE
from ._subscriber import END, START, Subscriber, SubscriberError

__all__ = ["run"]

TERMINATED = 143

_encode_json = msgspec.json.Encoder(enc_hook=str).encode


def run(args: argparse.Namespace) -> int:
    """Run ``rt sub`` with parsed ``args`` (``cluster``, ``from_``, ``filter``, ``count``)."""
    try:
        cluster = Cluster.from_file(args.cluster)
        position = parse_from(args.from_)
        tag_filter = parse_filter(args.filter)
        count = args.count
        if count is not None and count < 0:
            raise ValueError(f"--count is a number of messages, not {count}")
        timeout = getattr(args, "timeout", None)
        if timeout is not None and timeout <= 0:
            raise ValueError(f"--timeout is a number of seconds above 0, not {timeout}")
        iso_time = getattr(args, "time", None) == "iso"
    except (ClusterError, ValueError) as exc:
        print(f"rt sub: {exc}", file=sys.stderr)
        return USAGE
    if count == 0:
        return 0
    _log_to_stderr()
    settings = env.settings()
    parent = settings.log_path if settings.log_path_set else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rt-sub-", dir=parent) as copy:
        return _print_stream(
            cluster,
            Path(copy),
            position,
            tag_filter,
            count,
            sys.stdout,
            timeout=timeout,
            iso_time=iso_time,
        )


def parse_from(value: str | None) -> int | str:
    """``start``, ``end`` or a position (decimal or 0x hexadecimal)."""
    if value is None or value == START:
        return START
    if value == END:
        return END
    try:
        position = int(value, 0)
    except ValueError:
        raise ValueError(
            f"--from takes start, end or a position (an unsigned integer), not {value!r}"
        ) from None
    try:
        return check_position(position)
    except PositionError as exc:
        raise ValueError(f"--from {value}: {exc}") from None


def parse_filter(value: str | None) -> TagFilter | None:
    """``upd`` or ``upd,trade``: one or two leading tags."""
    if value is None:
        return None
    tags = tuple(tag.strip() for tag in value.split(","))
    if not 1 <= len(tags) <= 2 or not all(tags):
        raise ValueError(f"--filter takes one or two comma-separated tags, not {value!r}")
    return TagFilter(tags)


def message_line(
    record: Record, position: int, *, topic: str | None = None, iso_time: bool = False
) -> str:
    """The JSON line printed for one message: with the stream's ``topic`` when given, and
    ``ts`` in ISO 8601 with ``iso_time``."""
    try:
        data = jsonable(record.data)
    except CodecError:
        data = {"$undecodable": _base64(record.payload), "codec": record.raw[9]}
    ts = iso_timestamp(record.ts) if iso_time else record.ts
    line: dict[str, Any] = {"pos": position}
    if topic is not None:
        line["topic"] = topic
    line.update(on=record.origin, id=record.id, ts=ts, data=data)
    return _encode_json(line).decode()


def iso_timestamp(nanoseconds: int) -> str:
    """``2026-12-01T14:30:00.123456789Z``: UTC, to the nanosecond."""
    seconds, fraction = divmod(nanoseconds, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def event_line(kind: str, positions: tuple[int, int]) -> str:
    """The JSON line printed for one event."""
    return _encode_json({"event": kind, "pos": list(positions)}).decode()


def jsonable(value: Any) -> Any:
    """``value`` with bytes, tuples and non-string keys made plain JSON (module docstring)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if kind is bytes or kind is bytearray or kind is memoryview:
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return {"$base64": _base64(value)}
    if kind is list or kind is tuple:
        return [jsonable(item) for item in value]
    if kind is dict:
        return {_json_key(key): jsonable(item) for key, item in value.items()}
    return value


def _json_key(key: Any) -> str:
    if type(key) is str:
        return key
    converted = jsonable(key)
    return converted if type(converted) is str else _encode_json(converted).decode()


def _base64(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(data).decode("ascii")


def _log_to_stderr() -> None:
    """Warnings (a node down, a retry) to stderr; the error that ends the run is printed by
    :func:`run` itself, so the subscriber's own report of it is left out."""
    logger = logging.getLogger("rt")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rt sub: %(message)s"))
        handler.addFilter(lambda record: record.levelno < logging.ERROR)
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


def _exit_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM exit through ``finally`` blocks (so the temporary copy is removed), when
    running in the main thread; return what undoes it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(TERMINATED))
    return lambda: signal.signal(signal.SIGTERM, previous)


def _print_stream(
    cluster: Cluster,
    copy: Path,
    position: int | str,
    tag_filter: TagFilter | None,
    count: int | None,
    out: TextIO,
    *,
    timeout: float | None = None,
    iso_time: bool = False,
) -> int:
    printed = 0
    stdout_closed = False

    def write(line: str) -> None:
        nonlocal stdout_closed
        try:
            out.write(line + "\n")
            out.flush()
        except BrokenPipeError:  # whoever read our output went away (rt sub | head)
            stdout_closed = True
            subscriber.unsubscribe()

    def on_message(record: Record, position: int) -> None:
        nonlocal printed
        write(message_line(record, position, topic=cluster.name, iso_time=iso_time))
        printed += 1
        if count is not None and printed >= count:
            subscriber.unsubscribe()

    def on_event(kind: str, positions: tuple[int, int]) -> None:
        write(event_line(kind, positions))

    subscriber = Subscriber(
        cluster,
        log_dir=copy,
        position=position,
        on_message=on_message,
        on_event=on_event,
        filter=tag_filter,
    )
    restore_sigterm = _exit_on_sigterm()
    started = time.monotonic()
    try:
        subscriber.start()
        while not subscriber.join(0.5):
            heard = subscriber.last_contact or started
            if timeout is not None and time.monotonic() - heard > timeout:
                print(f"rt sub: no node answered for {timeout:g} s", file=sys.stderr)
                return FAILED
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        subscriber.unsubscribe()
        restore_sigterm()
    if stdout_closed:
        # Python would complain again flushing stdout at exit: point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    error = subscriber.error
    if error is None:
        return 0
    if isinstance(error, SubscriberError):
        print(f"rt sub: {error}", file=sys.stderr)
        return USAGE
    print(f"rt sub: {type(error).__name__}: {error}", file=sys.stderr)
    return FAILED
