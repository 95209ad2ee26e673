"""The description of a cluster that clients and nodes share: ``cluster.json``.

``rt cluster up`` writes it; every node, publisher and subscriber reads it. It
names each node's addresses (push, pull, REST, the supervisor's control), its
data folder and the pid of its supervisor, the roll size every node uses (merged
logs are byte-identical only if all nodes roll alike) and the file holding the
session number, which is kept outside the nodes' data volumes so a hard reset
survives them.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from .errors import RTError
from .log import write_file_atomically

__all__ = ["CLUSTER_FILE", "ClusterError", "ClusterSpec", "NodeSpec", "quorum"]

#: The name of the cluster description in a data folder.
CLUSTER_FILE = "cluster.json"


class ClusterError(RTError):
    """A cluster description that is missing, malformed or inconsistent."""


class NodeSpec(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    push: str  #: host:port of the push port (publishers; also peers and every service)
    pull: str  #: host:port of the pull port (subscribers)
    rest: str  #: host:port of the supervisor's REST API
    control: str = ""  #: host:port of the supervisor's gRPC Control service (hard resets)
    data: str = ""  #: the node's volume, holding s/in, s/out, s/state
    pid: int | None = None  #: the supervisor's pid, when run by the local launcher


class ClusterSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str = "rt"
    nodes: tuple[NodeSpec, ...]
    roll_size: int = 1 << 30
    session_file: str = ""  #: where the merged log's session number is kept
    info_service: str = ""  #: host:port of the info-service, if one runs

    def __post_init__(self) -> None:
        if len(self.nodes) not in (1, 3, 5):
            raise ClusterError(f"a cluster has 1, 3 or 5 nodes, not {len(self.nodes)}")
        if [node.id for node in self.nodes] != list(range(len(self.nodes))):
            raise ClusterError("node ids must be 0, 1, ... in order")

    def node(self, node_id: int) -> NodeSpec:
        if not 0 <= node_id < len(self.nodes):
            raise ClusterError(f"no node {node_id} in a cluster of {len(self.nodes)}")
        return self.nodes[node_id]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ClusterSpec:
        """The cluster described at ``path``: a cluster.json, or a data folder holding one
        (what ``rt cluster up --data`` was given)."""
        path = Path(path)
        if path.is_dir():
            path = path / CLUSTER_FILE
        try:
            return msgspec.json.decode(path.read_bytes(), type=cls)
        except FileNotFoundError:
            raise ClusterError(
                f"no cluster description at {path}: is the cluster running (rt cluster up)?"
            ) from None
        except OSError as exc:
            raise ClusterError(f"cannot read the cluster description {path}: {exc}") from None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ClusterError(f"{path} is not a valid cluster description: {exc}") from exc

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write atomically and durably, so a reader never sees half a file."""
        write_file_atomically(Path(path), msgspec.json.format(msgspec.json.encode(self)) + b"\n")


def quorum(node_count: int) -> int:
    """How many nodes make a majority."""
    return node_count // 2 + 1
