"""``rt status --cluster FILE``: one line per node, from its ``Admin.Status`` (gRPC).

Columns: node, role, term, leader, commit and applied index, lag (applied entries behind
the most advanced node that answered), the end of the merged log (as a position and as
``log.X.Y+offset``), the number of input streams, and the node's reset state from its
supervisor's ``GET /resetStatus`` (``UP``, a reset step, ``DOWN``...). Then each node's
disk: bytes of input copies and of merged log, free space, and the oldest position its
merged log still holds. A node that does not answer within the deadline is shown as
``unreachable: <reason>``. Then, if any ``.dedup`` topic has merged anything, one line
per topic and origin: the highest ``|id|`` merged and the duplicates dropped (the merge
is deterministic, so the most advanced node speaks for all). ``--json`` prints every
node's status as JSON instead (positions as integers, the session, and each stream's
topic, held and merged positions). ``FILE`` may be the data folder. Exit status 0 if at
least one node answered, 1 otherwise, 2 without a readable cluster description.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import grpc

from rtcommon.admin import describe_status
from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.log import split_position
from rtcommon.rest import RestError, rest_get
from rtproto.v1 import admin_pb2, admin_pb2_grpc

from ._exits import FAILED, OK, USAGE, read_cluster

__all__ = [
    "DEFAULT_DEADLINE",
    "ask_nodes",
    "format_position",
    "print_table",
    "reset_states",
    "status",
]

DEFAULT_DEADLINE = 2.0
_HEADER = (
    "NODE",
    "ROLE",
    "TERM",
    "LEADER",
    "COMMIT",
    "APPLIED",
    "LAG",
    "OUT_POSITION",
    "STREAMS",
    "RESET",
)
_DEDUP_HEADER = ("DEDUP_TOPIC", "ORIGIN", "LAST_ID", "DROPPED")
_DISK_HEADER = ("NODE", "INPUT_COPIES", "MERGED_LOG", "DISK_FREE", "OLDEST_HELD")


def format_bytes(count: int) -> str:
    """``1.5 GiB``: a byte count for people."""
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"


def format_position(position: int) -> str:
    """``17592186044516 (log.1.0+100)``: the raw position and the file and offset it names."""
    session, roll, offset = split_position(position)
    return f"{position} (log.{session}.{roll}+{offset})"


def ask_nodes(nodes: tuple[NodeSpec, ...], deadline: float) -> list[admin_pb2.NodeStatus | str]:
    """Every node's status or the reason it gave none, asked all at once."""
    channels = [grpc.insecure_channel(node.push) for node in nodes]
    try:
        calls = [
            admin_pb2_grpc.AdminStub(channel).Status.future(
                admin_pb2.StatusRequest(), timeout=deadline
            )
            for channel in channels
        ]
        answers: list[admin_pb2.NodeStatus | str] = []
        for node, call in zip(nodes, calls, strict=True):
            try:
                answers.append(call.result())
            except grpc.RpcError as exc:
                answers.append(_reason(node, exc))
        return answers
    finally:
        for channel in channels:
            channel.close()


def reset_states(nodes: tuple[NodeSpec, ...], deadline: float) -> list[str]:
    """Each node's ``/resetStatus``, or why there is none, asked all at once."""

    def ask(node: NodeSpec) -> str:
        try:
            code, body = rest_get(node.rest, "/resetStatus", timeout=deadline)
        except RestError as exc:
            return f"unreachable ({exc})"
        return str(body.get("status")) if code == 200 and isinstance(body, dict) else f"HTTP {code}"

    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        return list(pool.map(ask, nodes))


def _reason(node: NodeSpec, exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    first = (details or "").splitlines()[0] if details else "no details"
    name = code.name if code is not None else "ERROR"
    return f"unreachable: {name} on {node.push}: {first}"


def status(
    cluster_file: str,
    *,
    deadline: float = DEFAULT_DEADLINE,
    out: IO[str] | None = None,
    as_json: bool = False,
) -> int:
    out = out or sys.stdout
    spec = read_cluster(cluster_file, "status")
    if spec is None:
        return USAGE
    with ThreadPoolExecutor(max_workers=1) as pool:
        resets = pool.submit(reset_states, spec.nodes, deadline)
        answers = ask_nodes(spec.nodes, deadline)
        resets_now = resets.result()
    if as_json:
        print(json.dumps(_as_json(spec, answers, resets_now), indent=2), file=out)
        out.flush()
        return OK if any(not isinstance(a, str) for a in answers) else FAILED
    names = {node.id: node.name for node in spec.nodes}
    applied = [a.applied_index for a in answers if not isinstance(a, str)]
    most = max(applied, default=0)
    rows: list[tuple[str, ...]] = []
    for node, answer, reset in zip(spec.nodes, answers, resets_now, strict=True):
        if isinstance(answer, str):
            rows.append((node.name, f"{answer} (reset status: {reset})"))
            continue
        leader = names.get(answer.leader, str(answer.leader)) if answer.leader >= 0 else "-"
        rows.append(
            (
                node.name,
                answer.role or "?",
                str(answer.term),
                leader,
                str(answer.commit_index),
                str(answer.applied_index),
                str(most - answer.applied_index),
                format_position(answer.out_position),
                str(len(answer.streams)),
                reset,
            )
        )
    print_table(_HEADER, rows, out)
    answered = [a for a in answers if not isinstance(a, str)]
    disk = [
        (
            node.name,
            format_bytes(answer.input_bytes),
            format_bytes(answer.output_bytes),
            f"{format_bytes(answer.disk_free)} of {format_bytes(answer.disk_total)}",
            format_position(answer.out_start),
        )
        for node, answer in zip(spec.nodes, answers, strict=True)
        if not isinstance(answer, str)
    ]
    if disk:
        print(file=out)
        print_table(_DISK_HEADER, disk, out)
    if answered:
        ahead = max(answered, key=lambda a: a.applied_index)
        dedup = [
            (d.topic, d.origin, str(d.watermark), str(d.dropped))
            for d in sorted(ahead.dedup, key=lambda d: (d.topic, d.origin))
        ]
        if dedup:
            print(file=out)
            print_table(_DEDUP_HEADER, dedup, out)
    out.flush()
    return OK if applied else FAILED


def _as_json(
    spec: ClusterSpec, answers: list[admin_pb2.NodeStatus | str], resets: list[str]
) -> dict:
    """Every node's status as JSON (``--json``): what the table shows, and the streams."""
    nodes = []
    for node, answer, reset in zip(spec.nodes, answers, resets, strict=True):
        if isinstance(answer, str):
            nodes.append({"node": node.name, "error": answer, "reset": reset})
        else:
            nodes.append({**describe_status(answer, spec.nodes), "reset": reset})
    return {"cluster": spec.name, "nodes": nodes}


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]], out: IO[str]) -> None:
    """Columns padded to their widest cell; a short row (a node and its reason) runs on."""
    full = [row for row in (header, *rows) if len(row) == len(header)]
    widths = [max(len(row[i]) for row in full) for i in range(len(header))]
    for row in (header, *rows):
        if len(row) == len(header):
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        else:
            line = f"{row[0].ljust(widths[0])}  {row[1]}"
        print(line.rstrip(), file=out)
