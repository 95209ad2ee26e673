"""The archiver of one node: the retention policy carried out on the merged log.

What it owns: :class:`Archiver`, which every ``interval`` seconds looks at the node's
merged log (``s/out``), decides with :func:`~rt_archiver._policy.choose_prune` and,
when files should go, asks the cluster for a prune (``Admin.Prune``). The sequencers
then collect the files on every node at the same point of the merge (a Raft entry),
so merged logs stay identical; this process never touches ``s/out`` itself. Each
check is written to ``s/archiver.json`` (the supervisor's ``GET /logHistory``
shows it).

Newest message timestamps are read once per rolled file (rolled files do not change)
and kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

import grpc

from rtcommon.admin import prune_cluster
from rtcommon.cluster import ClusterSpec
from rtcommon.grpcopts import describe_error
from rtcommon.log import (
    LogEvent,
    LogReader,
    file_name,
    file_start,
    is_collected,
    list_log_files,
    write_file_atomically,
)

from ._policy import Decision, RetentionPolicy, RolledFile, choose_prune

__all__ = ["STATUS_FILE", "Archiver", "read_status"]

log = logging.getLogger("rt_archiver")

#: Under the node's data folder: what the archiver last decided.
STATUS_FILE = Path("s/archiver.json")  # not in s/state: that is the merge's own
PRUNE_TIMEOUT = 15.0


def read_status(data: str | Path) -> dict | None:
    """The archiver's last check on the node whose data folder is ``data`` (None: none)."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        return json.loads((Path(data) / STATUS_FILE).read_text())
    return None


class Archiver:
    def __init__(
        self, spec: ClusterSpec, node_id: int, policy: RetentionPolicy, interval: float
    ) -> None:
        self.node = spec.node(node_id)
        # Its own node first: a follower passes the prune on to the leader.
        self.addresses = [self.node.push] + [n.push for n in spec.nodes if n.id != node_id]
        self.data = Path(self.node.data)
        self.out_dir = self.data / "s" / "out"
        self.policy = policy
        self.interval = interval
        self._newest: dict[tuple[int, int], int | None] = {}
        self._last_prune: dict | None = None  # the last prune asked for: when, what, why

    async def run(self) -> None:
        policy = self.policy
        log.info(
            "retention policy: retentionDuration %g min, maxLogSize %d bytes,"
            " maxDiskUsagePercent %g; checked every %g s",
            policy.retention_minutes,
            policy.max_log_size,
            policy.max_disk_usage_percent,
            self.interval,
        )
        while True:
            await self.check()
            await asyncio.sleep(self.interval)

    async def check(self) -> Decision | None:
        """Look at the merged log once; ask for a prune if the policy wants one."""
        status: dict = {"policy": self.policy.describe(), "checked": time.time()}
        decision = None
        try:
            files, log_bytes = await asyncio.to_thread(self._rolled_files)
            usage = shutil.disk_usage(self.data)
            decision = choose_prune(
                files,
                self.policy,
                log_bytes=log_bytes,
                disk_used=usage.total - usage.free,
                disk_total=usage.total,
                now_ns=time.time_ns(),
            )
            status.update(log_bytes=log_bytes, rolled_files=len(files))
            if decision is not None:
                self._last_prune = {
                    "at": status["checked"],
                    "before": decision.before,
                    "files": decision.files,
                    "bytes": decision.freed,
                    "reasons": list(decision.reasons),
                }
                pruned = await prune_cluster(self.addresses, decision.before, PRUNE_TIMEOUT)
                log.info(
                    "asked the cluster to collect %d file(s), %d bytes, before %d (%s):"
                    " the retention point is now %d",
                    decision.files,
                    decision.freed,
                    decision.before,
                    ", ".join(decision.reasons),
                    pruned,
                )
        except grpc.aio.AioRpcError as exc:
            status["error"] = f"prune refused: {describe_error(exc)}"
            log.warning("%s", status["error"])
        except OSError as exc:
            status["error"] = f"reading {self.out_dir}: {exc}"
            log.warning("%s", status["error"])
        status["last_prune"] = self._last_prune
        with contextlib.suppress(OSError):
            payload = json.dumps(status).encode()
            write_file_atomically(self.data / STATUS_FILE, payload)
        return decision

    def _rolled_files(self) -> tuple[list[RolledFile], int]:
        """The rolled files not collected, oldest first, and the bytes the log holds."""
        files = list_log_files(self.out_dir)
        rolled, log_bytes, names = [], 0, []
        for index, file in enumerate(files):
            path = self.out_dir / file_name(*file)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            log_bytes += size
            if index == len(files) - 1 or is_collected(path) or not size:
                continue  # the file being written, or nothing to give back
            next_start = file_start(*files[index + 1])
            rolled.append(RolledFile(size, self._newest_ts(file, next_start), next_start))
            names.append(file)
        # Forget the files collected (or wiped) since: the cache holds the rolled ones.
        self._newest = {file: self._newest[file] for file in names}
        return rolled, log_bytes

    def _newest_ts(self, file: tuple[int, int], end: int) -> int | None:
        """The newest message timestamp in ``file`` (which ends before ``end``)."""
        if file not in self._newest:
            newest = None
            # Records were checked on their way in; only the headers are looked at.
            with LogReader(self.out_dir, file_start(*file), verify=False) as reader:
                while items := reader.read(end):
                    for item in items:
                        if not isinstance(item, LogEvent):
                            newest = item.ts if newest is None else max(newest, item.ts)
            self._newest[file] = newest
        return self._newest[file]
