"""rt_publisher_agent: the replicator. Ships a publisher's log directory to the nodes of a
cluster and resumes after faults; ``rt-publisher-agent`` runs it standalone.

Modules: ``_replicator`` (the :class:`Replicator`: its thread, loop and quorum tracking),
``_link`` (one push stream to a node, its sessions and retries), ``_agent`` (the command
line). Stream names follow ``rtcommon.streams``, re-exported here.
"""

from rtcommon.streams import DEDUP_SUFFIX, MAX_STREAM_NAME, StreamNameError, check_stream_name

from ._link import MAX_MESSAGE_BYTES
from ._replicator import DEFAULT_DRAIN_TIMEOUT, DEFAULT_REPLY_TIMEOUT, Replicator

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
