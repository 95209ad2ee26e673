"""Worker processes of ``peers_bench.py``: one publisher or one subscriber of RT or of
NATS JetStream each, doing the same work the same way.

Run as ``python _peers_worker.py rt|nats pub|sub ...``; each prints one JSON line of
results on stdout (a subscriber prints ``{"ready": true}`` first). Timestamps are
wall-clock nanoseconds, so the parent can line processes up. Every message is 100 bytes
and carries its publish time: RT in the record's ``ts``, NATS in its first 8 bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _e2e_worker import pacing

SIZE = 100
STAMP = struct.Struct("<q")
#: Latency samples from the first seconds of a run are left out (connections warming up).
WARM_UP_NS = 2_000_000_000


class Received:
    """What a subscriber saw: counts, first and last arrival, latencies."""

    def __init__(self, count: int, latency: bool) -> None:
        self.count = count
        self.latency = latency
        self.received = 0
        self.first = self.last = 0
        self.lags: list[tuple[int, int]] = []
        self.done = threading.Event()

    def note(self, ts: int) -> None:
        now = time.time_ns()
        if not self.received:
            self.first = now
        self.received += 1
        if self.latency:
            self.lags.append((now - ts, ts))
        if self.received >= self.count:
            self.last = now
            self.done.set()

    def result(self) -> dict:
        result = {"received": self.received, "first": self.first, "last": self.last}
        if self.lags:
            start = min(ts for _, ts in self.lags)
            lags = sorted(lag for lag, ts in self.lags if ts - start >= WARM_UP_NS)
            pick = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]  # noqa: E731
            result |= {"p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999)}
        return result


# -- RT ----------------------------------------------------------------------------------


def rt_pub(cluster_file: str, log_dir: str, count: int, rate: float) -> dict:
    import rt

    payload = os.urandom(SIZE)
    with rt.Publisher(cluster_file, "bench", log_dir=log_dir, codec="raw") as publisher:
        started = time.time_ns()
        for delay in pacing(count, rate):
            if delay:
                time.sleep(delay)
            publisher.publish(payload)  # its ts: now
        publisher.flush()  # a quorum holds every message
        acked = time.time_ns()
    return {"started": started, "acked": acked}


def rt_sub(cluster_file: str, log_dir: str, start: str, count: int, latency: bool) -> dict:
    import rt

    seen = Received(count, latency)
    subscriber = rt.Subscriber(
        cluster_file,
        log_dir=log_dir,
        position=start,
        on_message=lambda message, position: seen.note(message.ts),
    )
    subscriber.start()
    print(json.dumps({"ready": True}), flush=True)
    seen.done.wait(600)
    subscriber.unsubscribe()
    return seen.result()


# -- NATS JetStream ----------------------------------------------------------------------


async def _nats_pub(servers: str, count: int, rate: float) -> dict:
    import nats

    client = await nats.connect(servers.split(","))
    js = client.jetstream()
    padding = os.urandom(SIZE - STAMP.size)
    started = time.time_ns()
    for delay in pacing(count, rate):
        if delay:
            await asyncio.sleep(delay)
        await js.publish_async("bench", STAMP.pack(time.time_ns()) + padding)
    await js.publish_async_completed()  # every publish acknowledged by the stream (R3)
    acked = time.time_ns()
    await client.close()
    return {"started": started, "acked": acked}


async def _nats_sub(servers: str, start: str, count: int, latency: bool) -> dict:
    import nats
    from nats.js.api import DeliverPolicy

    client = await nats.connect(servers.split(","))
    js = client.jetstream()
    seen = Received(count, latency)

    async def on_message(message) -> None:
        seen.note(STAMP.unpack_from(message.data)[0])

    policy = DeliverPolicy.ALL if start == "start" else DeliverPolicy.NEW
    await js.subscribe("bench", cb=on_message, ordered_consumer=True, deliver_policy=policy)
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, seen.done.wait, 600)
    await client.close()
    return seen.result()


def main() -> None:
    system, role, *args = sys.argv[1:]
    if (system, role) == ("rt", "pub"):
        cluster_file, log_dir, count, rate = args
        result = rt_pub(cluster_file, log_dir, int(count), float(rate))
    elif (system, role) == ("rt", "sub"):
        cluster_file, log_dir, start, count, latency = args
        result = rt_sub(cluster_file, log_dir, start, int(count), latency == "1")
    elif (system, role) == ("nats", "pub"):
        servers, count, rate = args
        result = asyncio.run(_nats_pub(servers, int(count), float(rate)))
    else:
        servers, start, count, latency = args
        result = asyncio.run(_nats_sub(servers, start, int(count), latency == "1"))
    times = os.times()
    result["cpu"] = times.user + times.system
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
