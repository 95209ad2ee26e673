"""The console: the page at ``GET /`` (``console.html``, plain HTML and a small script)
and the view it reads, ``GET /cluster``: every node's status and reset state, gathered
by this supervisor (the page reads one origin; the nodes answer in parallel).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import grpc

from rtcommon.admin import node_status
from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.grpcopts import describe_error
from rtcommon.rest import RestError, rest_get

__all__ = ["cluster_view", "console_page"]


def console_page() -> str:
    return resources.files(__package__).joinpath("console.html").read_text()


async def cluster_view(spec: ClusterSpec, hostname: str, timeout: float) -> dict[str, Any]:
    """What the console shows: each node's Admin status and reset state."""
    nodes = await asyncio.gather(*(_node_view(spec, node, timeout) for node in spec.nodes))
    return {"hostname": hostname, "cluster": spec.name, "id": spec.id, "nodes": nodes}


async def _node_view(spec: ClusterSpec, node: NodeSpec, timeout: float) -> dict[str, Any]:
    reset = asyncio.create_task(asyncio.to_thread(_reset_status, node, timeout))
    view: dict[str, Any] = {"name": node.name, "rest": node.rest}
    try:
        status = await node_status(node.push, timeout)
    except grpc.aio.AioRpcError as exc:
        view["error"] = describe_error(exc)
    else:
        leader = next((n.name for n in spec.nodes if n.id == status.leader), None)
        view.update(
            role=status.role,
            term=status.term,
            leader=leader,
            commit=status.commit_index,
            applied=status.applied_index,
            session=status.session,
            out_position=status.out_position,
            input_bytes=status.input_bytes,
            output_bytes=status.output_bytes,
            disk_free=status.disk_free,
            disk_total=status.disk_total,
            streams=[
                {"stream": s.stream, "topic": s.topic, "held": s.held, "merged": s.merged}
                for s in status.streams
            ],
            clients=[
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
        )
    view["reset"] = await reset
    return view


def _reset_status(node: NodeSpec, timeout: float) -> str:
    try:
        status, body = rest_get(node.rest, "/resetStatus", timeout=timeout)
    except RestError as exc:
        return f"unreachable ({exc})"
    return str(body.get("status")) if isinstance(body, dict) else f"HTTP {status}"
