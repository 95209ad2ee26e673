"""What the supervisor asks its node's sequencer: the gRPC health probe
(``grpc.health.v1``, service "") and its status (``rtproto.v1.Admin``).

A fresh channel per probe, with a short deadline: a long-lived channel would sit in
gRPC's reconnect backoff (up to minutes) after the sequencer restarts, and report it
down long after it serves again. The probe trusts whoever answers on the node's push
port; a stale sequencer cannot be that, since children die with their supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rtproto.v1 import admin_pb2, admin_pb2_grpc

__all__ = ["SERVING", "UNREACHABLE", "Probe", "probe_sequencer", "sequencer_status"]

SERVING = "SERVING"
UNREACHABLE = "UNREACHABLE"


@dataclass(frozen=True)
class Probe:
    status: str  #: SERVING, NOT_SERVING, SERVICE_UNKNOWN, UNKNOWN or UNREACHABLE
    reason: str = ""  #: why it is not SERVING

    @property
    def serving(self) -> bool:
        return self.status == SERVING


async def probe_sequencer(address: str, timeout: float) -> Probe:
    """Ask the gRPC server at ``address`` for its overall health."""
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        details = (exc.details() or "").splitlines()
        reason = f"{exc.code().name}: {details[0] if details else 'no details'}"
        return Probe(UNREACHABLE, f"health check on {address} failed: {reason}")
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if status == SERVING:
        return Probe(SERVING)
    return Probe(status, f"health check on {address} answered {status}")


async def sequencer_status(address: str, timeout: float) -> admin_pb2.NodeStatus:
    """The sequencer's ``Admin.Status``; raises ``grpc.aio.AioRpcError`` if it cannot."""
    async with grpc.aio.insecure_channel(address) as channel:
        return await admin_pb2_grpc.AdminStub(channel).Status(
            admin_pb2.StatusRequest(), timeout=timeout
        )
