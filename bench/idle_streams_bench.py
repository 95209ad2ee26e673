"""What many idle streams cost a node (issue 14 #7), on a local 3-node cluster.

``RT_BENCH_IDLE_STREAMS`` (900) streams each get one record pushed to every node, and
then nothing: the bench prints how long opening them took, then, once they have been idle
longer than an input copy waits before letting go of its files, each sequencer's CPU
share over ``RT_BENCH_IDLE_SECONDS`` (10) of idleness and its open file descriptors, and
the publish -> callback latency of one more publisher at a steady 100 msg/s beside them.
(Before issue 14's work, 2,633 streams held 13,276 descriptors open on one node, took 77%
of a core while idle and delayed a new message 16.7 s.)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
from e2e_bench import LocalCluster, describe, result, worker

from rt_sequencer._inputs import InputStore
from rt_sequencer._node import IDLE_SWEEP_SECONDS
from rtcommon import localhost
from rtcommon.cluster import ClusterSpec
from rtcommon.log import Codec, encode_message
from rtproto.v1 import common_pb2, push_pb2, push_pb2_grpc

STREAMS = int(os.environ.get("RT_BENCH_IDLE_STREAMS", "900"))
IDLE_SECONDS = float(os.environ.get("RT_BENCH_IDLE_SECONDS", "10"))
AT_ONCE = 50  # pushes in flight


RECORD = encode_message(b"x" * 100, origin="idle", ts=1, id=1, codec=Codec.RAW)


async def push_one(channel: grpc.aio.Channel, stream: str, record: bytes = RECORD) -> None:
    """``stream``'s one record (topic ``idle``), until the node holds it (the same bytes on
    every node: a node may fetch them from a peer first)."""
    requests = [
        push_pb2.PushRequest(open=push_pb2.PushOpen(stream=stream, topic="idle")),
        push_pb2.PushRequest(chunk=common_pb2.LogChunk(position=0, data=record)),
    ]
    call = push_pb2_grpc.PushStub(channel).Push()
    for request in requests:
        await call.write(request)
    while True:
        reply = await call.read()
        if reply is grpc.aio.EOF:
            raise RuntimeError(f"the node ended the push of {stream} early")
        if reply.held >= len(record):
            break
    await call.done_writing()
    call.cancel()


async def open_streams(spec: ClusterSpec) -> None:
    channels = [grpc.aio.insecure_channel(node.push) for node in spec.nodes]
    try:
        names = [f"idle-{n:05d}.idle" for n in range(STREAMS)]
        for start in range(0, STREAMS, AT_ONCE):
            await asyncio.gather(
                *(push_one(ch, name) for name in names[start : start + AT_ONCE] for ch in channels)
            )
    finally:
        for channel in channels:
            await channel.close()


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("RT_BENCH_DIR")) as tmp:
        root = Path(tmp) / "idle"
        cluster = LocalCluster(root)
        try:
            spec = ClusterSpec.from_file(cluster.file)
            started = time.perf_counter()
            asyncio.run(open_streams(spec))
            print(
                f"idle-streams: {STREAMS} streams opened on 3 nodes, one record each,"
                f" in {time.perf_counter() - started:.1f} s"
            )
            time.sleep(InputStore.IDLE_SECONDS + IDLE_SWEEP_SECONDS)  # every copy let go
            sequencers = [
                pid
                for pid in localhost.descendants(cluster.proc.pid)
                if describe(pid).startswith("rt-sequencer")
            ]
            before = {pid: localhost.cpu_seconds(pid) for pid in sequencers}
            time.sleep(IDLE_SECONDS)
            for pid in sequencers:
                used = localhost.cpu_seconds(pid) - before[pid]
                descriptors = len(os.listdir(f"/proc/{pid}/fd"))
                print(
                    f"idle-streams: {describe(pid)}: {100 * used / IDLE_SECONDS:.1f}% of a core"
                    f" while idle, {descriptors} open file descriptors"
                )
            count = 1000
            subscriber = worker("sub", cluster.file, root / "sub", count, 1)
            subscriber.stdout.readline()
            result(worker("pub", cluster.file, "latency", root / "pub", count, 100, 0))
            seen = result(subscriber)
            print(
                f"idle-streams: a new publisher at 100 msg/s beside them: publish -> callback"
                f" p50 {seen['p50'] / 1e6:.1f} ms, max {seen['max'] / 1e6:.1f} ms"
                " (after 3 s of warm-up)"
            )
        finally:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
