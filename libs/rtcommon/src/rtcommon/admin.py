"""Asking a node's sequencer for its ``rtproto.v1.Admin`` status, or the cluster for a
prune of its merged log, from another process.

A fresh channel per question, so a node that restarted is asked at once, not after
gRPC's reconnect backoff.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from rtproto.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["node_status", "prune_cluster"]


async def node_status(address: str, timeout: float) -> admin_pb2.NodeStatus:
    """The ``Admin.Status`` of the sequencer at ``address`` (a node's push address);
    raises ``grpc.aio.AioRpcError`` if it cannot answer within ``timeout`` seconds."""
    async with grpc.aio.insecure_channel(address) as channel:
        return await admin_pb2_grpc.AdminStub(channel).Status(
            admin_pb2.StatusRequest(), timeout=timeout
        )


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
