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
import os
import signal
import time
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


def test_max_log_size_collects_the_same_files_on_every_node(cluster, tmp_path, http_get, caplog):
    running = cluster(nodes=3, env={**ENV, "RT_MAX_LOG_SIZE": "256Ki"})
    client = rt.Cluster.from_file(running.path)
    with rt.Publisher(client, "feed", log_dir=tmp_path / "pub", roll_size=ROLL) as publisher:
        publish(publisher, 60)  # 6,000 messages of 200 B: about 20 merged files
    nodes = running.spec.nodes
    wait_until(lambda: all(held_bytes(n) <= 256 * 1024 + 2 * ROLL for n in nodes), 60, "retention")
    wait_until(lambda: rolled_files_agree(running), 30, "identical merged logs")
    # Each node empties the files a prune collects in its own time (the archivers may
    # also prune once more meanwhile): the same files, once every node has.
    wait_until(
        lambda: all(collected_names(n) == collected_names(nodes[0]) for n in nodes),
        30,
        "the same files collected on every node",
    )
    assert len(collected_names(nodes[0])) >= 10

    histories = [http_get(f"http://{node.rest}/logHistory") for node in nodes]
    assert all(status == 200 for status, _ in histories)
    retention = [body["retention"] for _, body in histories]
    assert all(r["policy"]["maxLogSize"] == 256 * 1024 for r in retention)
    assert all(r["collected_before"] > 0 for r in retention)
    # Every archiver checks; the first to ask prunes for all (the others may find nothing).
    prunes = [r["last_prune"] for r in retention if r["last_prune"]]
    assert prunes and all(prune["reasons"] == ["maxLogSize"] for prune in prunes)

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
        position=file_start(files[0][0], 0),  # the first file: collected
        on_message=lambda m, p: messages.append(p),
        on_event=lambda kind, positions: events.append((kind, positions)),
    ):
        wait_until(lambda: events and messages, 30, "an event and messages")
    assert events[0][0] == "collected" and events[0][1][1] == first_held
    assert messages[0] > first_held
    # The default event handler says what happened.
    quiet = []
    with rt.Subscriber(
        client,
        log_dir=tmp_path / "sub2",
        position=file_start(files[0][0], 0),
        on_message=lambda m, p: quiet.append(p),
    ):
        wait_until(lambda: quiet, 30, "messages")
    assert f"Collected event in {running.spec.name}" in caplog.text


def test_max_disk_usage_percent_collects_while_the_volume_is_fuller(cluster, tmp_path, http_get):
    """Any real volume is fuller than 0.001%: every rolled file goes, on every node."""
    running = cluster(nodes=3, env={**ENV, "RT_MAX_DISK_USAGE_PERCENT": "0.001"})
    client = rt.Cluster.from_file(running.path)
    with rt.Publisher(client, "feed", log_dir=tmp_path / "pub", roll_size=ROLL) as publisher:
        publish(publisher, 30)
    nodes = running.spec.nodes
    wait_until(lambda: all(len(collected_names(n)) >= 6 for n in nodes), 60, "collected")
    wait_until(lambda: rolled_files_agree(running), 30, "identical merged logs")
    prunes = [http_get(f"http://{n.rest}/logHistory")[1]["retention"]["last_prune"] for n in nodes]
    assert all(p["reasons"] == ["maxDiskUsagePercent"] for p in prunes if p) and any(prunes)


def test_retention_duration_collects_by_message_timestamp(cluster, tmp_path):
    """Files whose newest message is older than the duration go; every file holding a
    recent message stays."""
    running = cluster(nodes=3, env={**ENV, "RT_RETENTION_DURATION": "60"})
    client = rt.Cluster.from_file(running.path)
    two_hours_ago = time.time_ns() - 120 * 60 * 10**9
    payload = b"x" * 200
    with rt.Publisher(client, "feed", log_dir=tmp_path / "pub", roll_size=ROLL) as publisher:
        for _ in range(40):
            for _ in range(100):
                publisher.publish(payload, ts=two_hours_ago)
            publisher.flush(timeout=60)
        publish(publisher, 40)  # messages of now
    nodes = running.spec.nodes
    wait_until(lambda: len(collected_names(nodes[0])) >= 8, 60, "old files collected")
    time.sleep(2)  # several more checks of the policy: nothing recent goes
    wait_until(lambda: rolled_files_agree(running), 30, "identical merged logs")
    assert all(collected_names(n) == collected_names(nodes[0]) for n in nodes)
    stamps: list[int] = []
    with rt.Subscriber(
        client, log_dir=tmp_path / "sub", on_message=lambda m, p: stamps.append(m.ts)
    ):
        wait_until(lambda: sum(ts > two_hours_ago for ts in stamps) == 4000, 30, "recent ones")
    old = sum(ts == two_hours_ago for ts in stamps)
    assert old < 4000 - 8 * 250  # most old messages are gone (about 300 fit in a file)...
    assert stamps[old:] and all(ts > two_hours_ago for ts in stamps[old:])  # ...in order


