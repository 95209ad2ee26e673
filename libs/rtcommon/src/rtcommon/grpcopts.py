"""gRPC settings every RT party shares, and how an RPC's failure is told."""

from __future__ import annotations

import grpc

#: Records can be as large as a log file (1 GiB), so messages are not size-limited.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


def describe_error(error: BaseException | None) -> str:
    """``CODE: details`` for a failed RPC, ``Type: message`` for anything else."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"
