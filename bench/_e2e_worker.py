"""Worker processes of ``e2e_bench.py``: one publisher or one subscriber each.

Run as ``python bench/_e2e_worker.py pub|sub ...``; each prints one JSON line of
results on stdout when done. Timestamps are wall-clock nanoseconds so that the
parent can line up processes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator

import rt

WARM_UP_NS = 3_000_000_000


def pacing(count: int, rate: float) -> Iterator[float]:
    """Before each of ``count`` sends at a steady ``rate`` a second (0: as fast as they
    go), how long to wait first (the benches of RT and of its peers pace alike)."""
    interval = 1.0 / rate if rate else 0.0
    next_at = time.perf_counter()
    for _ in range(count):
        next_at += interval
        yield max(0.0, next_at - time.perf_counter()) if interval else 0.0


def publish(
    cluster_file: str, topic: str, log_dir: str, count: int, rate: float, batch: int = 0
) -> dict:
    """``count`` messages at ``rate`` a second (0: as fast as they go), one ``publish``
    each, or ``publish_many`` of ``batch`` at a time as fast as they go."""
    cluster = rt.Cluster.from_file(cluster_file)
    payload = os.urandom(100)
    with rt.Publisher(cluster, topic, log_dir=log_dir, codec="raw") as publisher:
        started = time.time_ns()
        if batch:
            count = count // batch * batch
            for _ in range(count // batch):
                publisher.publish_many([payload] * batch)
        else:
            for delay in pacing(count, rate):
                if delay:
                    time.sleep(delay)
                publisher.publish(payload)  # its ts: now
        published = time.time_ns()
        publisher.flush()
    return {"started": started, "published": published, "count": count}


def subscribe(cluster_file: str, log_dir: str, count: int, latency: bool) -> dict:
    cluster = rt.Cluster.from_file(cluster_file)
    done = threading.Event()
    state = {"received": 0, "last": 0}
    latencies: list[int] = []

    def on_message(message, position) -> None:
        now = time.time_ns()
        state["received"] += 1
        if latency:
            latencies.append((now - message.ts, message.ts))
        if state["received"] >= count:
            state["last"] = now
            done.set()

    subscriber = rt.Subscriber(cluster, log_dir=log_dir, position=None, on_message=on_message)
    subscriber.start()
    print(json.dumps({"ready": True}), flush=True)
    finished = done.wait(600)
    subscriber.unsubscribe()
    result = {
        "received": state["received"],
        "last": state["last"],
        "finished": finished,
    }
    if latency and latencies:
        start = min(ts for _, ts in latencies)
        buckets: dict[int, int] = {}
        for lag, ts in latencies:
            second = int((ts - start) / 1e9)
            buckets[second] = max(buckets.get(second, 0), lag)
        result["worst_per_second_ms"] = [round(buckets[k] / 1e6, 1) for k in sorted(buckets)]
        # The first seconds are warm-up: connections, a new stream on every node, and the
        # backlog they leave, which a cluster near its CPU limit drains slowly.
        latencies = sorted(lag for lag, ts in latencies if ts - start >= WARM_UP_NS)
        pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
        result |= {"p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999), "max": latencies[-1]}
    return result


def main() -> None:
    role, args = sys.argv[1], sys.argv[2:]
    if role == "pub":
        cluster_file, topic, log_dir, count, rate, batch = args
        result = publish(cluster_file, topic, log_dir, int(count), float(rate), int(batch))
    else:
        cluster_file, log_dir, count, latency = args
        result = subscribe(cluster_file, log_dir, int(count), latency == "1")
    times = os.times()
    result["cpu"] = times.user + times.system
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
