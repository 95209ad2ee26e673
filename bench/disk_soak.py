"""Disk use over a soak: a publisher sends continuously to a local 3-node cluster with
small rolls while a subscriber follows; every ``RT_BENCH_SOAK_EVERY`` seconds it prints
the bytes held by the publisher's log folder, each node's input copies and merged log,
and the subscriber's copy, for ``RT_BENCH_SOAK_SECONDS`` (default 120).

What is archived stays bounded: the publisher's folder and the input copies hold only
the files not yet done with on every node. The merged log and the subscriber's copy
grow until the archiver's retention policy lands (issue 9, part 2): the table shows it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from e2e_bench import LocalCluster

import rt
from rtcommon.cluster import ClusterSpec

SECONDS = float(os.environ.get("RT_BENCH_SOAK_SECONDS", "120"))
EVERY = float(os.environ.get("RT_BENCH_SOAK_EVERY", "10"))
ROLL = 1 << 20
RATE = 5_000  # messages per second, 200 bytes each: about 1 MB/s


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # archived meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


def mib(count: int) -> str:
    return f"{count / (1 << 20):8.1f}"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rt-soak-") as folder:
        root = Path(folder)
        # The Raft log is cut often, so archival follows closely.
        cluster = LocalCluster(root / "data", ROLL, RT_RAFT_KEEP_ENTRIES="200")
        stop = threading.Event()
        try:
            spec = ClusterSpec.from_file(cluster.file)
            client = rt.Cluster.from_file(cluster.file)
            sent = [0]

            def publish() -> None:
                payload = b"x" * 200
                with rt.Publisher(client, "soak", log_dir=root / "pub", roll_size=ROLL) as pub:
                    started = time.monotonic()
                    while not stop.is_set():
                        due = int((time.monotonic() - started) * RATE)
                        for _ in range(due - sent[0]):
                            pub.publish(payload)
                        sent[0] = max(sent[0], due)
                        time.sleep(0.01)

            received = [0]
            subscriber = rt.Subscriber(
                client,
                log_dir=root / "sub",
                on_message=lambda m, p: received.__setitem__(0, received[0] + 1),
            ).start()
            publisher = threading.Thread(target=publish)
            publisher.start()
            nodes = [Path(node.data) / "s" for node in spec.nodes]
            header = ["seconds", "sent", "publisher"]
            header += [f"n{i}.in" for i in range(len(nodes))]
            header += [f"n{i}.out" for i in range(len(nodes))]
            header += ["subscriber"]
            print(f"disk use in MiB, {RATE:,} msg/s of 200 bytes, roll {ROLL >> 20} MiB")
            print(" ".join(f"{h:>10}" for h in header))
            started = time.monotonic()
            while time.monotonic() - started < SECONDS:
                time.sleep(EVERY)
                row = [
                    f"{time.monotonic() - started:10.0f}",
                    f"{sent[0]:10d}",
                    f"{mib(folder_bytes(root / 'pub')):>10}",
                ]
                row += [f"{mib(folder_bytes(n / 'in')):>10}" for n in nodes]
                row += [f"{mib(folder_bytes(n / 'out')):>10}" for n in nodes]
                row += [f"{mib(folder_bytes(root / 'sub')):>10}"]
                print(" ".join(row), flush=True)
            stop.set()
            publisher.join(120)
            subscriber.unsubscribe()
            print(f"delivered {received[0]:,} of {sent[0]:,}")
        finally:
            stop.set()
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
