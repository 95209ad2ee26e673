"""``rt.Cluster``: where a client finds the nodes, and how it connects to them.

A cluster is read from the ``cluster.json`` that ``rt cluster up`` writes, or
built from a list of node addresses (each node serves every gRPC service on
both its push and pull ports, so one address per node is enough); clients inside
the cluster's network reach those ports in plain text. An external publisher's
cluster comes from the info-service (:meth:`Cluster.from_info_service`): the nodes'
external endpoints, reached with mutual TLS (``_external``). A cluster with
``publisher_tls`` takes pushes from its own publishers there too, with the publisher
pair kept on their host (``rt cert publisher``; ``$RT_PUBLISHER_PAIR`` or the cluster's
``publisher_pair`` names its folder), whose certificate names their publisher id.
"""

from __future__ import annotations

import os

import grpc

from rtcommon import env
from rtcommon.cluster import ClusterSpec, NodeSpec, quorum
from rtcommon.grpcopts import CHANNEL_OPTIONS
from rtcommon.replication import plain_channel
from rtcommon.tls import TLSError, channel_credentials, client_identity, read_publisher_pair

from ._external import Enrolment

__all__ = ["Cluster", "ClusterLike"]


class Cluster:
    """The nodes of one RT cluster, as clients see them."""

    spec: ClusterSpec
    #: the enrolment of an external client (None inside the cluster's network)
    enrolment: Enrolment | None = None

    def __init__(self, nodes: ClusterSpec | list[str] | tuple[str, ...]) -> None:
        if isinstance(nodes, ClusterSpec):
            self.spec = nodes
        else:
            if isinstance(nodes, str):
                raise TypeError("rt.Cluster takes a list of 'host:port' addresses, not a string")
            self.spec = ClusterSpec(
                nodes=tuple(
                    NodeSpec(id=i, name=f"node-{i}", push=address, pull=address, rest="")
                    for i, address in enumerate(nodes)
                ),
                roll_size=env.settings().roll_size,
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Cluster:
        return cls(ClusterSpec.from_file(path))

    @classmethod
    def from_env(cls, topic: str) -> Cluster:
        """The cluster of RT stream ``topic`` inside a Kubernetes deployment: nodes
        ``$RT_TOPIC_PREFIX<topic>-<n>`` for n below ``$RT_REPLICAS``, push on 5002 and
        pull on 5001 (``--cluster env:TOPIC`` on the command line)."""
        return cls(ClusterSpec.from_env(topic))

    @classmethod
    def from_info_service(
        cls,
        url: str,
        *,
        client_id: str,
        client_secret: str,
        name: str | None = None,
        topics: list[str] | tuple[str, ...] | None = None,
    ) -> Cluster:
        """The cluster as an external publisher reaches it: gets a token for
        ``client_id`` and ``client_secret``, enrols ``name`` (default: the client id) for
        ``topics`` (default: those the token names), and reads the endpoints and a
        certificate; both are read again every 5 s. Raises ``rt.EnrolmentError``."""
        enrolment = Enrolment(
            url, client_id=client_id, client_secret=client_secret, name=name, topics=topics
        )
        cluster = cls(enrolment.spec())
        cluster.enrolment = enrolment
        return cluster

    def connect(self, node: NodeSpec) -> grpc.aio.Channel:
        """A channel to ``node``'s push port: its external endpoint with mutual TLS for an
        enrolled client or (``publisher_tls``) with this host's publisher pair, read
        afresh for each channel so a renewed pair is used from the next; else its
        internal port."""
        if self.enrolment is not None:
            return self.enrolment.connect(node)
        if self.spec.publisher_tls:
            credentials = channel_credentials(*self._publisher_pair())
            return grpc.aio.secure_channel(node.external, credentials, options=CHANNEL_OPTIONS)
        return plain_channel(node)

    def certified_publisher(self, asked: str | None) -> str | None:
        """Under ``publisher_tls``, the publisher id this host's certificate names (which
        ``asked``, a publisher id a caller gave, must be, if given); else None. Raises
        ``TLSError`` when the pair is missing or is not a publisher's."""
        if self.enrolment is not None or not self.spec.publisher_tls:
            return None
        identity = client_identity(self._publisher_pair()[1])
        if not identity.publisher:
            raise TLSError(f"the publisher pair names client {identity.name!r}, not a publisher")
        if asked not in (None, identity.name):
            raise ValueError(
                f"this host's publisher certificate is for {identity.name!r}, not {asked!r}"
            )
        return identity.name

    def _publisher_pair(self) -> tuple[bytes, bytes, bytes]:
        folder = env.settings().publisher_pair or self.spec.publisher_pair
        if not folder:
            raise TLSError(
                "this cluster takes pushes only with a publisher certificate of its CA:"
                " name the folder of this host's pair with $RT_PUBLISHER_PAIR"
                " (rt cert publisher makes one)"
            )
        return read_publisher_pair(folder)

    def close(self) -> None:
        """Stop reading an enrolment's details (nothing to do for other clusters)."""
        if self.enrolment is not None:
            self.enrolment.close()

    @classmethod
    def of(cls, cluster: ClusterLike) -> Cluster:
        """A Cluster from whatever names one: a Cluster, a ClusterSpec, a list of node
        addresses, or the path of a cluster.json."""
        if isinstance(cluster, Cluster):
            return cluster
        if isinstance(cluster, str | os.PathLike):
            return cls.from_file(cluster)
        if isinstance(cluster, ClusterSpec | list | tuple):
            return cls(cluster)
        raise TypeError(
            "a cluster is an rt.Cluster, a list of node addresses or the path of a"
            f" cluster.json, not {type(cluster).__name__}"
        )

    @property
    def nodes(self) -> tuple[NodeSpec, ...]:
        return self.spec.nodes

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def quorum(self) -> int:
        return quorum(len(self.spec.nodes))

    def __repr__(self) -> str:
        return f"Cluster({[node.push for node in self.nodes]!r})"


#: What the client API accepts as a cluster (see :meth:`Cluster.of`).
ClusterLike = Cluster | ClusterSpec | list[str] | tuple[str, ...] | str | os.PathLike[str]
