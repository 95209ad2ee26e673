"""End-to-end figures on a local 3-node cluster: throughput, latency, CPU per process.

A real cluster (``rt cluster up --nodes 3``: supervisors, sequencers, archivers),
two publisher processes and one subscriber process, all on this machine:

- throughput: both publishers send ``RT_BENCH_E2E_COUNT`` 100-byte messages
  (raw codec) as fast as they can; the figure is messages delivered to the
  subscriber's callback per second, from the first publish to the last delivery; then
  again with ``publish_many`` of ``RT_BENCH_E2E_BATCH`` (1,000) messages a call;
- latency: on a fresh cluster, one publisher at a steady ``RT_BENCH_E2E_RATE``
  (10,000) msg/s for ``RT_BENCH_E2E_SECONDS``; each message carries its publish time, and the
  subscriber's callback records now - ts (p50, p99, p99.9, max);
- CPU: user + system seconds of every process of the run, per process, over
  each phase (from /proc).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from rtcommon import localhost

BIN = Path(sys.executable).parent
WORKER = Path(__file__).with_name("_e2e_worker.py")
COUNT = int(os.environ.get("RT_BENCH_E2E_COUNT", "200000"))
SECONDS = float(os.environ.get("RT_BENCH_E2E_SECONDS", "13"))
RATE = int(os.environ.get("RT_BENCH_E2E_RATE", "10000"))
BATCH = int(os.environ.get("RT_BENCH_E2E_BATCH", "1000"))


def describe(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return str(pid)
    words = [Path(a.decode()).name for a in argv if a]
    node = next((words[i + 1] for i, w in enumerate(words) if w == "--node"), None)
    name = words[1] if words and words[0].startswith("python") and len(words) > 1 else words[0]
    if name == "_e2e_worker.py":
        return f"{words[2]}-worker"
    return f"{name} node-{node}" if node is not None else name


class LocalCluster:
    def __init__(self, root: Path, roll_size: int = 64 << 20, **environ: str) -> None:
        self.root = root
        env = dict(os.environ, RT_ROLL_SIZE=str(roll_size), **environ)
        self.proc = subprocess.Popen(
            [
                BIN / "rt",
                "cluster",
                "up",
                "--nodes",
                "3",
                "--data",
                root,
                "--base-port",
                str(localhost.find_free_base_port()),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        for line in self.proc.stdout:
            if "ready" in line:
                break
        else:
            raise RuntimeError("the cluster did not start")
        self.file = root / "cluster.json"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def worker(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKER, *map(str, args)], stdout=subprocess.PIPE, text=True
    )


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=900)
    return json.loads(out.strip().splitlines()[-1])


def cpu_report(
    pids: list[int], before: dict[int, float], seconds: float, messages: int
) -> list[str]:
    """Each process's CPU seconds since ``before``, as a share of ``seconds`` and per
    million of the ``messages`` that went through."""
    lines = []
    for pid in pids:
        used = localhost.cpu_seconds(pid) - before.get(pid, 0.0)
        if used > 0.005:
            lines.append(
                f"  {describe(pid):<28} {used:6.2f} s CPU ({100 * used / seconds:5.1f}%;"
                f" {used / messages * 1e6:6.1f} s per million messages)"
            )
    return lines


def throughput_phase(root: Path, batch: int = 0) -> None:
    """``batch``: the publishers call publish_many with that many messages at a time."""
    cluster = LocalCluster(root)
    try:
        subscriber = worker("sub", cluster.file, root / "sub", 2 * COUNT, 0)
        subscriber.stdout.readline()  # ready
        pids = [cluster.proc.pid, *localhost.descendants(cluster.proc.pid)]
        publishers = [
            worker("pub", cluster.file, "bench", root / f"pub{i}", COUNT, 0, batch)
            for i in range(2)
        ]
        before = {pid: localhost.cpu_seconds(pid) for pid in pids}
        pub_results = [result(p) for p in publishers]
        sub_result = result(subscriber)
        if not sub_result["finished"]:
            sys.exit(f"e2e: the subscriber got {sub_result['received']} of {2 * COUNT} messages")
        start = min(r["started"] for r in pub_results)
        elapsed = (sub_result["last"] - start) / 1e9
        cluster_lines = cpu_report(pids, before, elapsed, 2 * COUNT)
        calls = f"publish_many of {batch:,}" if batch else "publish"
        print(f"e2e: 3 nodes, 2 publishers x {COUNT} messages of 100 bytes ({calls}), 1 subscriber")
        print(
            f"e2e: throughput published -> merged -> delivered: {2 * COUNT / elapsed:,.0f} msg/s"
            f" ({sub_result['received']} delivered in {elapsed:.2f} s)"
        )
        for r in pub_results:
            rate = r["count"] / ((r["published"] - r["started"]) / 1e9)
            print(f"e2e: a publisher's publish rate into its log: {rate:,.0f} msg/s")
        print(f"e2e: CPU seconds per process over the {elapsed:.2f} s run:")
        for line in cluster_lines:
            print(line)
        for i, r in enumerate(pub_results):
            print(f"  {'publisher-' + str(i):<28} {r['cpu']:6.2f} s CPU")
        print(f"  {'subscriber':<28} {sub_result['cpu']:6.2f} s CPU (whole life)")
    finally:
        cluster.stop()


def latency_phase(root: Path) -> None:
    cluster = LocalCluster(root)
    try:
        count = int(RATE * SECONDS)
        subscriber = worker("sub", cluster.file, root / "sub", count, 1)
        subscriber.stdout.readline()
        pids = [cluster.proc.pid, *localhost.descendants(cluster.proc.pid)]
        before = {pid: localhost.cpu_seconds(pid) for pid in pids}
        publisher = worker("pub", cluster.file, "latency", root / "pub", count, RATE, 0)
        result(publisher)
        sub_result = result(subscriber)
        print(
            f"e2e: latency publish -> callback at a steady {RATE:,} msg/s for {SECONDS:.0f} s:"
            f" p50 {sub_result['p50'] / 1e6:.2f} ms, p99 {sub_result['p99'] / 1e6:.2f} ms,"
            f" p99.9 {sub_result['p999'] / 1e6:.2f} ms, max {sub_result['max'] / 1e6:.2f} ms"
            " (after 3 s of warm-up)"
        )
        print(f"e2e: worst latency in each second (ms): {sub_result['worst_per_second_ms']}")
        print(f"e2e: CPU per process over the {SECONDS:.0f} s latency run:")
        for line in cpu_report(pids, before, SECONDS, count):
            print(line)
    finally:
        cluster.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("RT_BENCH_DIR")) as tmp:
        throughput_phase(Path(tmp) / "throughput")
        throughput_phase(Path(tmp) / "throughput-many", batch=BATCH)
        latency_phase(Path(tmp) / "latency")


if __name__ == "__main__":
    main()
