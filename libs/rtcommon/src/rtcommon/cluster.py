"""The description of a cluster that clients and nodes share: ``cluster.json``.

``rt cluster up`` writes it; every node, publisher and subscriber reads it. It
names each node's addresses (push, pull, REST, the supervisor's control, the peer
listener and the external push port), its data folder and the pid of its supervisor,
the roll size every node uses (merged logs are byte-identical only if all nodes roll
alike), where the session number is kept (a file, or a ConfigMap in Kubernetes: outside
the nodes' data volumes so a hard reset survives them), the info-service, and where the
cluster's TLS material is and whether nodes use it between themselves. In Kubernetes
the same description is built from the environment (``env:STREAM``,
:meth:`ClusterSpec.from_env`).

A cluster has an identity (``id``, made when ``rt cluster up`` first writes the file),
and everything that holds a cluster's data records it in a ``.cluster`` file: each
node's volume, each publisher's log folder, each subscriber's copy. A folder of one
cluster is then refused by another (:func:`claim_for_cluster`), and clients keep their
default folders under ``$RT_LOG_PATH/<name>-<id>/`` (:meth:`ClusterSpec.client_folder`),
so a new cluster never sees an old one's messages.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import msgspec

from .env import Settings
from .errors import RTError
from .log import write_file_atomically
from .streams import StreamNameError, check_stream_name

__all__ = [
    "CLUSTER_FILE",
    "CLUSTER_ID_FILE",
    "DEPLOYMENT_PORTS",
    "ENV_PREFIX",
    "ClusterError",
    "ClusterMismatchError",
    "ClusterSpec",
    "NodeSpec",
    "claim_for_cluster",
    "cluster_source",
    "new_cluster_id",
    "quorum",
]

#: The name of the cluster description in a data folder.
CLUSTER_FILE = "cluster.json"
#: ``env:STREAM`` names a cluster by the environment (:meth:`ClusterSpec.from_env`).
ENV_PREFIX = "env:"
#: A node's ports in a deployment (DESIGN section 10).
DEPLOYMENT_PORTS = {
    "external": 5000,
    "pull": 5001,
    "push": 5002,
    "control": 5003,
    "peer": 5004,
    "rest": 6000,
}
#: The file naming the cluster whose data a folder holds.
CLUSTER_ID_FILE = ".cluster"


class ClusterError(RTError):
    """A cluster description that is missing, malformed or inconsistent."""


class ClusterMismatchError(ClusterError):
    """A folder that holds another cluster's data."""


