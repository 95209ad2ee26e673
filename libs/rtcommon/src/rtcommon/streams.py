"""Stream names: what a publisher's log is called on the nodes (``/s/in/<stream>/``).

Publishers and nodes check names with the same rules, here.

A stream is named after the publisher's log directory, ``<host or publisher id>.<topic>``;
a name ending in ``.dedup`` asks the cluster to deduplicate it.
"""

from __future__ import annotations

import re

MAX_STREAM_NAME = 200
DEDUP_SUFFIX = ".dedup"

_STREAM_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


class StreamNameError(ValueError):
    """A stream name that the nodes would refuse."""


def check_stream_name(name: str) -> str:
    """Return ``name`` if the nodes accept it as a stream name, else raise StreamNameError."""
    if not isinstance(name, str) or not name:
        raise StreamNameError(f"a stream name is a non-empty string, not {name!r}")
    if len(name) > MAX_STREAM_NAME:
        raise StreamNameError(
            f"stream name {name[:40]!r}... is {len(name)} characters; at most {MAX_STREAM_NAME}"
        )
    if not _STREAM_NAME.fullmatch(name):
        raise StreamNameError(
            f"stream name {name!r} must use only letters, digits, '.', '_' and '-'"
            " and must not start with '.'"
        )
    return name


def is_stream_name(name: str) -> bool:
    try:
        check_stream_name(name)
    except StreamNameError:
        return False
    return True


def is_dedup_stream(name: str) -> bool:
    return name.endswith(DEDUP_SUFFIX)
