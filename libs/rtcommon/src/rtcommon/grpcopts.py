"""gRPC settings every RT party shares, and how an RPC's failure is told."""

from __future__ import annotations

import grpc

CHANNEL_OPTIONS = [
    # A client takes messages of any size: a Subscribe reply carries a message whole (up
    # to a log file, 1 GiB). What a node takes in is bounded by its servers' options.
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # Every RT channel has a retry loop of its own: gRPC's reconnect backoff would
    # otherwise grow to two minutes behind it, so that a node back after a minute down
    # was reached only some forty seconds later by its peers (and publishers).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def describe_error(error: BaseException | None) -> str:
    """``CODE: details`` for a failed RPC, ``Type: message`` for anything else."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"