class NodeSpec(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    push: str  #: host:port of the push port (publishers; also peers and every service)
    pull: str  #: host:port of the pull port (subscribers)
    rest: str  #: host:port of the supervisor's REST API
    control: str = ""  #: host:port of the supervisor's gRPC Control service (hard resets)
    #: host:port of the external push listener (Push alone, mutual TLS; "" for none)
    external: str = ""
    #: host:port of the listener for the other nodes (Peer, Admin, Pull; mutual TLS when
    #: the cluster has ``internal_tls``). "": the peers use the push port, in plain text.
    peer: str = ""
    data: str = ""  #: the node's volume, holding s/in, s/out, s/state
    pid: int | None = None  #: the supervisor's pid, when run by the local launcher


class ClusterSpec(msgspec.Struct, frozen=True, kw_only=True):
    name: str = "rt"
    id: str = ""  #: the cluster's identity ("" for a cluster given by addresses alone)
    nodes: tuple[NodeSpec, ...]
    roll_size: int = 1 << 30
    session_file: str = ""  #: where the merged log's session number is kept
    #: or the ConfigMap keeping it, ``namespace/name`` or ``name`` (Kubernetes)
    session_configmap: str = ""
    info_service: str = ""  #: the info-service's URL (``http://host:port``), if one runs
    #: the folder of the cluster's TLS material (``rtcommon.tls.FileCAStore``; "" for none)
    tls_dir: str = ""
    #: or the Kubernetes Secret holding it (``rtcommon.tls.KubernetesCAStore``)
    tls_secret: str = ""
    #: the built-in issuer's client registry (``rtcommon.registry``), for ``rt client add``
    clients_file: str = ""
    #: nodes talk to each other with mutual TLS on their peer listeners (``tls_dir``'s
    #: CA and each node's pair), and accept there only the cluster's nodes
    internal_tls: bool = False
    #: the nodes take a push only with a certificate of the cluster's CA, on their
    #: external ports: an internal publisher's (``rt cert publisher``, its own streams)
    #: or an enrolled client's; their internal push ports refuse every push
    publisher_tls: bool = False
    #: where a publisher on this cluster's host keeps its pair (``rtcommon.tls.
    #: save_publisher_pair``); ``$RT_PUBLISHER_PAIR`` names another
    publisher_pair: str = ""

    def __post_init__(self) -> None:
        if len(self.nodes) not in (1, 3, 5):
            raise ClusterError(f"a cluster has 1, 3 or 5 nodes, not {len(self.nodes)}")
        if [node.id for node in self.nodes] != list(range(len(self.nodes))):
            raise ClusterError("node ids must be 0, 1, ... in order")

    @property
    def has_tls(self) -> bool:
        """Whether the cluster keeps TLS material (external ports, internal TLS)."""
        return bool(self.tls_dir or self.tls_secret)

    def node(self, node_id: int) -> NodeSpec:
        if not 0 <= node_id < len(self.nodes):
            raise ClusterError(f"no node {node_id} in a cluster of {len(self.nodes)}")
        return self.nodes[node_id]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ClusterSpec:
        """The cluster described at ``path``: a cluster.json, or a data folder holding one
        (what ``rt cluster up --data`` was given), or ``env:STREAM``: the cluster of RT
        stream STREAM in a Kubernetes deployment (:meth:`from_env`)."""
        if isinstance(path, str) and path.startswith(ENV_PREFIX):
            return cls.from_env(path.removeprefix(ENV_PREFIX))
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

    @classmethod
    def from_env(cls, stream: str, environ: Mapping[str, str] | None = None) -> ClusterSpec:
        """The cluster of RT stream ``stream`` in a Kubernetes deployment, as RT names its
        nodes: node n is ``$RT_TOPIC_PREFIX<stream>-<n>`` (a StatefulSet's pod and a
        Service of its own) for n below ``$RT_REPLICAS``, with the deployment's ports
        (:data:`DEPLOYMENT_PORTS`). A node reads the rest from the environment too:
        ``RT_CLUSTER_ID``, ``RT_TLS_SECRET`` or ``RT_TLS_DIR`` (the TLS material: external
        port and internal TLS), ``RT_PUBLISHER_TLS``, ``RT_SESSION_CONFIGMAP``,
        ``RT_INFO_SERVICE``, ``RT_DATA`` (the folder holding the volume ``s``; "/")."""
        environ = os.environ if environ is None else environ
        settings = Settings.from_env(environ)
        try:
            check_stream_name(stream, "stream")
        except StreamNameError as exc:
            raise ClusterError(f"env:{stream}: {exc}") from None
        tls_dir = environ.get("RT_TLS_DIR", "")
        tls_secret = environ.get("RT_TLS_SECRET", "")
        nodes = []
        for n in range(settings.replicas):
            host = f"{settings.topic_prefix}{stream}-{n}"
            ports = {role: f"{host}:{port}" for role, port in DEPLOYMENT_PORTS.items()}
            nodes.append(
                NodeSpec(
                    id=n,
                    name=host,
                    push=ports["push"],
                    pull=ports["pull"],
                    rest=ports["rest"],
                    control=ports["control"],
                    peer=ports["peer"],
                    external=ports["external"]
                    if tls_dir or tls_secret or settings.publisher_tls
                    else "",
                    data=environ.get("RT_DATA", "/"),
                )
            )
        return cls(
            name=stream,
            id=environ.get("RT_CLUSTER_ID", ""),
            nodes=tuple(nodes),
            roll_size=settings.roll_size,
            session_configmap=environ.get("RT_SESSION_CONFIGMAP", ""),
            info_service=environ.get("RT_INFO_SERVICE", ""),
            tls_dir=tls_dir,
            tls_secret=tls_secret,
            internal_tls=bool(tls_dir or tls_secret),
            publisher_tls=settings.publisher_tls,
        )

    def client_folder(self, log_path: Path) -> Path:
        """Where this cluster's clients keep their default folders under ``log_path``."""
        return log_path / f"{self.name}-{self.id}" if self.id else log_path

    def to_file(self, path: str | os.PathLike[str]) -> None:
        """Write atomically and durably, so a reader never sees half a file."""
        write_file_atomically(Path(path), msgspec.json.format(msgspec.json.encode(self)) + b"\n")


def cluster_source(text: str) -> str | Path:
    """What a ``--cluster`` argument names, as a process keeps it to read again or to
    pass on to its children: ``env:STREAM`` as it is, a path made absolute."""
    return text if text.startswith(ENV_PREFIX) else Path(text).absolute()


def quorum(node_count: int) -> int:
    """How many nodes make a majority."""
    return node_count // 2 + 1


def new_cluster_id() -> str:
    return uuid.uuid4().hex[:16]


def claim_for_cluster(directory: str | os.PathLike[str], cluster: ClusterSpec, what: str) -> None:
    """Record in ``directory`` that it holds ``cluster``'s data (``what`` says what the
    folder is, for the error); raise :class:`ClusterMismatchError` if it holds another's.
    A cluster without an id claims nothing."""
    if not cluster.id:
        return
    path = Path(directory, CLUSTER_ID_FILE)
    try:
        held = path.read_text().strip()
    except FileNotFoundError:
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            write_file_atomically(path, cluster.id.encode() + b"\n")
        except PermissionError:
            pass  # a folder this process may only read (an agent's): nothing to record
        return
    if held != cluster.id:
        raise ClusterMismatchError(
            f"{what} {directory} holds data of cluster {held}, not of cluster"
            f" {cluster.name!r} ({cluster.id}) it is used with: use another folder (the"
            " default folders are per cluster), or remove it to start afresh"
        )
