"""RT and NATS JetStream side by side in one run (``make bench-peers``).

Each system gets a fresh 3-node cluster on this machine (RT: ``rt cluster up --nodes 3``;
NATS: three ``nats-server`` processes, JetStream, one stream with 3 replicas on the file
store) and the same three workloads, with Python clients in worker processes
(``_peers_worker.py``; nats-py's ``publish_async`` and an ordered push consumer):

- acked publish: one publisher sends ``RT_BENCH_PEERS_COUNT`` 100-byte messages as fast
  as it can; msg/s until a quorum acknowledged the last (RT: ``flush()``);
- replay: a new subscriber reads them all from the start; msg/s from its first message
  to its last;
- latency: a subscriber at the end, one publisher at a steady ``RT_BENCH_PEERS_RATE``
  (10,000) msg/s for ``RT_BENCH_PEERS_SECONDS``; publish -> callback p50, p99, p99.9.

It prints one table with both systems, the ratio RT/NATS (for latency NATS/RT, so above
1 means RT leads on every row) and the servers' CPU per million messages. NATS's file
store syncs to disk every two minutes by default while RT fsyncs every commit;
``RT_BENCH_NATS_SYNC=always`` makes NATS sync every write too. The NATS packages come
from ``bench/tools.lock``, installed by ``make bench-peers`` into ``.bench-tools/``: they
are never RT's dependencies.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e_bench import LocalCluster

from rtcommon import localhost

WORKER = Path(__file__).with_name("_peers_worker.py")
COUNT = int(os.environ.get("RT_BENCH_PEERS_COUNT", "200000"))
RATE = int(os.environ.get("RT_BENCH_PEERS_RATE", "10000"))
SECONDS = float(os.environ.get("RT_BENCH_PEERS_SECONDS", "12"))
NATS_SYNC = os.environ.get("RT_BENCH_NATS_SYNC", "")


def worker(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, WORKER, *map(str, args)], stdout=subprocess.PIPE, text=True
    )


def ready(proc: subprocess.Popen) -> subprocess.Popen:
    line = proc.stdout.readline()
    if "ready" not in line:
        raise RuntimeError(f"a subscriber did not start: {line!r}")
    return proc


def result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=900)
    if proc.returncode:
        raise RuntimeError(f"a worker failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


class NatsCluster:
    """Three nats-server processes with JetStream, clustered over loopback, and a stream
    ``BENCH`` (subject ``bench``, 3 replicas, file store)."""

    def __init__(self, root: Path) -> None:
        base = localhost.find_free_base_port()
        clients = [base + i for i in range(3)]
        routes = [base + 10 + i for i in range(3)]
        self.servers = ",".join(f"nats://127.0.0.1:{port}" for port in clients)
        self.procs = []
        for i in range(3):
            folder = root / f"n{i}"
            folder.mkdir(parents=True)
            others = ", ".join(f'"nats://127.0.0.1:{p}"' for j, p in enumerate(routes) if j != i)
            sync = f"sync_interval: {NATS_SYNC}" if NATS_SYNC else ""
            config = folder / "server.conf"
            config.write_text(
                f'server_name: n{i}\nlisten: "127.0.0.1:{clients[i]}"\n'
                f'jetstream {{ store_dir: "{folder}", {sync} }}\n'
                f'cluster {{ name: bench, listen: "127.0.0.1:{routes[i]}", routes: [{others}] }}\n'
            )
            self.procs.append(
                subprocess.Popen(
                    ["nats-server", "-c", config],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        asyncio.run(self._add_stream())

    async def _add_stream(self) -> None:
        import nats
        from nats.js.api import StorageType, StreamConfig

        deadline = time.monotonic() + 30
        while True:
            try:
                client = await nats.connect(self.servers.split(","), connect_timeout=1)
                try:
                    await client.jetstream().add_stream(
                        StreamConfig(
                            name="BENCH",
                            subjects=["bench"],
                            num_replicas=3,
                            storage=StorageType.FILE,
                        )
                    )
                    return
                finally:
                    await client.close()
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(30)


def server_cpu(pids: list[int]) -> float:
    return sum(localhost.cpu_seconds(pid) for pid in pids)


def run(system: str, root: Path) -> dict:
    """The three workloads against a fresh cluster of ``system``."""
    if system == "rt":
        cluster = LocalCluster(root / "cluster")
        pids = localhost.descendants(cluster.proc.pid)
        target = cluster.file

        def pub(count: int, rate: float) -> subprocess.Popen:
            return worker("rt", "pub", target, root / "pub", count, rate)

        def sub(name: str, start: str, count: int, latency: int) -> subprocess.Popen:
            return ready(worker("rt", "sub", target, root / name, start, count, latency))

    else:
        cluster = NatsCluster(root / "cluster")
        pids = cluster.pids
        target = cluster.servers

        def pub(count: int, rate: float) -> subprocess.Popen:
            return worker("nats", "pub", target, count, rate)

        def sub(name: str, start: str, count: int, latency: int) -> subprocess.Popen:
            return ready(worker("nats", "sub", target, start, count, latency))

    try:
        figures: dict[str, float] = {}
        acked = result(pub(COUNT, 0))
        figures["acked publish msg/s"] = COUNT / ((acked["acked"] - acked["started"]) / 1e9)
        replay = result(sub("replay", "start", COUNT, 0))
        figures["replay msg/s"] = COUNT / ((replay["last"] - replay["first"]) / 1e9)
        count = int(RATE * SECONDS)
        subscriber = sub("latency", "end", count, 1)
        before = server_cpu(pids)
        result(pub(count, RATE))
        latency = result(subscriber)
        cpu = server_cpu(pids) - before
        for q in ("p50", "p99", "p999"):
            figures[f"latency {q} ms"] = latency[q] / 1e6
        figures["server CPU s per million msgs"] = cpu / count * 1e6
        return figures
    finally:
        cluster.stop()


def main() -> None:
    print(
        f"peers: 3 nodes each on this machine; {COUNT:,} messages of 100 bytes acked and"
        f" replayed; latency at a steady {RATE:,} msg/s for {SECONDS:.0f} s (after 2 s of"
        f" warm-up); NATS file store sync: {NATS_SYNC or 'default (every 2 min)'}"
    )
    with tempfile.TemporaryDirectory(dir=os.environ.get("RT_BENCH_DIR")) as tmp:
        figures = {system: run(system, Path(tmp) / system) for system in ("rt", "nats")}
    print(f"{'':32} {'RT':>12} {'NATS JS':>12} {'lead':>8}")
    for row in figures["rt"]:
        rt, nats = figures["rt"][row], figures["nats"][row]
        higher_is_better = row.endswith("msg/s")
        lead = rt / nats if higher_is_better else nats / rt
        number = "{:12,.0f}" if higher_is_better else "{:12.2f}"
        mark = "RT" if lead >= 1 else "NATS"
        print(f"{row:32} {number.format(rt)} {number.format(nats)} {lead:6.2f}x {mark}")


if __name__ == "__main__":
    main()
