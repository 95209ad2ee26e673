"""The errors of the subscriber side of ``rt``."""

from __future__ import annotations

from rtcommon.errors import RTError

__all__ = ["PositionOutOfRangeError", "SubscriberError"]


class SubscriberError(RTError):
    """A subscriber cannot go on: it needs a new position, local copy or cluster."""


class PositionOutOfRangeError(SubscriberError):
    """Every node said the position asked for is past the end of its merged log."""
