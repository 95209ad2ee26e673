"""Tests of the deterministic simulator: seeds pass, runs replay exactly, the command line
reports as specified, and deliberately broken cores are caught."""

from __future__ import annotations

import dataclasses

import pytest

from rt_sequencer.raft import Message, RaftNode
from rt_sequencer.raft._raft import Raft
from rt_sequencer.raftsim import SimConfig, Simulation, main, run_seeds


@pytest.mark.parametrize(
    ("nodes", "seeds"),
    [(3, range(200)), (1, range(20)), (5, range(30))],
    ids=["3-nodes", "1-node", "5-nodes"],
)
def test_seeds_pass(nodes: int, seeds: range) -> None:
    failures = run_seeds(seeds, SimConfig(nodes=nodes))
    assert failures == [], "\n".join(f"seed {s}: {v[0]}" for s, v in failures)


def test_runs_exercise_faults_and_recover() -> None:
    totals: dict[str, int] = {}
    for seed in range(20):
        result = Simulation(seed).run()
        assert result.ok
        assert 0 <= result.stats.recovery_ticks <= SimConfig().quiet_ticks
        for name, value in dataclasses.asdict(result.stats).items():
            totals[name] = totals.get(name, 0) + value
    for name in (
        "crashes",
        "states_lost",
        "torn_writes",
        "leaders",
        "acknowledged",
        "snapshots_installed",
    ):
        assert totals[name] > 0, name


def test_a_seed_replays_exactly() -> None:
    first = Simulation(42, trace=True).run()
    second = Simulation(42, trace=True).run()
    assert first.trace == second.trace
    assert first.stats == second.stats
    assert len(first.trace) > 100


# -- deliberately broken cores ------------------------------------------------------------


class VotesTwiceInATerm(Raft):
    """Grants a vote even when it already voted for someone else in this term."""

    def _handle_vote_request(self, m: Message) -> None:
        vote, lead = self.vote, self.lead
        self.vote = self.lead = 0
        super()._handle_vote_request(m)
        if self.vote == 0:
            self.vote = vote
        self.lead = lead


class IgnoresLogFreshness(Raft):
    """Votes for candidates whatever their log (skips the up-to-date check)."""

    def _handle_vote_request(self, m: Message) -> None:
        fresh = Message(m.type, m.src, m.dst, m.term, log_term=1 << 62, index=1 << 62)
        super()._handle_vote_request(fresh)


class AppendsWithoutMatching(Raft):
    """Accepts APPENDs without checking that the previous entry matches."""

    def _handle_append(self, m: Message) -> None:
        if m.index <= self.log.last_index() and m.index >= self.log.first_index() - 1:
            m = dataclasses.replace(m, log_term=self.log.term(m.index))
        super()._handle_append(m)


class VotesAfterLosingItsState(Raft):
    """Ignores Config.abstain: a node that lost its log votes at once."""

    def __init__(self, config, storage) -> None:
        super().__init__(config, storage)
        self.abstaining = False


def node_class_with(raft_class: type[Raft]) -> type[RaftNode]:
    return type("BrokenNode", (RaftNode,), {"_raft_class": raft_class, "__slots__": ()})


@pytest.mark.parametrize(
    ("broken", "kinds"),
    [
        (VotesTwiceInATerm, {"election safety"}),
        (IgnoresLogFreshness, {"leader completeness", "state machine safety"}),
        (AppendsWithoutMatching, {"log matching", "state machine safety", "exception"}),
        (VotesAfterLosingItsState, {"leader completeness", "state machine safety"}),
    ],
)
def test_broken_cores_are_caught(broken: type[Raft], kinds: set[str]) -> None:
    node_class = node_class_with(broken)
    found = set()
    for seed in range(60):
        result = Simulation(seed, node_class=node_class).run()
        found.update(v.kind for v in result.violations)
    assert found & kinds, found


# -- the command line ---------------------------------------------------------------------


def test_command_line_reports_success(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "4", "--start", "10"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "4 seeds, 0 violations"


def test_command_line_reports_failing_seeds_with_replay_commands(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import rt_sequencer.raftsim._cli as cli

    broken = node_class_with(VotesTwiceInATerm)
    monkeypatch.setattr(
        cli,
        "Simulation",
        lambda seed, config, **kw: Simulation(seed, config, node_class=broken, **kw),
    )
    assert main(["--seeds", "30"]) == 1
    lines = capsys.readouterr().out.splitlines()
    failing = [line for line in lines if "VIOLATION" in line]
    assert failing
    seed = failing[0].split()[1].rstrip(":")
    assert f"  replay: python3 -m rt_sequencer.raftsim --seed {seed} --trace" in lines
    assert lines[-1] == f"30 seeds, {len(failing)} violations"

    assert main(["--seed", seed, "--trace"]) == 1
    replay = capsys.readouterr().out.splitlines()
    assert any("became leader" in line for line in replay)
    assert replay[-1] == "1 seeds, 1 violations"
