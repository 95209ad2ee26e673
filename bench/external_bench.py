"""Figures of issue 10 on a local 3-node cluster (``rt cluster up``): push throughput in
plain text (a publisher inside the cluster's network) against mutual TLS (an external
publisher enrolled through the info-service), and the Publish API through a
``rt-publisher-agent --listen`` sidecar: throughput, and publish-to-quorum-ack latency at
a steady rate.

- push: one ``rt.Publisher`` in this process publishes ``RT_BENCH_EXTERNAL_COUNT``
  100-byte raw messages as fast as it can; the figure is messages per second from the
  first publish until ``flush()`` returns (a quorum holds them all);
- sidecar throughput: a Python grpc.aio client streams the same count in batches of
  1,000 within the window; messages per second until the reply saying a quorum holds
  the last one;
- sidecar latency (first, on the idle cluster): batches of 10 every 2 ms (5,000 msg/s)
  for ``RT_BENCH_EXTERNAL_SECONDS``; for each message, the time from its batch's send to
  the first reply whose ``replicated`` covers it (p50, p99, max).

The runs follow one another on one cluster, so each later one shares the machine with
the nodes still merging the earlier ones' messages: the figures are lower bounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

import rt
from rtcommon import localhost
from rtproto.v1 import publisher_pb2, publisher_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
from e2e_bench import LocalCluster

BIN = Path(sys.executable).parent
COUNT = int(os.environ.get("RT_BENCH_EXTERNAL_COUNT", "200000"))
SECONDS = float(os.environ.get("RT_BENCH_EXTERNAL_SECONDS", "10"))
PAYLOAD = b"x" * 100


def push_rate(cluster: rt.Cluster, log_dir: Path, topic: str) -> float:
    with rt.Publisher(cluster, topic, log_dir, codec="raw") as publisher:
        started = time.perf_counter()
        for _ in range(COUNT):
            publisher.publish(PAYLOAD)
        publisher.flush(300)
        return COUNT / (time.perf_counter() - started)


def requests(topic: str, batches):
    yield publisher_pb2.PublishRequest(open=publisher_pb2.PublishOpen(topic=topic))
    yield from batches


async def sidecar_throughput(address: str) -> float:
    message = publisher_pb2.PublishMessage(payload=PAYLOAD)
    async with grpc.aio.insecure_channel(address) as channel:
        call = publisher_pb2_grpc.PublisherStub(channel).Publish()
        await call.write(publisher_pb2.PublishRequest(open=publisher_pb2.PublishOpen(topic="tp")))
        started = time.perf_counter()
        sent, window, last_position, replicated = 0, 0, 0, 0
        done = False
        while not done:
            reply = await call.read()
            window = reply.window
            if reply.positions:
                last_position = reply.positions[-1]
            replicated = reply.replicated
            while sent < COUNT and sent + 1000 <= window:
                batch = publisher_pb2.PublishBatch(messages=[message] * 1000)
                await call.write(publisher_pb2.PublishRequest(batch=batch))
                sent += 1000
            if sent >= COUNT and reply.durable >= COUNT and replicated >= last_position:
                done = True
        elapsed = time.perf_counter() - started
        await call.done_writing()
        return COUNT / elapsed


async def sidecar_latency(address: str) -> tuple[list[float], list[float]]:
    """Latencies of the messages sent in the first second (a new topic's publisher
    connecting to the nodes), and of the rest."""
    message = publisher_pb2.PublishMessage(payload=PAYLOAD)
    batch = publisher_pb2.PublishRequest(batch=publisher_pb2.PublishBatch(messages=[message] * 10))
    latencies: list[float] = []
    sent_at: list[float] = []  # per message, when its batch was sent
    started = time.perf_counter()
    positions: list[int] = []
    async with grpc.aio.insecure_channel(address) as channel:
        call = publisher_pb2_grpc.PublisherStub(channel).Publish()
        await call.write(publisher_pb2.PublishRequest(open=publisher_pb2.PublishOpen(topic="tl")))

        async def send() -> None:
            interval = 0.002
            next_at = time.perf_counter()
            end = next_at + SECONDS
            while next_at < end:
                now = time.perf_counter()
                if now < next_at:
                    await asyncio.sleep(next_at - now)
                sent_at.extend([time.perf_counter()] * 10)
                await call.write(batch)
                next_at += interval
            await call.done_writing()

        sender = asyncio.create_task(send())
        acked = 0
        async for reply in call:
            now = time.perf_counter()
            positions.extend(reply.positions)
            while acked < len(positions) and positions[acked] <= reply.replicated:
                latencies.append(now - sent_at[acked])
                acked += 1
        await sender
    first = [lat for lat, sent in zip(latencies, sent_at, strict=False) if sent - started < 1]
    return first, latencies[len(first) :]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rt-bench-external-") as folder:
        root = Path(folder)
        cluster = LocalCluster(root / "data")
        agent = None
        try:
            # Latency first, on an idle cluster: the throughput runs leave the nodes
            # merging a backlog for a while, and that is another figure.
            address = f"127.0.0.1:{localhost.find_free_base_port()}"
            command = [BIN / "rt-publisher-agent", "--cluster", cluster.file]
            agent = subprocess.Popen(
                [*command, "--listen", address, "--log-root", root / "agent"],
                stderr=subprocess.DEVNULL,
            )
            while localhost.port_free(int(address.rsplit(":", 1)[1])):
                time.sleep(0.05)
            first_second, latencies = asyncio.run(sidecar_latency(address))
            through_sidecar = asyncio.run(sidecar_throughput(address))
            plain = push_rate(rt.Cluster.from_file(cluster.file), root / "plain", "plain")
            spec = rt.Cluster.from_file(cluster.file).spec
            added = subprocess.run(
                [BIN / "rt", "client", "add", "bench", "--topic", "tls", "--cluster", cluster.file],
                capture_output=True,
                text=True,
                check=True,
            )
            secret = json.loads(added.stdout)["client_secret"]
            external = rt.Cluster.from_info_service(
                spec.info_service, client_id="bench", client_secret=secret
            )
            try:
                tls = push_rate(external, root / "tls", "tls")
            finally:
                external.close()
        finally:
            if agent is not None:
                agent.send_signal(signal.SIGTERM)
                agent.wait(60)
            cluster.stop()
    print(f"external_bench: {COUNT:,} messages of 100 bytes, 3 nodes")
    print(f"  push, plain text (inside the cluster's network): {plain:,.0f} msg/s to quorum")
    print(
        f"  push, mutual TLS (external, info-service enrolment): {tls:,.0f} msg/s to quorum"
        f" ({tls / plain:.2f} of plain text)"
    )
    print(f"  Publish API through the sidecar: {through_sidecar:,.0f} msg/s to quorum ack")
    print(
        f"  Publish API at 5,000 msg/s for {SECONDS:g} s: publish to quorum ack"
        f" p50 {percentile(latencies, 0.5) * 1000:.1f} ms,"
        f" p99 {percentile(latencies, 0.99) * 1000:.1f} ms,"
        f" max {max(latencies) * 1000:.1f} ms ({len(latencies):,} messages after the first"
        f" second; in the first, while the topic's publisher connects: max"
        f" {max(first_second) * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
