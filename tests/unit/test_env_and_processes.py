"""Settings from the environment, and the restart delays shared by supervisor and launcher."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from rtcommon.env import Settings
from rtcommon.log import DEFAULT_ROLL_SIZE
from rtcommon.processes import Backoff, describe_exit


def test_settings_defaults_and_values() -> None:
    default = Settings.from_env({})
    assert default.log_path == Path.home() / ".rt" / "logs" and not default.log_path_set
    assert default.roll_size == DEFAULT_ROLL_SIZE
    assert (default.single_ingress, default.archived_exchange, default.raft_keep_entries) == (
        False,
        None,
        None,
    )
    given = Settings.from_env(
        {
            "RT_LOG_PATH": "/data/logs",
            "RT_ROLL_SIZE": "65536",
            "RT_SINGLE_INGRESS": "1",
            "REPLICATOR_EXCHANGE_ARCHIVED": "0",
            "RT_RAFT_KEEP_ENTRIES": "5",
        }
    )
    assert given == Settings(Path("/data/logs"), 65536, True, "0", 5, log_path_set=True)
    for off in ("", "0", "false", "no"):
        assert not Settings.from_env({"RT_SINGLE_INGRESS": off}).single_ingress


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RT_ROLL_SIZE", "big", "not a number of bytes"),
        ("RT_ROLL_SIZE", "10", "outside"),
        ("RT_RAFT_KEEP_ENTRIES", "many", "not a whole number"),
        ("RT_RAFT_KEEP_ENTRIES", "-1", "negative"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"{name}.*{message}"):
        Settings.from_env({name: value})


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_stable_run() -> None:
    backoff = Backoff(initial=0.2, cap=1.0, stable_after=10.0)
    assert [backoff.delay(0.1) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delay(10.0) == 0.2
    assert backoff.delay(1.0) == 0.4


def test_describe_exit() -> None:
    assert describe_exit(2) == "exit code 2"
    assert describe_exit(-signal.SIGKILL) == "exit code -9 (SIGKILL)"
    assert describe_exit(-99) == "exit code -99 (signal 99)"
