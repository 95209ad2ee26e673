"""``rt streams --cluster FILE [--json]``: per topic, its publishers' streams and origins.

One line per stream (a publisher's log on the nodes), grouped by topic: the bytes the
most advanced node holds and has merged, the lag between the two, the publisher's
recent push rate (the fastest of its pushes to the nodes: each node gets every byte)
and on how many nodes it is connected now. Then, for ``.dedup`` topics, one line per
origin: the highest ``|id|`` merged and the duplicates dropped. ``--json`` prints the
same as JSON. Exit status 0 if a node answered, 1 if none did, 2 without a readable
cluster description.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import IO

from rtproto.v1 import admin_pb2

from ._exits import FAILED, OK, USAGE, read_cluster
from ._status import DEFAULT_DEADLINE, ask_nodes, print_table

__all__ = ["streams"]

_HEADER = ("TOPIC", "STREAM", "HELD", "MERGED", "LAG", "BYTES/S", "CONNECTED")
_DEDUP_HEADER = ("DEDUP_TOPIC", "ORIGIN", "LAST_ID", "DROPPED")


def streams(
    cluster_file: str,
    *,
    deadline: float = DEFAULT_DEADLINE,
    out: IO[str] | None = None,
    as_json: bool = False,
) -> int:
    out = out or sys.stdout
    spec = read_cluster(cluster_file, "streams")
    if spec is None:
        return USAGE
    answered = [a for a in ask_nodes(spec.nodes, deadline) if not isinstance(a, str)]
    if not answered:
        print("rt streams: no node answered", file=sys.stderr)
        return FAILED
    topics = describe(answered)
    if as_json:
        print(json.dumps({"cluster": spec.name, "topics": topics}, indent=2), file=out)
    else:
        rows = [
            (
                topic["topic"],
                s["stream"],
                str(s["held"]),
                str(s["merged"]),
                str(s["held"] - s["merged"]),
                str(s["bytes_per_second"]),
                f"{s['connected']}/{len(spec.nodes)}",
            )
            for topic in topics
            for s in topic["streams"]
        ]
        print_table(_HEADER, rows, out)
        dedup = [
            (topic["topic"], o["origin"], str(o["last_id"]), str(o["dropped"]))
            for topic in topics
            for o in topic["origins"]
        ]
        if dedup:
            print(file=out)
            print_table(_DEDUP_HEADER, dedup, out)
    out.flush()
    return OK


def describe(answers: list[admin_pb2.NodeStatus]) -> list[dict]:
    """Per topic, its streams and (``.dedup``) origins, from every node that answered."""
    ahead = max(answers, key=lambda a: a.applied_index)  # the merge is the same everywhere
    rates: dict[str, int] = defaultdict(int)
    connected: dict[str, int] = defaultdict(int)
    for answer in answers:
        for client in answer.clients:
            if client.kind == "publisher":
                rates[client.stream] = max(rates[client.stream], client.bytes_per_second)
                connected[client.stream] += 1
    topics: dict[str, dict] = {}
    for s in sorted(ahead.streams, key=lambda s: (s.topic, s.stream)):
        topic = topics.setdefault(s.topic, {"topic": s.topic, "streams": [], "origins": []})
        topic["streams"].append(
            {
                "stream": s.stream,
                "held": s.held,
                "merged": s.merged,
                "bytes_per_second": rates[s.stream],
                "connected": connected[s.stream],
            }
        )
    for d in sorted(ahead.dedup, key=lambda d: (d.topic, d.origin)):
        topic = topics.setdefault(d.topic, {"topic": d.topic, "streams": [], "origins": []})
        topic["origins"].append({"origin": d.origin, "last_id": d.watermark, "dropped": d.dropped})
    return list(topics.values())
