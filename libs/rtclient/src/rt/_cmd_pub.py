"""``rt pub``: publish one message per line of standard input.

A line that parses as JSON is published as that value, any other line as the string
(without its line end); empty lines are skipped. The topic is ``--topic`` (default
``pub``), with ``.dedup`` appended by ``--dedup``. At the end of input the publisher
flushes (a quorum holds every line, within ``--timeout`` seconds) and closes, then says
on standard error how many messages it published and the last position (``--quiet``: it
says nothing). ``--strict`` refuses a line that is not JSON (exit 2; the lines before it
are published); ``--log-dir`` and ``--publisher-id`` place the publisher's log.

From outside the cluster, ``--info-service URL --client-id ID --client-secret S`` (or
``$RT_CLIENT_SECRET``) enrols and pushes with mutual TLS (``rt.Cluster.from_info_service``).

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
from rtcommon.streams import DEDUP_SUFFIX, check_topic

from ._cluster import Cluster
from ._exits import FAILED, INTERRUPTED, OK, USAGE
from ._external import EnrolmentError
from ._publisher import Publisher

DEFAULT_TOPIC = "pub"

_json = msgspec.json.Decoder()


class NotJSONError(ValueError):
    """A line that is not JSON, under ``--strict``."""


def run(args: argparse.Namespace) -> int:
    topic = DEFAULT_TOPIC if args.topic is None else args.topic
    if getattr(args, "info_service", None):
        secret = args.client_secret or os.environ.get("RT_CLIENT_SECRET", "")
        if not args.client_id or not secret:
            return _fail(
                "--info-service needs --client-id and --client-secret (or $RT_CLIENT_SECRET)",
                USAGE,
            )
        try:
            cluster = Cluster.from_info_service(
                args.info_service, client_id=args.client_id, client_secret=secret
            )
        except EnrolmentError as exc:
            return _fail(f"cannot enrol with {args.info_service}: {exc}", FAILED)
    else:
        try:
            cluster = Cluster.from_file(args.cluster)
        except (ClusterError, OSError) as exc:
            return _fail(f"cannot read the cluster description {args.cluster}: {exc}", USAGE)
    try:
        return _publish(args, cluster, topic)
    finally:
        cluster.close()


def _publish(args: argparse.Namespace, cluster: Cluster, topic: str) -> int:
    if not topic:
        return _fail("--topic must not be empty", USAGE)
    local = os.path.isabs(topic)
    if local and not getattr(args, "local", False):
        return _fail(
            f"topic {topic!r} is a path: it publishes to that local log only, nothing reaches"
            " the cluster; pass --local if that is what you want",
            USAGE,
        )
    if args.dedup and not topic.endswith(DEDUP_SUFFIX):
        topic += DEDUP_SUFFIX
    try:
        if not local:
            check_topic(topic)  # named as the user gave it, not as the stream it makes
        publisher = Publisher(
            cluster,
            topic,
            getattr(args, "log_dir", None),
            origin=args.origin,
            publisher_id=getattr(args, "publisher_id", None),
        )
    except ValueError as exc:  # a topic, origin or publisher id that cannot name a stream
        return _fail(str(exc), USAGE)
    except (LogError, OSError, EnrolmentError) as exc:
        return _fail(str(exc), FAILED)
    count = 0
    try:
        with publisher:
            count = publish_lines(
                publisher, sys.stdin.buffer, strict=getattr(args, "strict", False)
            )
            publisher.flush(getattr(args, "timeout", None))
    except NotJSONError as exc:
        return _fail(f"{exc} (--strict); the lines before it were published", USAGE)
    except (LogError, OSError, TimeoutError) as exc:
        return _fail(str(exc), FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", INTERRUPTED)
    if not getattr(args, "quiet", False):
        where = "in the local log" if local else "held by a quorum"
        print(
            f"rt pub: {count} message(s) on topic {topic}, {where}; last position"
            f" {publisher.position}",
            file=sys.stderr,
        )
    return OK


def publish_lines(publisher: Publisher, lines: BinaryIO, *, strict: bool = False) -> int:
    """Publish each non-empty line of ``lines``; return how many were published. With
    ``strict``, a line that is not JSON raises NotJSONError."""
    count = 0
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip(b"\r\n")
        if not line:
            continue
        if strict:
            try:
                _json.decode(line)
            except msgspec.DecodeError:
                raise NotJSONError(f"line {number} is not JSON: {line[:60]!r}") from None
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
