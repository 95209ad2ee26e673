"""Figures of the resets on a local 3-node cluster holding ``RT_BENCH_RESET_COUNT`` messages.

- hard reset: from ``GET /hardReset`` to every node ``UP`` again, and to the running
  subscriber's ``reset`` event;
- soft reset: from ``GET /softReset`` on node-1 (its state deleted first) to ``UP``, and
  to its merged log holding every record again (rebuilt from the leader's entries).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from e2e_bench import LocalCluster

import rt
from rtcommon.cluster import ClusterSpec
from rtcommon.log import read_log

COUNT = int(os.environ.get("RT_BENCH_RESET_COUNT", "200000"))


def rest(address: str, path: str) -> dict:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as reply:
            return json.loads(reply.read())
    except OSError:
        return {"status": "unreachable"}


def wait_until(predicate, timeout: float = 300.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError("the cluster did not get there")
        time.sleep(0.02)
    return time.monotonic()


def merged_end(spec: ClusterSpec) -> int:
    """The end of the merged log once every node holds the same and it stopped moving."""
    last = None
    while True:
        ends = {rest(node.rest, "/latestOutPosition").get("position") for node in spec.nodes}
        if len(ends) == 1 and ends == last:
            return ends.pop()
        last = ends
        time.sleep(1.0)


def publish(cluster: rt.Cluster, root: Path, origin: str, count: int) -> None:
    payload = b"x" * 100
    with rt.Publisher(cluster, "bench", log_dir=root / origin, origin=origin) as publisher:
        for _ in range(count):
            publisher.publish(payload)
        publisher.flush(timeout=300)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rt-reset-bench-") as folder:
        root = Path(folder)
        cluster = LocalCluster(root / "data")
        try:
            spec = ClusterSpec.from_file(cluster.file)
            client = rt.Cluster.from_file(cluster.file)
            received = {"messages": 0, "reset_at": None}

            def on_message(message, position) -> None:
                received["messages"] += 1

            def on_event(kind, positions) -> None:
                received["reset_at"] = time.monotonic()

            subscriber = rt.Subscriber(
                client, log_dir=root / "sub", on_message=on_message, on_event=on_event
            ).start()
            publish(client, root, "alpha", COUNT)
            wait_until(lambda: received["messages"] >= COUNT)
            up = ["UP"] * len(spec.nodes)

            def statuses() -> list[str]:
                return [rest(node.rest, "/resetStatus")["status"] for node in spec.nodes]

            started = time.monotonic()
            assert rest(spec.nodes[0].rest, "/hardReset")["status"] == "Resetting"
            all_up = wait_until(lambda: statuses() == up)
            event = wait_until(lambda: received["reset_at"] is not None) and received["reset_at"]
            print(f"hard reset of 3 nodes holding {COUNT:,} messages:")
            print(f"  /hardReset to every node UP      {all_up - started:8.2f} s")
            print(f"  /hardReset to subscriber's event {event - started:8.2f} s")
            subscriber.unsubscribe()

            publish(client, root, "beta", COUNT)
            victim = spec.nodes[1]
            end = merged_end(spec)
            total = len(read_log(Path(spec.nodes[0].data) / "s" / "out", 1 << 44))
            shutil.rmtree(Path(victim.data) / "s" / "state", ignore_errors=True)
            (Path(victim.data) / "s" / "state").mkdir(exist_ok=True)
            started = time.monotonic()
            assert rest(victim.rest, "/softReset")["status"] == "Resetting"
            node_up = wait_until(lambda: rest(victim.rest, "/resetStatus")["status"] == "UP")
            rebuilt = wait_until(
                lambda: rest(victim.rest, "/latestOutPosition").get("position") == end
            )
            print(f"soft reset of node-1, its state deleted, {total:,} records merged:")
            print(f"  /softReset to UP                 {node_up - started:8.2f} s")
            print(f"  /softReset to merged log rebuilt {rebuilt - started:8.2f} s")
        finally:
            cluster.stop()


if __name__ == "__main__":
    # The subscriber's and publisher's retries while nodes restart are expected here.
    for name in ("rt", "rtcommon"):
        logging.getLogger(name).setLevel(logging.ERROR)
    main()
