"""One message of hundreds of mebibytes through a local 3-node cluster (issue 14: message
size near the roll size, chunked).

A publisher sends ``RT_BENCH_LARGE_MIB`` (256) MiB of random bytes as one message, between
two small ones, to a fresh cluster whose files roll at 1 GiB; a subscriber then replays
the merged log. The bench prints how long publishing, replicating to a quorum and
delivering took, and how much each sequencer's resident memory rose over its idle size
(sampled every 20 ms, and the kernel's high-water mark): the message travels in pieces
of about a mebibyte, so what a node holds for it is the merge's copy, not the
connections'. Between processes no gRPC message exceeds 16 MiB.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from e2e_bench import LocalCluster, describe
from rejoin_bench import status

import rt
from rtcommon import localhost

SIZE = int(os.environ.get("RT_BENCH_LARGE_MIB", "256")) << 20
MIB = 1 << 20


def resident(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


class MemoryWatch(threading.Thread):
    """The largest resident size each process reaches while it runs."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.peak = {pid: resident(pid) for pid in pids}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.02):
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], resident(pid))


def main() -> None:
    os.environ["RT_MAX_MESSAGE_SIZE"] = str(SIZE + MIB)  # this process's publisher too
    with tempfile.TemporaryDirectory(dir=os.environ.get("RT_BENCH_DIR")) as tmp:
        root = Path(tmp)
        cluster = LocalCluster(root / "cluster", roll_size=1 << 30)
        try:
            sequencers = [
                pid
                for pid in localhost.descendants(cluster.proc.pid)
                if "rt-sequencer" in describe(pid)
            ]
            idle = {pid: resident(pid) for pid in sequencers}
            watch = MemoryWatch(sequencers)
            watch.start()
            big = os.urandom(SIZE)
            client = rt.Cluster.from_file(cluster.file)
            started = time.monotonic()
            with rt.Publisher(client, "big", log_dir=root / "pub", codec="raw") as publisher:
                publisher.publish(b"before")
                publisher.publish(big)
                publisher.publish(b"after")
                written = time.monotonic()
                publisher.flush(600)
                replicated = time.monotonic()
                stream, end = publisher.stream, publisher.position
            for node in client.spec.nodes:  # the merge's copy on every node
                while not any(
                    s.stream == stream and s.merged >= end
                    for s in getattr(status(node), "streams", ())
                ):
                    time.sleep(0.05)
            merged = time.monotonic()
            delivered: list[bytes] = []
            done = threading.Event()

            def on_message(message, position) -> None:
                delivered.append(message.data)
                if len(delivered) == 3:
                    done.set()

            subscriber = rt.Subscriber(client, log_dir=root / "sub", on_message=on_message)
            subscriber.start()
            try:
                if not done.wait(600):
                    raise RuntimeError(f"delivered {len(delivered)} of 3 messages")
            finally:
                subscriber.unsubscribe()
            finished = time.monotonic()
            watch.stopping.set()
            watch.join()
            if delivered != [b"before", big, b"after"]:
                raise RuntimeError("the messages delivered differ from those published")
            mib = SIZE / MIB
            print(f"one message of {mib:.0f} MiB, 3 nodes, 1 GiB rolls:")
            print(f"  written to the publisher's log     {written - started:6.2f} s")
            print(
                f"  held by a quorum (flush)           {replicated - started:6.2f} s"
                f" ({mib / (replicated - started):5.0f} MiB/s)"
            )
            print(f"  merged on every node               {merged - started:6.2f} s")
            print(
                f"  delivered by a new subscriber      {finished - started:6.2f} s"
                f" ({finished - merged:.2f} s after it was merged everywhere)"
            )
            for pid in sequencers:
                rise = (watch.peak[pid] - idle[pid]) / MIB
                hwm = resident(pid, "VmHWM") / MIB
                print(
                    f"  {describe(pid):<22} resident {idle[pid] / MIB:5.0f} MiB idle, at most"
                    f" +{rise:4.0f} MiB ({rise / mib:4.2f}x the message; high-water {hwm:.0f} MiB)"
                )
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
