"""The root of every error RT's libraries raise on purpose, so a caller can catch one
class. Each layer keeps its own base below it (``rtcommon.log.LogError``,
``rtcommon.cluster.ClusterError``, ``rtcommon.streams.StreamNameError``, ``rt``'s
``SubscriberError`` and ``IdSequenceError``), and many also derive from the built-in
they resemble (ValueError, OSError)::

    RTError
     ├── LogError            the log format and its files (rtcommon.log)
     ├── ClusterError        a cluster description that cannot be used
     ├── StreamNameError     a stream name or topic the nodes would refuse
     ├── TLSError            TLS material missing or unreadable (rtcommon.tls)
     ├── EnrolmentError      the info-service refused or did not answer (rt)
     ├── SubscriberError     a subscriber that cannot go on (rt)
     └── IdSequenceError     a message id that breaks RT's id rule (rt)
"""

from __future__ import annotations

__all__ = ["RTError"]


class RTError(Exception):
    """Base class of every error RT's libraries raise on purpose."""
