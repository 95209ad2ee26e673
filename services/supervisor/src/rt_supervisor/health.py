"""The gRPC health probe of the node's sequencer (``grpc.health.v1``, service "").

A fresh channel per probe, with a short deadline: a long-lived channel would sit in
gRPC's reconnect backoff (up to minutes) after the sequencer restarts, and report it
down long after it serves again. The probe trusts whoever answers on the node's push
port; a stale sequencer cannot be that, since children die with their supervisor.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["SERVING", "UNREACHABLE", "Probe", "probe_sequencer"]

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
