"""The console: the page at ``GET /`` (``console.html``, plain HTML and a small script)
and the view it reads, ``GET /cluster``: every node's status and reset state, gathered
by this supervisor (the page reads one origin; the nodes answer in parallel).
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

import grpc

from rtcommon.admin import describe_status, node_status
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
    """A node's status as ``rt status --json`` gives it, with its REST address and reset
    state; its error when it cannot answer."""
    reset = asyncio.create_task(asyncio.to_thread(_reset_status, node, timeout))
    try:
        view = describe_status(await node_status(node.push, timeout), spec.nodes)
    except grpc.aio.AioRpcError as exc:
        view = {"node": node.name, "error": describe_error(exc)}
    return {**view, "rest": node.rest, "reset": await reset}


def _reset_status(node: NodeSpec, timeout: float) -> str:
    try:
        status, body = rest_get(node.rest, "/resetStatus", timeout=timeout)
    except RestError as exc:
        return f"unreachable ({exc})"
    return str(body.get("status")) if isinstance(body, dict) else f"HTTP {status}"
