"""Stream names: what a publisher's log is called on the nodes (``/s/in/<stream>/``).

Publishers and nodes check names with the same rules, here.

A stream is named after the publisher's log directory, ``<host or publisher id>.<topic>``,
or ``<id>-<8 hex digits>.<topic>`` for a publisher given a log folder of its own
(:func:`folder_publisher_id`); :func:`publishes_into` is how a node tells whether a
publisher's certificate covers a stream.
The topic is never parsed back out of that name (host names contain dots): a publisher
records it in its directory's ``.topic`` file and sends it when it opens a push, and a
node keeps it beside the stream's input copy. A topic ending in ``.dedup`` asks the
cluster to deduplicate it, per topic and origin, across every stream of the topic.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

from rtcommon.errors import RTError
from rtcommon.log import fsync_directory, write_file_atomically

MAX_STREAM_NAME = 200
DEDUP_SUFFIX = ".dedup"
#: External clients' streams are ``_<client>.<topic>``: a host name never starts with
#: '_', so no client's stream is an internal publisher's (ids starting with it are theirs).
EXTERNAL_PREFIX = "_"
#: The file in a publisher's log directory (and in a node's input copy) naming its topic.
TOPIC_FILE = ".topic"
#: The file in a publisher's log directory (and in a node's input copy) naming the log
#: the stream is: a random id made with the directory. A node refuses a push of the same
#: stream name from another log (two hosts of one name, a folder copied by hand).
OWNER_FILE = ".owner"

_STREAM_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class StreamNameError(RTError, ValueError):
    """A stream name that the nodes would refuse."""


def check_stream_name(name: str, what: str = "stream name") -> str:
    """Return ``name`` if the nodes accept it as a stream name (or as what ``what`` says:
    a topic follows the same rules), else raise StreamNameError."""
    if not isinstance(name, str) or not name:
        raise StreamNameError(f"a {what} is a non-empty string, not {name!r}")
    if len(name) > MAX_STREAM_NAME:
        raise StreamNameError(
            f"{what} {name[:40]!r}... is {len(name)} characters; at most {MAX_STREAM_NAME}"
        )
    if not _STREAM_NAME.fullmatch(name):
        raise StreamNameError(
            f"{what} {name!r} must use only letters, digits, '.', '_' and '-'"
            " and must not start with '.'"
        )
    return name


def is_stream_name(name: str) -> bool:
    try:
        check_stream_name(name)
    except StreamNameError:
        return False
    return True


def folder_publisher_id(publisher_id: str, folder: str | os.PathLike[str]) -> str:
    """The id of ``publisher_id``'s publishers with their log folders under ``folder``:
    publishers on one host with their own folders must not feed one stream."""
    digest = hashlib.blake2s(os.path.abspath(folder).encode(), digest_size=4).hexdigest()
    return f"{publisher_id}-{digest}"


_FOLDER_SUFFIX = re.compile(r"-[0-9a-f]{8}")


def check_publisher_id(publisher_id: str) -> str:
    """Return ``publisher_id`` if a publisher certificate may name it, else raise
    StreamNameError: a stream name's first part, neither an external client's (``_``)
    nor one that reads as another id's publishers with folders (``<id>-<8 hex>``), so
    that :func:`publishes_into` never gives one id another's streams."""
    check_stream_name(publisher_id, "publisher id")
    if publisher_id.startswith(EXTERNAL_PREFIX):
        raise StreamNameError(
            f"publisher id {publisher_id!r} starts with {EXTERNAL_PREFIX!r}, as external"
            " clients' streams do"
        )
    if _FOLDER_SUFFIX.fullmatch(publisher_id[-9:]):
        raise StreamNameError(
            f"publisher id {publisher_id!r} ends in '-' and 8 hex digits, as the streams of"
            " another id's publishers with log folders of their own do"
        )
    return publisher_id


def publishes_into(publisher_id: str, stream: str, topic: str) -> bool:
    """Whether ``stream`` of ``topic`` is one that publisher ``publisher_id`` writes:
    ``<id>.<topic>``, or ``<id>-<8 hex digits>.<topic>`` (:func:`folder_publisher_id`).

    Ids and topics may hold dots, so ``web1`` on topic ``prod.orders`` and
    ``web1.prod`` on topic ``orders`` name one stream: give no publisher an id that is
    another's up to a dot. (Nodes bind a stream to the log that first pushed it, so the
    later one is refused, not mixed in.)"""
    if not stream.endswith(f".{topic}"):
        return False
    writer = stream[: -len(topic) - 1]
    return writer == publisher_id or (
        writer.startswith(publisher_id)
        and _FOLDER_SUFFIX.fullmatch(writer, len(publisher_id)) is not None
    )


def is_dedup_topic(topic: str) -> bool:
    return topic.endswith(DEDUP_SUFFIX)


def check_topic(topic: str) -> str:
    """Return ``topic`` if it can name a replicated topic, else raise StreamNameError."""
    return check_stream_name(topic, "topic")


def _read_line(directory: str | os.PathLike[str], name: str) -> str | None:
    """The one line of ``directory``'s file ``name`` (``.topic``, ``.owner``); None if
    there is no such file."""
    try:
        return Path(directory, name).read_text().strip()
    except FileNotFoundError:
        return None


def read_topic(directory: str | os.PathLike[str]) -> str | None:
    """The topic recorded in ``directory``, or None if none is."""
    text = _read_line(directory, TOPIC_FILE)
    return None if text is None else check_topic(text)


def write_topic(directory: str | os.PathLike[str], topic: str) -> None:
    """Record ``topic`` in ``directory``, durably, unless it is recorded already."""
    if read_topic(directory) != check_topic(topic):
        write_file_atomically(Path(directory, TOPIC_FILE), topic.encode() + b"\n")


def read_owner(directory: str | os.PathLike[str]) -> str | None:
    """The owner id recorded in ``directory``, or None if none is."""
    return _read_line(directory, OWNER_FILE) or None


def log_owner(directory: str | os.PathLike[str]) -> str:
    """The owner id of the publisher's log in ``directory``, made (durably, once) if it
    has none: every replicator of the directory sends the same."""
    owner = read_owner(directory)
    if owner is None:
        owner = secrets.token_hex(16)
        spare = Path(directory, f"{OWNER_FILE}.{owner}")
        write_file_atomically(spare, owner.encode() + b"\n")
        try:
            os.link(spare, Path(directory, OWNER_FILE))  # the first one made wins
        except FileExistsError:
            owner = read_owner(directory) or owner
        finally:
            spare.unlink(missing_ok=True)
            fsync_directory(Path(directory))
    return owner


def write_owner(directory: str | os.PathLike[str], owner: str) -> None:
    """Record ``owner`` in a node's input copy ``directory``, durably."""
    write_file_atomically(Path(directory, OWNER_FILE), owner.encode() + b"\n")
