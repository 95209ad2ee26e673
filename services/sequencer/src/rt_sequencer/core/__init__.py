"""rt_sequencer.core: the merge layer above Raft, with no I/O, clocks or threads.

What it owns: :class:`SequencerCore` (``_core``), the state machine that decides
proposals, applies committed ranges, runs the backup path, checkpoints, snapshot
installs and gossip; the merge itself over input and output interfaces
(``_merger``); what every node holds (``_view``); entry contents, checkpoints and
actions (``_types``). ``rt_sequencer._node`` wires it to gRPC, files and timers;
``rt_sequencer.nodesim`` runs whole nodes of it in a seeded simulation.
``docs/sequencer.md`` describes the design.

Errors derive from :class:`SequencerError` (the tree is drawn in ``_errors``).
"""

from ._core import RaftState, SequencerCore, Timing
from ._errors import (
    CheckpointError,
    EntryError,
    HalfAppliedError,
    InputError,
    MergeError,
    SequencerError,
)
from ._hold import AppendHold
from ._merger import InputSource, MergedSink, Merger
from ._types import (
    NO_LEADER,
    Action,
    ApplyStalled,
    Archive,
    CatchUpOut,
    Checkpoint,
    Compact,
    EntryRefused,
    Fetch,
    Gossip,
    Propose,
    Prune,
    PruneOut,
    PublishOut,
    Range,
    SaveCheckpoint,
    decode_entry,
    encode_prune,
    encode_ranges,
    node_of,
    raft_id,
    ranges_named,
)
from ._view import ClusterView

__all__ = [
    "NO_LEADER",
    "Action",
    "AppendHold",
    "ApplyStalled",
    "Archive",
    "CatchUpOut",
    "Checkpoint",
    "CheckpointError",
    "ClusterView",
    "Compact",
    "EntryError",
    "EntryRefused",
    "Fetch",
    "Gossip",
    "HalfAppliedError",
    "InputError",
    "InputSource",
    "MergeError",
    "MergedSink",
    "Merger",
    "Propose",
    "Prune",
    "PruneOut",
    "PublishOut",
    "RaftState",
    "Range",
    "SaveCheckpoint",
    "SequencerCore",
    "SequencerError",
    "Timing",
    "decode_entry",
    "encode_prune",
    "encode_ranges",
    "node_of",
    "raft_id",
    "ranges_named",
]
