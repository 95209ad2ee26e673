"""Where each sequencer's CPU goes at a steady rate (``make bench-profile``).

A local 3-node cluster, one subscriber and one publisher at ``RT_BENCH_PROFILE_RATE``
(10,000) msg/s (the workers of ``e2e_bench.py``); after 3 s of warm-up, py-spy samples
every sequencer for ``RT_BENCH_PROFILE_SECONDS`` (6) while it holds the GIL, and this
prints, per sequencer, the share of its time holding the GIL, then the tasks of its event
loop (the coroutine each sample runs under) and the functions the samples were in, by
share of its samples. ``RT_BENCH_PROFILE_KEEP=DIR`` keeps py-spy's raw stacks there.
py-spy comes from ``bench/tools.lock`` (``make bench-profile`` installs it); sampling
another process needs root or ptrace rights.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from e2e_bench import LocalCluster, describe, result, worker

from rtcommon import localhost

RATE = int(os.environ.get("RT_BENCH_PROFILE_RATE", "10000"))
SECONDS = float(os.environ.get("RT_BENCH_PROFILE_SECONDS", "6"))
SAMPLES_PER_SECOND = 200
WARM_UP = 3.0
SHOWN = 12


def _name(frame: str) -> str:
    """``function (file:line)`` without the line."""
    return frame.split(" (")[0]


def summarize(raw: Path) -> list[str]:
    tasks: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        frames = stack.split(";")
        total += samples
        functions[_name(frames[-1])] += samples
        runs = [i for i, frame in enumerate(frames) if frame.startswith("Handle._run")]
        if runs and runs[-1] + 1 < len(frames):
            tasks[_name(frames[runs[-1] + 1])] += samples
        else:
            tasks["(outside the event loop's callbacks)"] += samples
    if not total:
        return ["  no samples"]
    held = total / (SAMPLES_PER_SECOND * SECONDS)
    lines = [f"  holds the GIL {100 * held:.0f}% of the time; by task:"]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in tasks.most_common(SHOWN)]
    lines.append("  by function:")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in functions.most_common(SHOWN)]
    return lines


def sample(pid: int, output: Path) -> subprocess.Popen:
    """py-spy recording ``pid``'s stacks while it holds the GIL, into ``output``."""
    options = {
        "--format": "raw",
        "--rate": str(SAMPLES_PER_SECOND),
        "--duration": str(int(SECONDS)),
        "--output": str(output),
        "--pid": str(pid),
    }
    command = ["py-spy", "record", "--gil", "--nonblocking"]
    command += [word for option in options.items() for word in option]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    keep = os.environ.get("RT_BENCH_PROFILE_KEEP")
    with tempfile.TemporaryDirectory(dir=os.environ.get("RT_BENCH_DIR")) as tmp:
        root = Path(tmp)
        out = Path(keep) if keep else root / "profiles"
        out.mkdir(parents=True, exist_ok=True)
        cluster = LocalCluster(root / "cluster")
        try:
            count = int(RATE * (WARM_UP + SECONDS + 2))
            subscriber = worker("sub", cluster.file, root / "sub", count, 1)
            subscriber.stdout.readline()  # ready
            publisher = worker("pub", cluster.file, "profile", root / "pub", count, RATE, 0)
            time.sleep(WARM_UP)
            sequencers = [
                pid
                for pid in localhost.descendants(cluster.proc.pid)
                if describe(pid).startswith("rt-sequencer")
            ]
            samplers = {pid: sample(pid, out / f"{pid}.txt") for pid in sequencers}
            names = {pid: describe(pid) for pid in sequencers}
            for sampler in samplers.values():
                sampler.wait()
            result(publisher)
            latency = result(subscriber)
        finally:
            cluster.stop()
        print(
            f"profile: 3 nodes, one publisher at a steady {RATE:,} msg/s; each sequencer"
            f" sampled for {SECONDS:.0f} s while it held the GIL (p50 latency of the run"
            f" {latency['p50'] / 1e6:.1f} ms)"
        )
        for pid, name in sorted(names.items(), key=lambda item: item[1]):
            print(f"{name}:")
            raw = out / f"{pid}.txt"
            print("\n".join(summarize(raw) if raw.exists() else ["  py-spy took no samples"]))


if __name__ == "__main__":
    main()
