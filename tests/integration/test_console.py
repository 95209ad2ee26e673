"""The console page at ``GET /``, loaded in a real headless browser (Debian's Chromium,
which ``make test`` installs) against a live 3-node cluster while messages flow.

Chromium runs the page's script for a few seconds of virtual time (its polls of
``/cluster`` are real requests) and prints the DOM it built.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import rt

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=3000",
)


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("Debian's chromium is not installed: `make test` installs it (make browser)")
    return found


def rendered(url: str, profile: Path) -> str:
    """The DOM of ``url`` once its script ran for the virtual time budget."""
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def rows(dom: str, table: str) -> list[str]:
    body = re.search(rf'<table id="{table}">.*?<tbody>(.*?)</tbody>', dom, flags=re.S)
    assert body, dom[:2000]
    return re.findall(r"<tr class=\"([^\"]*)\">(.*?)</tr>", body[1], flags=re.S)


def cell(row: str, name: str) -> str:
    found = re.search(rf'<td class="{name}">(.*?)</td>', row)
    assert found, row
    return found[1]


def test_the_console_shows_the_nodes_a_leader_and_numbers_that_move(cluster, tmp_path):
    running = cluster(nodes=3)
    client = rt.Cluster.from_file(running.path)
    stop = threading.Event()

    def publish() -> None:
        with rt.Publisher(client, "feed", log_dir=tmp_path / "pub") as publisher:
            while not stop.is_set():
                for n in range(200):
                    publisher.publish(("upd", "trade", n))
                time.sleep(0.05)

    publisher = threading.Thread(target=publish)
    publisher.start()
    url = f"http://{running.spec.nodes[1].rest}/"
    try:
        time.sleep(1.0)  # a stream exists
        first = rendered(url, tmp_path / "profile-1")
        time.sleep(1.5)
        second = rendered(url, tmp_path / "profile-2")
    finally:
        stop.set()
        publisher.join(60)

    for dom in (first, second):
        nodes = rows(dom, "nodes")
        assert [cell(row, "name") for _, row in nodes] == ["node-0", "node-1", "node-2"]
        assert [classes for classes, _ in nodes].count("node leader") == 1, nodes
        assert {cell(row, "reset") for _, row in nodes} == {"UP"}
        assert 'served by <span id="served-by">node-1</span>' in dom
        assert 'id="hard-reset"' in dom
    merged = [int(cell(rows(dom, "streams")[0][1], "merged")) for dom in (first, second)]
    assert 0 < merged[0] < merged[1], merged  # the numbers move while messages flow
    publishers = [row for classes, row in rows(second, "clients") if "publisher" in classes]
    assert len(publishers) == 3  # one push per node
