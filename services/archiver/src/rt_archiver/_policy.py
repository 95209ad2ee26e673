"""The retention policy of the merged log, as a pure decision: which rolled files go.

What it owns: :class:`RetentionPolicy` (RT's ``retentionDuration``, ``maxLogSize`` and
``maxDiskUsagePercent``), :class:`RolledFile` (what the decision needs to know of one
file) and :func:`choose_prune`. No I/O: the archiver (``_archiver``) gathers the facts.

Rules, applied to the rolled files not yet collected, oldest first (the file being
written is never one of them):

- **retentionDuration**: a file whose newest message (by its timestamp) is older than
  the duration goes;
- **maxLogSize**: while the files held total more than the size, the oldest goes;
- **maxDiskUsagePercent**: while the volume is fuller than the percentage (counting
  the bytes the files already chosen would free), the oldest goes.

A file goes only with every file before it, so the decision is one position: the
start of the first file kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rtcommon.env import Settings

__all__ = ["Decision", "RetentionPolicy", "RolledFile", "choose_prune"]

NANOSECONDS_PER_MINUTE = 60 * 10**9


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    retention_minutes: float = 10080.0  #: retentionDuration
    max_log_size: int = 5 << 30  #: maxLogSize, bytes
    max_disk_usage_percent: float = 90.0  #: maxDiskUsagePercent

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            retention_minutes=settings.retention_minutes,
            max_log_size=settings.max_log_size,
            max_disk_usage_percent=settings.max_disk_usage_percent,
        )

    def describe(self) -> dict[str, float | int]:
        """The policy under RT's names (``GET /logHistory`` shows it)."""
        fields = asdict(self)
        return {
            "retentionDuration": fields["retention_minutes"],
            "maxLogSize": fields["max_log_size"],
            "maxDiskUsagePercent": fields["max_disk_usage_percent"],
        }


@dataclass(frozen=True, slots=True)
class RolledFile:
    """A rolled file of the merged log, not collected yet."""

    size: int  #: bytes on disk
    newest_ts: int | None  #: the newest message timestamp in it, ns (None: no message)
    next_start: int  #: the start of the file after it: collecting before it takes this one


@dataclass(frozen=True, slots=True)
class Decision:
    before: int  #: collect every rolled file wholly before this position
    files: int  #: how many files that takes
    freed: int  #: bytes they hold
    reasons: tuple[str, ...]  #: the rules that asked for it


def choose_prune(
    files: list[RolledFile],
    policy: RetentionPolicy,
    *,
    log_bytes: int,
    disk_used: int,
    disk_total: int,
    now_ns: int,
) -> Decision | None:
    """What ``policy`` collects of ``files`` (oldest first), given the merged log's
    bytes held, the volume's use and the time now; None when nothing goes."""
    cut, reasons = 0, []
    oldest_kept = now_ns - policy.retention_minutes * NANOSECONDS_PER_MINUTE
    while cut < len(files) and files[cut].newest_ts is not None:
        if files[cut].newest_ts >= oldest_kept:
            break
        cut += 1
    if cut:
        reasons.append("retentionDuration")
    freed = sum(file.size for file in files[:cut])
    size_cut = cut
    while size_cut < len(files) and log_bytes - freed > policy.max_log_size:
        freed += files[size_cut].size
        size_cut += 1
    if size_cut > cut:
        reasons.append("maxLogSize")
    disk_cut = size_cut
    limit = disk_total * policy.max_disk_usage_percent / 100
    while disk_cut < len(files) and disk_used - freed > limit:
        freed += files[disk_cut].size
        disk_cut += 1
    if disk_cut > size_cut:
        reasons.append("maxDiskUsagePercent")
    if not disk_cut:
        return None
    return Decision(files[disk_cut - 1].next_start, disk_cut, freed, tuple(reasons))
