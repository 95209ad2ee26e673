"""rt_sequencer.raft: the Raft consensus core, with no I/O, clocks or threads.

What it owns: the protocol state machine (``_raft``) and its log (``_log``), the leader's
view of followers and their flow control (``_progress``), the driver-facing node and its
Ready batches (``_node``), the value types (``_types``) and their text form (``_format``),
the configuration (``_config``), the storage Protocol with an in-memory storage
(``_storage``) and a crash-safe file storage (``_file_storage``). ``docs/raft.md``
describes the design; the simulator in ``rt_sequencer.raftsim`` tests it.

Errors derive from :class:`RaftError` (the tree is drawn in ``_errors``).
"""

from ._config import Config
from ._errors import (
    CompactedError,
    ConfigError,
    CorruptStorageError,
    InvariantError,
    NoLeaderError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    SnapshotOutOfDateError,
    StorageError,
    UnavailableError,
    UsageError,
)
from ._file_storage import FileStorage
from ._format import format_entries, format_entry, format_message, format_ready
from ._node import PeerStatus, RaftNode, Status
from ._progress import ProgressState
from ._storage import MemoryStorage, Storage
from ._types import (
    EMPTY_SNAPSHOT,
    NO_NODE,
    Accepted,
    Entry,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
    Snapshot,
    SoftState,
)

__all__ = [
    "EMPTY_SNAPSHOT",
    "NO_NODE",
    "Accepted",
    "CompactedError",
    "Config",
    "ConfigError",
    "CorruptStorageError",
    "Entry",
    "FileStorage",
    "HardState",
    "InvariantError",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NoLeaderError",
    "NotLeaderError",
    "PeerStatus",
    "ProgressState",
    "ProposalDroppedError",
    "RaftError",
    "RaftNode",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotOutOfDateError",
    "SoftState",
    "Status",
    "Storage",
    "StorageError",
    "UnavailableError",
    "UsageError",
    "format_entries",
    "format_entry",
    "format_message",
    "format_ready",
]
