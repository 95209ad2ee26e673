"""Every code block of the README's "Using it" runs, as written, against a live cluster.

``make run`` is played by the ``cluster`` fixture (3 nodes, a ``DATA`` folder); every
other line runs in a shell from a folder where ``.venv/bin`` is this interpreter's bin
folder and ``DATA`` the cluster's data folder, so the commands are the README's own
text. ``rt reset`` asks first: it gets a real terminal (a pty), answered ``reset``.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def using_it_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block of the README's "Using it" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w*)\n(.*?)```", section, flags=re.S)


def run_line(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if "rt reset" in line:
        leader, follower = pty.openpty()  # a terminal for the confirmation
        os.write(leader, b"reset\n")
        try:
            return subprocess.run(
                ["bash", "-c", line], cwd=cwd, env=env, stdin=follower,
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        finally:
            os.close(leader)
            os.close(follower)
    return subprocess.run(
        ["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_readme_using_it_blocks_run_as_written(cluster, tmp_path):
    blocks = using_it_blocks()
    assert [language for language, _ in blocks] == ["", "python"]
    shell = [line.split("  #")[0].strip() for line in blocks[0][1].splitlines()]
    assert shell[0] == "make run" and shell[-1].startswith(".venv/bin/rt cluster down")

    running = cluster(nodes=3, data=tmp_path / "DATA")  # make run
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(BIN)
    env = {**os.environ, "RT_LOG_PATH": str(tmp_path / "logs")}
    results = {line: run_line(line, tmp_path, env) for line in shell[1:-1]}
    for line, result in results.items():
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
    sub = next(r for line, r in results.items() if " sub " in line)
    assert json.loads(sub.stdout)["data"] == ["upd", "trade", {"sym": "A"}]
    reset = next(r for line, r in results.items() if " reset " in line)
    assert "reset done: every node is UP" in reset.stdout

    script = tmp_path / "example.py"
    script.write_text(blocks[1][1])
    python = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert python.returncode == 0, python.stderr
    position, data = python.stdout.splitlines()[0].split(" ", 1)
    assert int(position) > 1 << 44  # in session 1, after the reset
    # rt pub's message comes first: its log was sent again after the reset (the README
    # says so), then the script's own.
    assert data in ("['upd', 'trade', {'sym': 'A'}]", "('upd', 'trade', {'sym': 'A', 'px': 1.5})")

    down = run_line(shell[-1], tmp_path, env)
    assert down.returncode == 0, down.stderr
    assert running.proc.wait(30) == 0
