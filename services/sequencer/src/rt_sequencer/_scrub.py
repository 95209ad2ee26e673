"""The scrubber: the merged log's sealed files checked again, and mended from a peer.

A byte that rots in a sealed file of ``s/out`` is not noticed by the writer, which
never reads it back, and subscribers reading it only fail over (issue 14 #10). Every
``RT_SCRUB_INTERVAL`` seconds (an hour) the node reads each sealed file not collected
(files of no size are collected or emptied by a hard reset) and checks
it is whole records, each with its CRC32C, ending in its seal: merged logs are
byte-identical on every node, so those checks are the digest. A file that fails is
replaced by a peer's copy of the same file (pulled from its start, checked the same way
before it takes the damaged file's place). Readers holding the damaged file open go on
reading it, and fail over as they did; the next ones read the mended file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import grpc

from rtcommon.log import (
    NEED_DATA,
    SEAL_TRAILER,
    SEALED,
    RecordDecoder,
    file_name,
    file_start,
    fsync_directory,
    list_log_files,
)
from rtproto.v1 import pull_pb2, pull_pb2_grpc

__all__ = ["Scrubber", "first_damage"]

log = logging.getLogger(__name__)

_READ = 4 << 20


def first_damage(path: Path) -> str | None:
    """Why the sealed log file at ``path`` is not whole valid records ending in its seal
    (None: it is)."""
    decoder = RecordDecoder(0)
    with open(path, "rb") as file:
        while True:
            data = file.read(_READ)
            if data:
                decoder.feed(data)
            _, _, outcome = decoder.next_chunk()
            if outcome == SEALED:
                end = decoder.position + len(SEAL_TRAILER)
                size = os.fstat(file.fileno()).st_size
                return None if end == size else f"{size - end} bytes after its seal"
            if outcome != NEED_DATA:
                return f"{outcome} at offset {decoder.position}"
            if not data:
                return f"it ends at offset {decoder.position} without its seal"


class Scrubber:
    """Checks ``directory``'s sealed files every ``interval`` seconds; mends a damaged one
    from the first of ``peers`` (gRPC channels to their Pull service) that has it whole.
    ``lock`` is held while a file is replaced (the node's collection of files takes it
    too)."""

    def __init__(
        self,
        directory: Path,
        peers: Callable[[], list[tuple[str, grpc.aio.Channel]]],
        interval: float,
        lock: asyncio.Lock,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        """``busy``: the node's merged log is being rebuilt (a snapshot install): no
        pass then."""
        self.directory = directory
        self._peers = peers
        self.interval = interval
        self._lock = lock
        self._busy = busy
        self.repaired = 0  #: files replaced by a peer's copy since the node started

    async def run(self) -> None:
        for leftover in self.directory.glob("log.*.mend"):  # a mend cut short by a crash
            leftover.unlink(missing_ok=True)
        while True:
            await asyncio.sleep(self.interval)
            if self._busy():
                continue
            try:
                await self.scrub_once()
            except OSError as exc:  # this node's disk: said, and tried again next pass
                log.error("checking the merged log's files: %s", exc)

    async def scrub_once(self) -> None:
        """Check every sealed file (the newest is being written: not that one)."""
        for file in list_log_files(self.directory)[:-1]:
            path = self.directory / file_name(*file)
            try:
                checked = path.stat()
                if checked.st_size == 0:
                    continue  # collected, or emptied by a hard reset
                damage = await asyncio.to_thread(first_damage, path)
            except FileNotFoundError:
                continue
            if damage is not None:
                log.error("merged-log file %s is damaged (%s): mending it", path.name, damage)
                await self._mend(file, path, checked)

    def _still_the_one(self, file: tuple[int, int], path: Path, checked: os.stat_result) -> bool:
        """Whether ``path`` is still the sealed file found damaged: not collected, not
        replaced, not become the file being written (a catch-up may rewrite the log)."""
        try:
            now = path.stat()
        except FileNotFoundError:
            return False
        same = (now.st_ino, now.st_dev, now.st_size) == (
            checked.st_ino,
            checked.st_dev,
            checked.st_size,
        )
        return same and list_log_files(self.directory)[-1] != file

    async def _mend(self, file: tuple[int, int], path: Path, checked: os.stat_result) -> None:
        start = file_start(*file)
        for name, channel in self._peers():
            spare = path.with_name(path.name + ".mend")
            try:
                await self._copy_from(channel, start, spare)
                damage = await asyncio.to_thread(first_damage, spare)
                if damage is not None:
                    raise ValueError(f"its copy is not whole either: {damage}")
                async with self._lock:
                    if self._busy() or not self._still_the_one(file, path, checked):
                        return  # collected or rewritten meanwhile: nothing to mend
                    os.chmod(spare, checked.st_mode)
                    os.replace(spare, path)
                    fsync_directory(self.directory)
                self.repaired += 1
                log.warning("merged-log file %s mended from %s", path.name, name)
                return
            except (grpc.aio.AioRpcError, ValueError, OSError) as exc:
                log.warning("mending %s from %s: %s", path.name, name, exc)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    spare.unlink()
        log.error("no peer could mend %s: tried again at the next pass", path.name)

    @staticmethod
    async def _copy_from(channel: grpc.aio.Channel, start: int, spare: Path) -> None:
        """Write the peer's file that begins at ``start`` to ``spare``, synced."""
        call = pull_pb2_grpc.PullStub(channel).Pull(pull_pb2.PullRequest(position=start))
        try:
            with open(spare, "wb") as out:
                expected = start
                async for chunk in call:
                    if chunk.reset or chunk.collected or chunk.position != expected:
                        raise ValueError(f"it no longer holds the file at {start}")
                    out.write(chunk.data)
                    expected += len(chunk.data)
                    if chunk.sealed:
                        out.write(SEAL_TRAILER)
                        out.flush()
                        os.fsync(out.fileno())
                        return
            raise ValueError("its stream ended before the file did")
        finally:
            call.cancel()
