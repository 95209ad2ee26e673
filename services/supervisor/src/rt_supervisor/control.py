"""The supervisors' gRPC ``Control`` service (``rtproto.v1``): hard resets between nodes.

:class:`ControlService` serves this node's :class:`~rt_supervisor.reset.Resetter` to
the other supervisors; :class:`ControlPeer` is how a coordinator reaches another
node's. With a reset token configured, both sides carry it as ``authorization:
Bearer <token>`` metadata and the service refuses a call without it (UNAUTHENTICATED).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

import grpc

from rtcommon.cluster import NodeSpec
from rtcommon.grpcopts import CHANNEL_OPTIONS
from rtproto.v1 import control_pb2, control_pb2_grpc

from .reset import NOT_AVAILABLE, UP, ResetBusyError, ResetOrder, Resetter

__all__ = ["ControlPeer", "ControlService", "bearer_matches"]

#: How long a coordinator waits for a peer's reservation or restart to be answered.
CALL_TIMEOUT = 5.0
#: How long a peer's wipe may take (stopping its services, deleting its files).
WIPE_TIMEOUT = 60.0
#: Codes that mean the peer was not reached (it is then wiped when it returns).
UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def bearer_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` value carries ``token`` (always, with no token set)."""
    if not token:
        return True
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


class ControlService(control_pb2_grpc.ControlServicer):
    def __init__(self, resetter: Resetter, token: str) -> None:
        self.resetter = resetter
        self.token = token

    async def _authorise(self, context) -> None:
        header = dict(context.invocation_metadata()).get("authorization")
        if not bearer_matches(header, self.token):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "a Control call needs the reset token"
            )

    def _reply(self, status: str) -> control_pb2.ResetReply:
        return control_pb2.ResetReply(hostname=self.resetter.node.name, status=status)

    async def Reserve(self, request, context):
        await self._authorise(context)
        refusal = self.resetter.reserve(request)
        if refusal:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, refusal)
        return self._reply(NOT_AVAILABLE)

    async def Release(self, request, context):
        await self._authorise(context)
        self.resetter.release(request.reset_id)
        return self._reply(self.resetter.status() or UP)

    async def Wipe(self, request, context):
        await self._authorise(context)
        try:
            async for step in self.resetter.wipe(request):
                yield control_pb2.ResetStep(step=step)
        except ResetBusyError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    async def Restart(self, request, context):
        await self._authorise(context)
        try:
            await self.resetter.restart(request)
        except ResetBusyError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return self._reply(UP)


class ControlPeer:
    """Another node's supervisor, as a coordinator reaches it."""

    def __init__(self, node: NodeSpec, token: str) -> None:
        if not node.control:
            raise ValueError(f"{node.name} has no control address in the cluster description")
        self.name = node.name
        self.address = node.control
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _order(self, order: ResetOrder) -> control_pb2.ResetOrder:
        return control_pb2.ResetOrder(
            reset_id=order.reset_id, session=order.session, coordinator=order.coordinator
        )

    async def reserve(self, order: ResetOrder) -> str:
        async with self._channel() as channel:
            try:
                await control_pb2_grpc.ControlStub(channel).Reserve(
                    self._order(order), timeout=CALL_TIMEOUT, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in UNREACHABLE:
                    raise
                # A refusal (held, disabled, a wrong token): the reset must not go on
                # without this node, as it would were the node down.
                return f"{exc.code().name}: {exc.details() or 'refused'}"
        return ""

    async def release(self, order: ResetOrder) -> None:
        async with self._channel() as channel:
            await control_pb2_grpc.ControlStub(channel).Release(
                self._order(order), timeout=CALL_TIMEOUT, metadata=self._metadata
            )

    async def wipe(self, order: ResetOrder) -> AsyncIterator[str]:
        async with self._channel() as channel:
            call = control_pb2_grpc.ControlStub(channel).Wipe(
                self._order(order), timeout=WIPE_TIMEOUT, metadata=self._metadata
            )
            async for step in call:
                yield step.step

    async def restart(self, order: ResetOrder) -> None:
        async with self._channel() as channel:
            # A restart returns once the node serves, which takes a quorum restarted.
            await control_pb2_grpc.ControlStub(channel).Restart(
                self._order(order), timeout=CALL_TIMEOUT + 60, metadata=self._metadata
            )

    def _channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
