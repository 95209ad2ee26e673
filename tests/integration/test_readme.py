"""Every code block of the README runs, as written, against a live cluster.

``make run`` runs for real, from the project's folder, with ``DATA=`` and ``BASE_PORT=``
pointing at this test's folder and free ports; every other line of "Using it" runs in a
shell from a folder where ``.venv/bin`` is this interpreter's bin folder and ``DATA`` the
cluster's data folder, so the commands are the README's own text. ``rt reset`` asks
first: it gets a real terminal (a pty), answered ``reset``. The first block's ``make
test`` is the command running this test; it is checked to be a target, not run again.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

from rtcommon.localhost import find_free_base_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block of ``text``."""
    return re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)


def using_it_blocks() -> list[tuple[str, str]]:
    """The blocks of the README's "Using it" section."""
    text = (ROOT / "README.md").read_text()
    return code_blocks(text.split("## Using it", 1)[1].split("\n## ", 1)[0])


def commands(code: str) -> list[str]:
    """The command of each line of a shell block, its comment left out."""
    return [line.split("  #")[0].strip() for line in code.splitlines() if line.strip()]


def make_run(data: Path, base_port: int, log: Path) -> subprocess.Popen[str]:
    """``make run`` from the project's folder, until its ``ready`` line."""
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"DATA={data}", f"BASE_PORT={base_port}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("wb"), text=True,
        process_group=0,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if "ready" in line:
            return proc
    proc.wait()
    raise AssertionError(f"make run ended ({proc.returncode}) before ready:\n{log.read_text()}")


def test_the_readme_first_block_names_make_targets() -> None:
    first = code_blocks((ROOT / "README.md").read_text())[0][1]
    assert commands(first) == ["make run", "make test"]
    for target in ("run", "test"):
        dry = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr


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


def test_the_readme_using_it_blocks_run_as_written(tmp_path):
    blocks = using_it_blocks()
    assert [language for language, _ in blocks] == ["", "python"]
    shell = commands(blocks[0][1])
    assert shell[0] == "make run" and shell[-1].startswith(".venv/bin/rt cluster down")

    cluster = make_run(tmp_path / "DATA", find_free_base_port(), tmp_path / "make-run.log")
    try:
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
        assert data in (
            "['upd', 'trade', {'sym': 'A'}]",
            "('upd', 'trade', {'sym': 'A', 'px': 1.5})",
        )

        down = run_line(shell[-1], tmp_path, env)
        assert down.returncode == 0, down.stderr
        assert cluster.wait(30) == 0  # make run ends when the cluster stops
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGTERM)
            cluster.wait(60)
