"""Retention of the merged log on a real 3-node cluster with small rolls.

The archiver of each node checks the policy (``retentionDuration``, ``maxLogSize``,
``maxDiskUsagePercent``) and asks the cluster for a prune; every node collects the same
rolled files (emptied in place, sticky bit set), so the files still held stay
byte-identical. A subscriber asking for collected records gets a ``collected`` event
and goes on after them; a node that was away long enough to need a snapshot catches up
past the files its peers collected.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from test_archival import publish, wait_until

import rt
from rtcommon.log import file_start, is_collected, list_log_files

ROLL = 64 << 10
ENV = {
    "RT_ROLL_SIZE": str(ROLL),
    "RT_RAFT_KEEP_ENTRIES": "4",
    "RT_ARCHIVER_INTERVAL": "0.5",
}


def out_files(node) -> dict[str, str | None]:
    """A node's merged-log files: name -> digest of its bytes, None if collected."""
    out = Path(node.data) / "s" / "out"
    files = {}
    for session, roll in list_log_files(out):
        path = out / f"log.{session}.{roll}"
        files[path.name] = (
            None if is_collected(path) else hashlib.sha256(path.read_bytes()).hexdigest()
        )
    return files


def held_bytes(node) -> int:
    out = Path(node.data) / "s" / "out"
    return sum(p.stat().st_size for p in out.glob("log.*"))


def collected_names(node) -> set[str]:
    return {name for name, digest in out_files(node).items() if digest is None}


def rolled_files_agree(running) -> bool:
    """Every node collected the same files, and holds the same bytes in the rest (the
    file being written may differ in length while the merge goes on)."""
    views = [out_files(node) for node in running.spec.nodes]
    names = [list(view) for view in views]
    last = min(len(n) for n in names)
    return all(
        list(view.items())[: last - 1] == list(views[0].items())[: last - 1] for view in views
    )


def test_max_log_size_collects_the_same_files_on_every_node(cluster, tmp_path, http_get):
    running = cluster(nodes=3, env={**ENV, "RT_MAX_LOG_SIZE": "256Ki"})
    client = rt.Cluster.from_file(running.path)
    with rt.Publisher(client, "feed", log_dir=tmp_path / "pub", roll_size=ROLL) as publisher:
        publish(publisher, 60)  # 6,000 messages of 200 B: about 20 merged files
    nodes = running.spec.nodes
    wait_until(lambda: all(held_bytes(n) <= 256 * 1024 + 2 * ROLL for n in nodes), 60, "retention")
    wait_until(lambda: rolled_files_agree(running), 30, "identical merged logs")
    first = collected_names(nodes[0])
    assert len(first) >= 10 and all(collected_names(n) == first for n in nodes)

    status, body = http_get(f"http://{nodes[1].rest}/logHistory")
    assert status == 200
    assert body["retention"]["policy"]["maxLogSize"] == 256 * 1024
    assert body["retention"]["pruned_before"] > 0

    # A subscriber from the start begins at the first file held; one asking for a
    # collected position gets a `collected` event, then the messages held.
    files = list_log_files(Path(nodes[0].data) / "s" / "out")
    first_held = next(
        file_start(*f)
        for f in files
        if not is_collected(Path(nodes[0].data) / "s/out" / f"log.{f[0]}.{f[1]}")
    )
    events, messages = [], []
    with rt.Subscriber(
        client,
        log_dir=tmp_path / "sub",
        position=file_start(0, 0) if files[0][0] == 0 else file_start(files[0][0], 0),
        on_message=lambda m, p: messages.append(p),
        on_event=lambda kind, positions: events.append((kind, positions)),
    ):
        wait_until(lambda: events and messages, 30, "an event and messages")
    assert events[0][0] == "collected" and events[0][1][1] == first_held
    assert messages[0] > first_held
