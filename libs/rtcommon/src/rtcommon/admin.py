"""Asking a node's sequencer for its ``rtproto.v1.Admin`` status, or the cluster for a
prune of its merged log, from another process; a status as JSON (``rt status --json``
and the console show the same).

A fresh channel per question, so a node that restarted is asked at once, not after
gRPC's reconnect backoff.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import grpc

from rtproto.v1 import admin_pb2, admin_pb2_grpc

from .cluster import NodeSpec

__all__ = ["describe_status", "node_metrics", "node_status", "prune_cluster"]


async def node_status(address: str, timeout: float) -> admin_pb2.NodeStatus:
    """The ``Admin.Status`` of the sequencer at ``address`` (a node's push address);
    raises ``grpc.aio.AioRpcError`` if it cannot answer within ``timeout`` seconds."""
    async with grpc.aio.insecure_channel(address) as channel:
        return await admin_pb2_grpc.AdminStub(channel).Status(
            admin_pb2.StatusRequest(), timeout=timeout
        )


async def node_metrics(address: str, timeout: float) -> bytes:
    """The sequencer's metrics at ``address`` (``Admin.Metrics``), Prometheus text."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        return (await stub.Metrics(admin_pb2.MetricsRequest(), timeout=timeout)).text


async def prune_cluster(addresses: Sequence[str], before: int, timeout: float) -> int:
    """Ask the cluster to collect its merged log's rolled files wholly before ``before``
    (``Admin.Prune``), through the first of ``addresses`` (nodes' push addresses) that
    answers; returns the cluster's retention point then. Raises the last node's
    ``grpc.aio.AioRpcError`` if none could."""
    error: grpc.aio.AioRpcError | None = None
    for address in addresses:
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                reply = await admin_pb2_grpc.AdminStub(channel).Prune(
                    admin_pb2.PruneRequest(before=before), timeout=timeout
                )
                return reply.pruned_before
        except grpc.aio.AioRpcError as exc:
            error = exc
    if error is None:
        raise ValueError("no node to ask")
    raise error


def describe_status(status: admin_pb2.NodeStatus, nodes: Sequence[NodeSpec]) -> dict[str, Any]:
    """A node's status as JSON, the leader named among ``nodes``."""
    return {
        "node": status.node,
        "session": status.session,
        "role": status.role,
        "term": status.term,
        "leader": next((n.name for n in nodes if n.id == status.leader), None),
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "out_start": status.out_start,
        "out_position": status.out_position,
        "pruned_before": status.pruned_before,
        "input_bytes": status.input_bytes,
        "output_bytes": status.output_bytes,
        "disk_free": status.disk_free,
        "disk_total": status.disk_total,
        "streams": [
            {"stream": s.stream, "topic": s.topic, "held": s.held, "merged": s.merged}
            for s in status.streams
        ],
        "dedup": [
            {"topic": d.topic, "origin": d.origin, "last_id": d.watermark, "dropped": d.dropped}
            for d in status.dedup
        ],
        "clients": [
            {
                "kind": c.kind,
                "stream": c.stream,
                "peer": c.peer,
                "position": c.position,
                "bytes_per_second": c.bytes_per_second,
                "since": datetime.fromtimestamp(c.since, UTC).isoformat(timespec="seconds"),
            }
            for c in status.clients
        ],
    }
