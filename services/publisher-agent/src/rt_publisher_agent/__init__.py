"""rt_publisher_agent: replicates a log directory another process writes.

``rt-publisher-agent`` (``_agent``) runs a :class:`~rtcommon.replication.Replicator`
standalone on one directory; the replicator itself is the library
``rtcommon.replication``, shared with ``rt.Publisher``. Stream names follow
``rtcommon.streams``. Both are re-exported here.
"""

from rtcommon.replication import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_REPLY_TIMEOUT,
    MAX_MESSAGE_BYTES,
    Replicator,
)
from rtcommon.streams import DEDUP_SUFFIX, MAX_STREAM_NAME, StreamNameError, check_stream_name

__all__ = [
    "DEDUP_SUFFIX",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_REPLY_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "MAX_STREAM_NAME",
    "Replicator",
    "StreamNameError",
    "check_stream_name",
]
