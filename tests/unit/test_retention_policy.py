"""The archiver's retention policy as a pure decision (``rt_archiver.choose_prune``)."""

from __future__ import annotations

import pytest

from rt_archiver import Decision, RetentionPolicy, RolledFile, choose_prune
from rtcommon.env import Settings, parse_size

MINUTE = 60 * 10**9
NOW = 1_000_000 * MINUTE
GiB = 1 << 30


def files(*ages_minutes: float | None, size: int = 100) -> list[RolledFile]:
    """Rolled files, oldest first, whose newest message is that many minutes old."""
    return [
        RolledFile(size, None if age is None else int(NOW - age * MINUTE), (i + 1) * 1000)
        for i, age in enumerate(ages_minutes)
    ]


DEFAULT = RetentionPolicy()


def decide(rolled, policy=DEFAULT, *, log_bytes=0, used=0, total=100 * GiB):
    return choose_prune(
        rolled, policy, log_bytes=log_bytes, disk_used=used, disk_total=total, now_ns=NOW
    )


def test_the_defaults_are_rts():
    assert RetentionPolicy().describe() == {
        "retentionDuration": 10080,
        "maxLogSize": 5 * GiB,
        "maxDiskUsagePercent": 90,
    }
    assert RetentionPolicy.from_settings(Settings.from_env({})) == RetentionPolicy()


def test_retention_duration_takes_the_old_files_oldest_first_and_stops_at_a_young_one():
    policy = RetentionPolicy(retention_minutes=60)
    assert decide(files(120, 90, 30, 200), policy) == Decision(2000, 2, 200, ("retentionDuration",))
    assert decide(files(30, 200), policy) is None  # never past a file still within it
    assert decide(files(None, 200), policy) is None  # a file without messages: no age


def test_max_log_size_takes_the_oldest_until_the_log_fits():
    policy = RetentionPolicy(max_log_size=350)
    assert decide(files(1, 1, 1, 1), policy, log_bytes=560) == Decision(
        3000, 3, 300, ("maxLogSize",)
    )
    assert decide(files(1, 1), policy, log_bytes=350) is None
    # Never more than the rolled files: the file being written stays.
    assert decide(files(1), policy, log_bytes=10_000).before == 1000


def test_disk_usage_counts_what_the_files_already_chosen_free():
    policy = RetentionPolicy(retention_minutes=60, max_disk_usage_percent=50)
    decision = decide(files(120, 1, 1, 1), policy, log_bytes=400, used=720, total=1300)
    # 720 used, limit 650: the old file frees 100 (620 <= 650), nothing more is needed.
    assert decision == Decision(1000, 1, 100, ("retentionDuration",))
    decision = decide(files(120, 1, 1, 1), policy, log_bytes=400, used=900, total=1300)
    assert decision == Decision(3000, 3, 300, ("retentionDuration", "maxDiskUsagePercent"))


@pytest.mark.parametrize(
    ("text", "size"), [("5Gi", 5 * GiB), ("256Ki", 262144), ("500M", 500_000_000), ("42", 42)]
)
def test_sizes_read_as_kubernetes_quantities(text, size):
    assert parse_size(text, "RT_MAX_LOG_SIZE") == size


@pytest.mark.parametrize("text", ["5GB", "x", "-1", "inf", "1e3", ""])
def test_a_size_that_is_not_one_is_refused_naming_the_variable(text):
    with pytest.raises(ValueError, match="RT_MAX_LOG_SIZE"):
        parse_size(text, "RT_MAX_LOG_SIZE")
