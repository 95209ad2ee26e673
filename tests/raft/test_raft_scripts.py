"""Replays the scripted interaction tests in scripts/*.txt and compares their traces.

Set RT_REWRITE=1 to re-record the expected output instead (then review the diff).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from raft_harness import InteractionEnv, parse_script, render_script

SCRIPTS = sorted((Path(__file__).parent / "scripts").glob("*.txt"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.stem for path in SCRIPTS])
def test_script(script: Path) -> None:
    blocks = parse_script(script.read_text())
    env = InteractionEnv()
    if os.environ.get("RT_REWRITE") == "1":
        for block in blocks:
            block.expected = env.run(block.command)
        script.write_text(render_script(blocks))
        return
    for number, block in enumerate(blocks, 1):
        actual = env.run(block.command)
        assert actual == block.expected, (
            f"{script.name}, block {number} ({block.command!r}):\n"
            + "\n".join(actual)
            + "\n--- expected ---\n"
            + "\n".join(block.expected)
        )


def test_scripts_exist() -> None:
    names = {path.stem for path in SCRIPTS}
    assert {
        "election",
        "split_vote",
        "leader_change_uncommitted",
        "figure8",
        "snapshot_catch_up",
        "prevote_checkquorum",
    } <= names
