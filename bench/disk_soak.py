"""Disk use over a soak: a publisher sends continuously to a local 3-node cluster with
small rolls and a small retention policy while a subscriber follows; every
``RT_BENCH_SOAK_EVERY`` seconds it prints the bytes held by the publisher's log folder,
each node's input copies and merged log, and the subscriber's copy, for
``RT_BENCH_SOAK_SECONDS`` (default 120).

Everything stays bounded: the publisher's folder and the input copies hold only the
files not yet done with on every node (archival); the merged logs hold about
``maxLogSize`` (``RT_MAX_LOG_SIZE``, 16Mi here) plus the files the next Raft snapshot
lets go, and the subscriber's copy follows the cluster's truncation.

The table is also drawn as ``bench/out/disk_soak.svg`` (and ``disk_soak.png``
when a headless Chromium is installed: ``make browser``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from e2e_bench import LocalCluster

import rt
from rtcommon.cluster import ClusterSpec
from rtcommon.log import folder_bytes

SECONDS = float(os.environ.get("RT_BENCH_SOAK_SECONDS", "120"))
EVERY = float(os.environ.get("RT_BENCH_SOAK_EVERY", "10"))
ROLL = 1 << 20
RATE = 5_000  # messages per second, 200 bytes each: about 1 MB/s
MAX_LOG_SIZE = "16Mi"
PLOT = Path(__file__).parent / "out" / "disk_soak.svg"


COLOURS = ["#444", "#1b9e77", "#66a61e", "#a6d854", "#d95f02", "#e7298a", "#7570b3", "#e6ab02"]


def draw(names: list[str], rows: list[list[float]]) -> None:
    """Plot each folder's MiB over time as an SVG line chart (PNG too, if Chromium runs)."""
    if not rows:
        return
    width, height, pad = 720, 360, 50
    t_max = max(row[0] for row in rows) or 1
    y_max = max(max(row[1:]) for row in rows) * 1.1 or 1

    def point(t: float, y: float) -> str:
        x = pad + t / t_max * (width - 2 * pad)
        return f"{x:.1f},{height - pad - y / y_max * (height - 2 * pad):.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 110}" height="{height}"'
        ' font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fff"/>',
        f'<text x="{pad}" y="20" font-size="13">RT disk use over a soak (MiB), maxLogSize'
        f" {MAX_LOG_SIZE}, {RATE:,} msg/s</text>",
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"'
        ' stroke="#000"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#000"/>',
        f'<text x="{width - pad}" y="{height - pad + 30}" text-anchor="end">{t_max:.0f} s</text>',
        f'<text x="{pad - 5}" y="{pad}" text-anchor="end">{y_max:.0f}</text>',
        f'<text x="{pad - 5}" y="{height - pad}" text-anchor="end">0</text>',
    ]
    for index, name in enumerate(names):
        colour = COLOURS[index % len(COLOURS)]
        line = " ".join(point(row[0], row[1 + index]) for row in rows)
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(
            f'<text x="{width - pad + 5}" y="{pad + 14 * index}" fill="{colour}">{name}</text>'
        )
    parts.append("</svg>")
    PLOT.parent.mkdir(exist_ok=True)
    PLOT.write_text("\n".join(parts) + "\n")
    print(f"plot: {PLOT}")
    chromium = shutil.which("chromium")
    if chromium:
        png = PLOT.with_suffix(".png")
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                f"--screenshot={png}",
                f"--window-size={width + 120},{height}",
                PLOT.as_uri(),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if png.exists():
            print(f"plot: {png}")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="rt-soak-") as folder:
        root = Path(folder)
        # The Raft log is cut often, so archival follows closely.
        cluster = LocalCluster(
            root / "data",
            ROLL,
            RT_RAFT_KEEP_ENTRIES="200",
            RT_MAX_LOG_SIZE=MAX_LOG_SIZE,
            RT_ARCHIVER_INTERVAL="1",
        )
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
            print(
                f"disk use in MiB, {RATE:,} msg/s of 200 bytes, roll {ROLL >> 20} MiB,"
                f" maxLogSize {MAX_LOG_SIZE}"
            )
            print(" ".join(f"{h:>10}" for h in header))
            started = time.monotonic()
            rows: list[list[float]] = []
            while time.monotonic() - started < SECONDS:
                time.sleep(EVERY)
                folders = [root / "pub", *(n / "in" for n in nodes), *(n / "out" for n in nodes)]
                sizes = [folder_bytes(f) / (1 << 20) for f in [*folders, root / "sub"]]
                rows.append([time.monotonic() - started, *sizes])
                row = [f"{rows[-1][0]:10.0f}", f"{sent[0]:10d}"]
                row += [f"{size:10.1f}" for size in sizes]
                print(" ".join(row), flush=True)
            stop.set()
            publisher.join(120)
            subscriber.unsubscribe()
            print(f"delivered {received[0]:,} of {sent[0]:,}")
            draw(header[2:], rows)
        finally:
            stop.set()
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
