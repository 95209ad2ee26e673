"""The product end to end: rt cluster up, rt.Publisher, rt.Subscriber, rt pub, rt sub.

Two publishers send 100,000 messages together through a real 1- or 3-node
cluster; subscribers receive every message once, in one order, each
publisher's messages in its publish order, and resume exactly from a handed
position; the nodes' merged logs are byte-identical.
"""

from __future__ import annotations

import filecmp
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rt
from rtcommon.log import list_log_files, read_log

BIN = Path(sys.executable).parent
TOTAL = 100_000
ROLL = 1 << 20


def publish_together(cluster: rt.Cluster, root: Path, per_publisher: int) -> None:
    """Two publishers, each in its own thread, on their own log folders."""
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            with rt.Publisher(cluster, "feed", log_dir=root / f"{name}.feed", origin=name) as pub:
                for i in range(per_publisher):
                    pub.publish(("upd", "trade", {"n": i, "from": name}))
                pub.flush()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("alpha", "beta")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors


def numbered(message, position) -> tuple[str, int, int, int]:
    """(origin, id, n, position) of a message ``publish_together`` sent."""
    return message.origin, message.id, message.data[2]["n"], position


class Collector:
    """on_message for a subscriber: keeps ``keep(message, position)`` of each, stops at
    a count."""

    def __init__(self, stop_after: int, keep=numbered) -> None:
        self.items: list = []
        self.stop_after = stop_after
        self.keep = keep
        self.done = threading.Event()

    def __call__(self, message, position) -> None:
        self.items.append(self.keep(message, position))
        if len(self.items) >= self.stop_after:
            self.done.set()


def subscribe(
    cluster, log_dir: Path, count: int, position=None, node=None, keep=numbered
) -> Collector:
    collector = Collector(count, keep)
    subscriber = rt.Subscriber(
        cluster, log_dir=log_dir, position=position, on_message=collector, node=node
    )
    subscriber.start()
    try:
        assert collector.done.wait(240), f"received {len(collector.items)} of {count}"
    finally:
        subscriber.unsubscribe()
    return collector


def out_dir(running, node: int) -> Path:
    return Path(running.spec.nodes[node].data) / "s" / "out"