def test_subscribers_follow_opt_out_or_lead_the_cluster_truncation(cluster, tmp_path, monkeypatch):
    """Unset, a subscriber's copy follows the cluster's truncation; =0 it is left alone
    until its owner prunes it; =1 the lead subscriber's prune collects the cluster's
    merged log, and with it the followers' copies. A subscriber asking for collected
    records is told with a ``collected`` event and goes on after them."""
    running = cluster(nodes=3, env=ENV)
    client = rt.Cluster.from_file(running.path)
    with rt.Publisher(client, "feed", log_dir=tmp_path / "pub", roll_size=ROLL) as publisher:
        publish(publisher, 60)
    received: dict[str, list[int]] = {"follow": [], "own": [], "lead": []}
    subscribers = {}
    for name, mode in [("follow", None), ("own", "0"), ("lead", "1")]:
        if mode is None:
            monkeypatch.delenv("REPLICATOR_EXCHANGE_ARCHIVED", raising=False)
        else:
            monkeypatch.setenv("REPLICATOR_EXCHANGE_ARCHIVED", mode)
        subscribers[name] = rt.Subscriber(
            client,
            log_dir=tmp_path / name,
            on_message=lambda m, p, name=name: received[name].append(p),
        ).start()
    try:
        wait_until(lambda: all(len(r) == 6000 for r in received.values()), 60, "all delivered")
        lead = subscribers["lead"]
        cut = received["lead"][4000]
        pruned = lead.prune(cut)
        assert len(pruned) >= 10 and all(is_collected(p) for p in pruned)
        cluster_collected = {p.name for p in pruned}  # the same files, named alike
        nodes = running.spec.nodes
        # Each node collects once its Raft snapshot (every 5 s) passed the point.
        wait_until(
            lambda: all(collected_names(n) == cluster_collected for n in nodes), 30, "cluster"
        )

        def copy_collected(name: str) -> set[str]:
            folder = tmp_path / name
            return {p.name for p in folder.glob("log.*") if is_collected(p)}

        wait_until(lambda: copy_collected("follow") == cluster_collected, 30, "the follower")
        assert copy_collected("lead") == cluster_collected
        time.sleep(2)  # heartbeats carried the retention point to every subscriber
        assert copy_collected("own") == set()
        subscribers["own"].prune(received["own"][2000])
        assert 0 < len(copy_collected("own")) < len(cluster_collected)
        assert all(len(r) == 6000 for r in received.values())
    finally:
        for subscriber in subscribers.values():
            subscriber.unsubscribe()

    # The follower again, on its collected copy: from the start is the first file held.
    events, again = [], []
    with rt.Subscriber(
        client,
        log_dir=tmp_path / "follow",
        on_message=lambda m, p: again.append(p),
        on_event=lambda kind, positions: events.append((kind, positions)),
    ):
        wait_until(lambda: again and again[-1] == received["follow"][-1], 30, "the copy")
    assert not events and again == received["follow"][-len(again) :]
    assert len(again) < 3000  # about the 2,000 after the cut, and its file

    late = []
    with rt.Subscriber(
        client,
        log_dir=tmp_path / "late",
        position=received["follow"][100],
        on_message=lambda m, p: late.append(p),
        on_event=lambda kind, positions: events.append((kind, positions)),
    ):
        wait_until(lambda: late and late[-1] == received["follow"][-1], 30, "the rest")
    assert [kind for kind, _ in events] == ["collected"]
    assert events[0][1][0] == received["follow"][100] and late[0] > events[0][1][1]
    assert late == [p for p in received["follow"] if p > events[0][1][1]]


def test_a_node_away_for_a_snapshot_catches_up_past_the_files_its_peers_collected(
    cluster, tmp_path, procs
):
    running = cluster(nodes=3, env={**ENV, "RT_MAX_LOG_SIZE": "256Ki"})
    client = rt.Cluster.from_file(running.path)
    nodes = running.spec.nodes
    supervisor = nodes[2].pid
    sequencer = procs.child_running(supervisor, "rt-sequencer")
    with rt.Publisher(client, "feed", log_dir=tmp_path / "pub", roll_size=ROLL) as publisher:
        publish(publisher, 10)
        wait_until(lambda: rolled_files_agree(running), 30, "identical merged logs")
        # Node 2's sequencer dies, and its supervisor is held so it cannot restart it yet.
        os.kill(supervisor, signal.SIGSTOP)
        try:
            os.kill(sequencer, signal.SIGKILL)
            publish(publisher, 60)
            wait_until(lambda: len(collected_names(nodes[0])) >= 10, 60, "collected on two")
            # Raft's snapshot follows the checkpoint every 5 s; entries after it cut the
            # log, so the node that was away needs the snapshot.
            time.sleep(6)
            publish(publisher, 10)
            time.sleep(1)
            assert len(collected_names(nodes[2])) < 3  # it was away
        finally:
            os.kill(supervisor, signal.SIGCONT)
        publish(publisher, 5)
    wait_until(lambda: rolled_files_agree(running), 60, "the node caught up")
    wait_until(
        lambda: collected_names(nodes[2]) == collected_names(nodes[0]), 30, "collected alike"
    )
    assert "past collected files" in running.log()
    sub = []
    with rt.Subscriber(
        client, log_dir=tmp_path / "sub", node=2, on_message=lambda m, p: sub.append(p)
    ):
        wait_until(lambda: len(sub) >= 1000, 30, "delivery from the node that caught up")
