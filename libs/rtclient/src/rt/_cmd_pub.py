"""``rt pub``: publish one message per line of standard input.

A line that parses as JSON is published as that value, any other line as the string
(without its line end); empty lines are skipped. The topic is ``--topic`` (default
``pub``), with ``.dedup`` appended by ``--dedup``. At the end of input the publisher
flushes (a quorum holds every line) and closes. Prints nothing on success.

A topic that is an absolute path publishes to that local log only (no replication):
``--local`` must say so. Exit status (``rt._exits``): 0 done, 1 a publishing error, 2 a
usage error (no or a bad cluster file, a bad topic), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, BinaryIO

import msgspec

from rtcommon.cluster import ClusterError
from rtcommon.log import LogError
from rtcommon.streams import DEDUP_SUFFIX

from ._cluster import Cluster
from ._exits import FAILED, INTERRUPTED, OK, USAGE
from ._publisher import Publisher

DEFAULT_TOPIC = "pub"

_json = msgspec.json.Decoder()


def run(args: argparse.Namespace) -> int:
    try:
        cluster = Cluster.from_file(args.cluster)
    except (ClusterError, OSError) as exc:
        return _fail(f"cannot read the cluster description {args.cluster}: {exc}", USAGE)
    topic = DEFAULT_TOPIC if args.topic is None else args.topic
    if not topic:
        return _fail("--topic must not be empty", USAGE)
    if os.path.isabs(topic) and not getattr(args, "local", False):
        return _fail(
            f"topic {topic!r} is a path: it publishes to that local log only, nothing reaches"
            " the cluster; pass --local if that is what you want",
            USAGE,
        )
    if args.dedup and not topic.endswith(DEDUP_SUFFIX):
        topic += DEDUP_SUFFIX
    try:
        publisher = Publisher(cluster, topic, origin=args.origin)
    except ValueError as exc:  # a topic or origin that cannot name a stream
        return _fail(str(exc), USAGE)
    except (LogError, OSError) as exc:
        return _fail(str(exc), FAILED)
    try:
        with publisher:
            publish_lines(publisher, sys.stdin.buffer)
    except (LogError, OSError, TimeoutError) as exc:
        return _fail(str(exc), FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", INTERRUPTED)
    return OK


def publish_lines(publisher: Publisher, lines: BinaryIO) -> int:
    """Publish each non-empty line of ``lines``; return how many were published."""
    count = 0
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            continue
        publisher.publish(_message(line))
        count += 1
    return count


def _message(line: bytes) -> Any:
    try:
        value = _json.decode(line)
    except msgspec.DecodeError:
        return _text(line)
    try:
        msgspec.msgpack.encode(value)  # JSON that msgpack cannot hold (a huge integer)
    except (TypeError, ValueError, OverflowError):
        return _text(line)
    return value


def _text(line: bytes) -> str | bytes:
    try:
        return line.decode()
    except UnicodeDecodeError:
        return line  # not UTF-8: published as the bytes it is


def _fail(message: str, status: int) -> int:
    print(f"rt pub: {message}", file=sys.stderr)
    return status
