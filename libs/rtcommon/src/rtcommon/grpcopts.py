"""gRPC settings every RT party shares."""

from __future__ import annotations

#: Records can be as large as a log file (1 GiB), so messages are not size-limited.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]
