"""The whole-node simulator: seeds pass, runs replay exactly, faults are exercised, the
command line reports as specified, and deliberately broken merge cores are caught."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest

from rt_sequencer.core import Merger, RaftState, Range, SequencerCore
from rt_sequencer.nodesim import NodeSimConfig, NodeSimulation, main, run_seeds
from rtcommon.streams import is_dedup_topic


@pytest.mark.parametrize(
    ("nodes", "seeds"),
    [(3, range(150)), (1, range(20)), (5, range(20))],
    ids=["3-nodes", "1-node", "5-nodes"],
)
def test_seeds_pass(nodes: int, seeds: range) -> None:
    failures = run_seeds(seeds, nodes=nodes)
    assert failures == [], "\n".join(f"seed {s}: {v[0]}" for s, v in failures)


def test_runs_exercise_faults_and_recover() -> None:
    totals: dict[str, int] = {}
    for seed in range(30):
        result = NodeSimulation(seed).run()
        assert result.ok, result.violations
        assert 0 <= result.stats.recovery_ticks <= NodeSimConfig().quiet_ticks
        for name, value in dataclasses.asdict(result.stats).items():
            totals[name] = totals.get(name, 0) + value
    for name in (
        "records",
        "crashes",
        "damaged_checkpoints",
        "proposals",
        "fetches",
        "snapshots_installed",
        "compactions",
    ):
        assert totals[name] > 0, (name, totals)


def test_a_seed_replays_exactly() -> None:
    first = NodeSimulation(7, trace=True).run()
    second = NodeSimulation(7, trace=True).run()
    assert first.trace == second.trace
    assert first.stats == second.stats
    assert len(first.trace) > 50


def test_a_seed_replays_exactly_in_other_processes() -> None:
    """What a failing run prints must replay in a new process, whose string hashes (and so
    set orders) differ: nothing in the simulation may depend on them."""
    traces = {
        subprocess.run(
            [sys.executable, "-m", "rt_sequencer.nodesim", "--seed", "11", "--trace"],
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        for hash_seed in (1, 2, 3)
    }
    assert len(traces) == 1


# -- deliberately broken merge cores ------------------------------------------------------


def core_with(merger_class: type[Merger]) -> type[SequencerCore]:
    """A SequencerCore whose merger is replaced by a broken one."""

    class Broken(SequencerCore):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            old = self.merger
            self.merger = merger_class(old.inputs, old.out, old.checkpoint())

    return Broken


class DedupPerOriginOnly(Merger):
    """The bug users met: one watermark per origin, shared by every .dedup topic."""

    def apply(self, index: int, ranges: list[Range]) -> None:
        shared = [
            Range(r.stream, r.start, r.end, "any.dedup") if is_dedup_topic(r.topic) else r
            for r in ranges
        ]
        super().apply(index, shared)


class NoDedup(Merger):
    """Merges .dedup topics as if they were plain."""

    def apply(self, index: int, ranges: list[Range]) -> None:
        super().apply(index, [Range(r.stream, r.start, r.end, "plain") for r in ranges])


class AppliesBeforeTheBytesArrive(Merger):
    """Does not wait for missing input bytes (no backup path): merges what it has."""

    def missing(self, ranges: list[Range]) -> list[Range]:
        return []


class ProposesBeforeApplyingItsLog(SequencerCore):
    """A new leader proposes from its merge state before applying the entries of earlier
    terms in its log, so its ranges do not start where the merge will stand."""

    def raft_changed(self, state: RaftState) -> None:
        super().raft_changed(dataclasses.replace(state, last_index=0))


class ArchivesOnAQuorumsWord(SequencerCore):
    """Archives what a quorum (not every node) is done with."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        view = self.view

        def archivable(stream: str) -> int:
            pairs = zip(view.done, view.held, strict=True)
            ends = sorted((min(d.get(stream, 0), h.get(stream, 0)) for d, h in pairs), reverse=True)
            return ends[view.quorum - 1]

        view.archivable = archivable  # type: ignore[method-assign]


class DoneBeforeDurable(SequencerCore):
    """Says it is done with what it merged in memory, not what its checkpoint holds."""

    def _done_now(self) -> dict[str, int]:
        return dict(self.merger.merged)


@pytest.mark.parametrize(
    ("core_class", "expected"),
    [
        (core_with(DedupPerOriginOnly), {("exactly once", "published")}),
        (core_with(NoDedup), {("exactly once", "merged again")}),
        (
            core_with(AppliesBeforeTheBytesArrive),
            {("merged logs", "other bytes"), ("exactly once", "with a gap")},
        ),
        (ProposesBeforeApplyingItsLog, {("exception", "does not continue its merge")}),
        (ArchivesOnAQuorumsWord, {("archived read", "archived before")}),
        (DoneBeforeDurable, {("archived read", "archived before")}),
    ],
    ids=[
        "dedup-per-origin",
        "no-dedup",
        "applies-early",
        "proposes-too-soon",
        "archives-on-a-quorum",
        "done-before-durable",
    ],
)
def test_broken_cores_are_caught(
    core_class: type[SequencerCore], expected: set[tuple[str, str]]
) -> None:
    """Each planted bug shows as the violation it should cause, not as any failure."""
    found: list[str] = []
    for seed in range(60):
        result = NodeSimulation(seed, core_class=core_class).run()
        found += [f"{v.kind}: {v.detail}" for v in result.violations]
        if any(
            v.kind == kind and text in v.detail
            for v in result.violations
            for kind, text in expected
        ):
            return
    pytest.fail(f"not caught as expected; found {found[:5]}")


# -- the command line ---------------------------------------------------------------------


def test_command_line_reports_success(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "3", "--start", "10"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 seeds, 0 violations"


def test_command_line_reports_failing_seeds_with_replay_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import rt_sequencer.nodesim._cli as cli

    broken = core_with(NoDedup)
    monkeypatch.setattr(
        cli,
        "NodeSimulation",
        lambda seed, config, **kw: NodeSimulation(seed, config, core_class=broken, **kw),
    )
    assert main(["--seeds", "5"]) == 1
    lines = capsys.readouterr().out.splitlines()
    failing = [line for line in lines if "VIOLATION" in line]
    assert failing
    seed = failing[0].split()[1].rstrip(":")
    assert f"  replay: python3 -m rt_sequencer.nodesim --seed {seed} --trace" in lines
    assert lines[-1] == f"5 seeds, {len(failing)} violations"

    assert main(["--seed", seed, "--trace"]) == 1
    replay = capsys.readouterr().out.splitlines()
    assert any("proposes" in line for line in replay)
    assert replay[-1] == "1 seeds, 1 violations"
