"""Asking a node's sequencer for its ``rtproto.v1.Admin`` status, from another process.

A fresh channel per question, so a node that restarted is asked at once, not after
gRPC's reconnect backoff.
"""

from __future__ import annotations

import grpc

from rtproto.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["node_status"]


async def node_status(address: str, timeout: float) -> admin_pb2.NodeStatus:
    """The ``Admin.Status`` of the sequencer at ``address`` (a node's push address);
    raises ``grpc.aio.AioRpcError`` if it cannot answer within ``timeout`` seconds."""
    async with grpc.aio.insecure_channel(address) as channel:
        return await admin_pb2_grpc.AdminStub(channel).Status(
            admin_pb2.StatusRequest(), timeout=timeout
        )