@pytest.mark.parametrize("nodes", [1, 3])
def test_two_publishers_100k_messages_exactly_once_in_one_order(cluster, tmp_path, nodes):
    running = cluster(nodes=nodes, env={"RT_ROLL_SIZE": str(ROLL)})
    client = rt.Cluster.from_file(running.path)
    publish_together(client, tmp_path / "pub", TOTAL // 2)

    whole = subscribe(client, tmp_path / "sub-whole", TOTAL).items
    assert len(whole) == TOTAL
    for name in ("alpha", "beta"):
        mine = [(n, i) for origin, i, n, _ in whole if origin == name]
        assert mine == [(n, n + 1) for n in range(TOTAL // 2)]  # publish order, ids from 1
    positions = [position for *_, position in whole]
    assert positions == sorted(positions) and len(set(positions)) == TOTAL

    # a subscriber that stops part-way and resumes from its last position
    first = subscribe(client, tmp_path / "sub-resumed", TOTAL // 3).items[: TOTAL // 3]
    rest = subscribe(client, tmp_path / "sub-resumed", TOTAL - len(first), first[-1][3]).items
    assert first + rest[: TOTAL - len(first)] == whole

    # every node's merged log is the same bytes
    if nodes == 3:
        deadline = time.monotonic() + 60
        while len({len(read_log(out_dir(running, n))) for n in range(3)}) != 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        names = [f"log.{s}.{r}" for s, r in list_log_files(out_dir(running, 0))]
        assert len(names) > 3
        for n in (1, 2):
            _, mismatch, errors = filecmp.cmpfiles(
                out_dir(running, 0), out_dir(running, n), names, shallow=False
            )
            assert (mismatch, errors) == ([], [])


def test_a_subscriber_switching_nodes_sees_the_same_bytes_at_the_same_positions(cluster, tmp_path):
    running = cluster(nodes=3, env={"RT_ROLL_SIZE": str(ROLL)})
    client = rt.Cluster.from_file(running.path)
    publish_together(client, tmp_path / "pub", 5000)
    from_0 = subscribe(client, tmp_path / "sub", 4000, node=0).items[:4000]
    from_2 = subscribe(client, tmp_path / "sub", 6000, position=from_0[-1][3], node=2).items
    fresh_2 = subscribe(client, tmp_path / "sub-2", 10_000, node=2).items
    assert from_0 + from_2[:6000] == fresh_2[:10_000]
    sub_files = sorted(os.listdir(tmp_path / "sub-2"))
    for name in (n for n in sub_files if n.startswith("log.")):
        local = (tmp_path / "sub-2" / name).read_bytes()
        served = (out_dir(running, 0) / name).read_bytes()
        assert served.startswith(local)


def test_rt_pub_piped_into_a_cluster_and_rt_sub_print_what_was_sent(cluster, tmp_path):
    running = cluster(nodes=3)
    lines = [json.dumps({"n": i}) for i in range(50)] + ["plain text", '["upd", "x", 1]']
    env = dict(os.environ, RT_LOG_PATH=str(tmp_path / "logs"))
    subprocess.run(
        [BIN / "rt", "pub", "--cluster", running.path, "--topic", "cli", "--origin", "me"],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        timeout=120,
        env=env,
    )
    out = subprocess.run(
        [BIN / "rt", "sub", "--cluster", running.path, "--count", str(len(lines))],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    ).stdout.splitlines()
    printed = [json.loads(line) for line in out]
    assert [p["data"] for p in printed] == [{"n": i} for i in range(50)] + [
        "plain text",
        ["upd", "x", 1],
    ]
    assert {p["on"] for p in printed} == {"me"}
    assert [p["id"] for p in printed] == list(range(1, len(lines) + 1))
    assert all(a["pos"] < b["pos"] for a, b in itertools.pairwise(printed))


def test_dedup_is_per_topic_and_an_ha_pair_is_merged_once(cluster, tmp_path):
    """The regression a new user met: one host publishing on two ``.dedup`` topics with
    its default origin lost the second topic whole. Deduplication is per topic: both
    topics arrive in full, while two hosts sending one sequence on one topic (an HA
    pair, each its own stream) are merged once; ``rt status`` counts what was dropped."""
    running = cluster(nodes=3)
    env = dict(os.environ, RT_LOG_PATH=str(tmp_path / "logs"))
    for topic in ("trades", "quotes"):
        subprocess.run(
            [BIN / "rt", "pub", "--cluster", running.path, "--topic", topic, "--dedup"],
            input="".join(f'{{"{topic}": {i}}}\n' for i in range(5)),
            text=True,
            check=True,
            timeout=120,
            env=env,
        )
    client = rt.Cluster.from_file(running.path)
    # The HA pair: hosts "ha-a" and "ha-b" send ids 1..30 of origin "feed"; "ha-b" starts
    # late (from 11) and goes further (to 40).
    for host, ids in (("ha-a", range(1, 31)), ("ha-b", range(11, 41))):
        with rt.Publisher(
            client, "ticks.dedup", tmp_path / "pub", publisher_id=host, origin="feed"
        ) as pub:
            for i in ids:
                pub.publish(("upd", "tick", {"n": i}), id=i)
            pub.flush()

    out = subprocess.run(
        [BIN / "rt", "sub", "--cluster", running.path, "--count", "50"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
    ).stdout.splitlines()
    printed = [json.loads(line) for line in out]
    # Streams interleave in the merge; each stream's messages keep their order.
    for topic in ("trades", "quotes"):
        mine = [p for p in printed if isinstance(p["data"], dict) and topic in p["data"]]
        assert [(p["data"][topic], p["id"]) for p in mine] == [(i, i + 1) for i in range(5)]
    ticks = [p for p in printed if isinstance(p["data"], list)]
    assert [(p["id"], p["data"][2]["n"]) for p in ticks] == [(i, i) for i in range(1, 41)]

    status = subprocess.run(
        [BIN / "rt", "status", "--cluster", running.path],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = {tuple(line.split()) for line in status.splitlines()}
    host = socket.gethostname()
    assert ("ticks.dedup", "feed", "40", "20") in rows, status
    assert ("trades.dedup", host, "5", "0") in rows, status
    assert ("quotes.dedup", host, "5", "0") in rows, status


def test_a_message_of_tens_of_mebibytes_goes_through_in_pieces(cluster, tmp_path):
    """A message over what a node takes in one gRPC message (16 MiB) is published,
    replicated, merged and delivered whole: it travels in pieces between processes."""
    running = cluster(
        nodes=3, env={"RT_ROLL_SIZE": str(64 << 20), "RT_MAX_MESSAGE_SIZE": str(40 << 20)}
    )
    client = rt.Cluster.from_file(running.path)
    big = os.urandom(24 << 20)
    with rt.Publisher(client, "feed", log_dir=tmp_path / "pub", codec="raw") as publisher:
        for payload in (b"before", big, b"after"):
            publisher.publish(payload)
        publisher.flush(120)
    received = subscribe(client, tmp_path / "sub", 3, keep=lambda message, _: message.data)
    assert received.items == [b"before", big, b"after"]
