"""The scrubber: sealed log files checked again, and mended from a peer.

A byte that rots in a sealed file of ``s/out`` is not noticed by the writer, which
never reads it back, and subscribers reading it only fail over (issue 14 #10); one that
rots in an input copy under ``s/in`` stops the merge at that entry on this node. Every
``RT_SCRUB_INTERVAL`` seconds (an hour) the node reads each sealed file not collected
(files of no size are collected or emptied by a hard reset) of its merged log and of
every input copy, and checks it is whole records, each with its CRC32C, ending in its
seal, and asks its peers for their digest of the same file (``Peer.FileDigest``: CRC32C
of the file's bytes, worked out once per file): merged logs are byte-identical on every
node, and so are the input copies of a stream, so a file that fails its check, or
differs from the copies two peers agree on, is replaced by a peer's copy of the same
file (pulled, or for an input copy fetched, from its start, checked the same way before
it takes the file's place). An input copy the merge found damaged is checked at once
(:meth:`Scrubber.check_input_soon`), so the entry waiting on it goes on. Readers
holding the damaged file open go on reading it (subscribers fail over as they did; the
merge opens the file again); the next ones read the mended file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
from crc32c import crc32c

from rtcommon.log import (
    NEED_DATA,
    SEAL_TRAILER,
    SEALED,
    RecordDecoder,
    file_is_sealed,
    file_name,
    file_start,
    fsync_directory,
    list_log_files,
    split_position,
)
from rtproto.v1 import peer_pb2, peer_pb2_grpc, pull_pb2, pull_pb2_grpc

__all__ = ["ScrubbedLog", "Scrubber", "check_file", "first_damage"]

log = logging.getLogger(__name__)

_READ = 4 << 20


def check_file(path: Path, rate: float | None = None) -> tuple[str | None, int]:
    """Why the sealed log file at ``path`` is not whole valid records ending in its seal
    (None: it is), and the CRC32C of its bytes; read at ``rate`` bytes a second at most
    (it sleeps between reads: run it in a worker thread)."""
    decoder = RecordDecoder(0, piece_size=_READ)  # a long record is not held whole
    digest = 0
    read = 0
    started = time.monotonic()
    with open(path, "rb") as file:
        while True:
            if rate:
                time.sleep(max(0.0, started + read / rate - time.monotonic()))
            data = file.read(_READ)
            read += len(data)
            if data:
                decoder.feed(data)
                digest = crc32c(data, digest)
            _, _, outcome, _ = decoder.next_chunk()
            if outcome == SEALED:
                while data:  # the bytes after the seal count in the digest too
                    data = file.read(_READ)
                    digest = crc32c(data, digest)
                end = decoder.position + len(SEAL_TRAILER)
                size = os.fstat(file.fileno()).st_size
                return (None if end == size else f"{size - end} bytes after its seal"), digest
            if outcome != NEED_DATA:
                return f"{outcome} at offset {decoder.position}", digest
            if not data:
                return f"it ends at offset {decoder.position} without its seal", digest


def first_damage(path: Path) -> str | None:
    """Why the sealed log file at ``path`` is not whole (None: it is)."""
    return check_file(path)[0]


class InputCopy(Protocol):
    """What the scrubber needs of an input copy: its folder."""

    directory: Path


@dataclass(frozen=True, slots=True)
class ScrubbedLog:
    """A log whose sealed files are checked: the merged log (``stream`` ""), or the input
    copy of ``stream``."""

    directory: Path
    stream: str = ""

    def sealed_files(self) -> list[tuple[int, int]]:
        """Its files no writer adds to: all but the newest, which the merged log's writer
        is writing, and an input copy's newest too once it is sealed (its publisher
        rolled, and an idle stream's copy stays so)."""
        files = list_log_files(self.directory)
        if self.stream and files and file_is_sealed(self.directory / file_name(*files[-1])):
            return files
        return files[:-1]

    def describe(self, path: Path) -> str:
        return (
            f"input file {path.name} of {self.stream}"
            if self.stream
            else f"merged-log file {path.name}"
        )


class Scrubber:
    """Checks the sealed files of the merged log in ``directory`` and of every input copy
    (``inputs``: stream name -> its copy, read as it changes) every ``interval`` seconds,
    and compares each one's digest with the peers'; mends a damaged file, or one that
    differs from what its peers agree on, from a peer's copy. ``peers`` gives ``(name,
    channel)`` of each peer (its Pull and Peer services), ``session`` the merged log's
    session. ``lock`` is held while a merged-log file is replaced (the node's collection
    of files takes it too), ``input_lock`` while an input file is (the archival of input
    files takes it)."""

    def __init__(
        self,
        directory: Path,
        peers: Callable[[], list[tuple[str, grpc.aio.Channel]]],
        interval: float,
        lock: asyncio.Lock,
        session: Callable[[], int],
        busy: Callable[[], bool] = lambda: False,
        rate: float | None = None,
        inputs: Mapping[str, InputCopy] | None = None,
        input_lock: asyncio.Lock | None = None,
        input_mended: Callable[[str], None] = lambda stream: None,
    ) -> None:
        """``busy``: the node's merged log is being rebuilt (a snapshot install): no
        pass then, and no digest served. ``rate``: bytes a second the checks read at
        most (None: as fast as the disk goes), so a pass over a large merged log does not
        take the disk from the merge. ``input_mended`` is told the stream whose input
        file was replaced (its writer lets go of the old file)."""
        self.directory = directory
        self.rate = rate
        self._peers = peers
        self.interval = interval
        self._lock = lock
        self._input_lock = input_lock or asyncio.Lock()
        self._inputs: Mapping[str, InputCopy] = inputs if inputs is not None else {}
        self._input_mended = input_mended
        self._session = session
        self._busy = busy
        # file path -> (what identified the file when checked, its damage, its digest)
        self._checked: dict[Path, tuple[tuple[int, ...], str | None, int]] = {}
        self._warned: set[Path] = set()
        self._soon: dict[str, asyncio.Task[None]] = {}  # input copies checked out of turn

    async def run(self) -> None:
        for log_ in self._logs():  # a mend cut short by a crash
            for leftover in log_.directory.glob("log.*.mend"):
                leftover.unlink(missing_ok=True)
        while True:
            await asyncio.sleep(self.interval)
            if self._busy():
                continue
            try:
                await self.scrub_once()
            except OSError as exc:  # this node's disk: said, and tried again next pass
                log.error("checking the merged log's and input copies' files: %s", exc)

    def _logs(self) -> list[ScrubbedLog]:
        inputs = [ScrubbedLog(copy.directory, name) for name, copy in list(self._inputs.items())]
        return [ScrubbedLog(self.directory), *sorted(inputs, key=lambda log_: log_.stream)]

    async def stop(self) -> None:
        """Cancel the checks out of turn still running."""
        running = list(self._soon.values())  # each leaves ``_soon`` as it ends
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def scrub_once(self) -> None:
        """Check every sealed file (``ScrubbedLog.sealed_files``) of the merged log and of
        every input copy, read afresh, then against the peers' digests."""
        for log_ in self._logs():
            await self.scrub_log(log_)

    def check_input_soon(self, stream: str) -> None:
        """Check the input copy of ``stream`` now (the merge found it damaged), unless a
        check of it is under way."""
        copy = self._inputs.get(stream)
        running = self._soon.get(stream)
        if copy is None or (running is not None and not running.done()):
            return
        task = asyncio.create_task(
            self._scrub_soon(ScrubbedLog(copy.directory, stream)), name=f"scrub {stream}"
        )
        self._soon[stream] = task
        task.add_done_callback(lambda _: self._soon.pop(stream, None))

    async def _scrub_soon(self, log_: ScrubbedLog) -> None:
        try:
            await self.scrub_log(log_)
        except OSError as exc:
            log.error("checking the input copy of %s: %s", log_.stream, exc)
        except Exception:  # a check out of turn must not go unreported
            log.exception("checking the input copy of %s", log_.stream)

    async def scrub_log(self, log_: ScrubbedLog) -> None:
        """Check ``log_``'s sealed files, read afresh, then against the peers' digests;
        mend what is damaged or differs."""
        for file in log_.sealed_files():
            path = log_.directory / file_name(*file)
            try:
                checked = path.stat()
                if checked.st_size == 0:
                    continue  # collected, or emptied by a hard reset
                damage, digest = await self._check(path, checked, afresh=True)
            except FileNotFoundError:
                continue
            if damage is not None:
                log.error("%s is damaged (%s): mending it", log_.describe(path), damage)
                await self._mend(log_, file, path, checked, None)
                continue
            agreed = await self._peers_digest(log_, file)
            if agreed is not None and agreed != (checked.st_size, digest):
                log.error("%s differs from its peers' copies: mending it", log_.describe(path))
                await self._mend(log_, file, path, checked, agreed)

    async def digest(self, position: int, stream: str = "") -> peer_pb2.FileDigestReply:
        """The digest of the sealed file starting at ``position`` of the merged log (or
        of ``stream``'s input copy), for a peer (computed once per file, unless the file
        changed)."""
        log_ = ScrubbedLog(self.directory)
        if stream:
            copy = self._inputs.get(stream)
            if copy is None:
                return peer_pb2.FileDigestReply(held=False)
            log_ = ScrubbedLog(copy.directory, stream)
        directory = log_.directory
        file = split_position(position)[:2]
        if self._busy() or file not in log_.sealed_files():
            return peer_pb2.FileDigestReply(held=False)
        path = directory / file_name(*file)
        try:
            checked = path.stat()
            if checked.st_size == 0:
                return peer_pb2.FileDigestReply(held=False)
            damage, digest = await self._check(path, checked, afresh=False)
        except FileNotFoundError:
            return peer_pb2.FileDigestReply(held=False)
        if damage is not None:
            return peer_pb2.FileDigestReply(held=False)
        return peer_pb2.FileDigestReply(held=True, size=checked.st_size, crc32c=digest)

    async def _check(
        self, path: Path, checked: os.stat_result, *, afresh: bool
    ) -> tuple[str | None, int]:
        key = (checked.st_ino, checked.st_dev, checked.st_size, checked.st_mtime_ns)
        known = self._checked.get(path)
        if afresh or known is None or known[0] != key:
            damage, digest = await asyncio.to_thread(check_file, path, self.rate)
            known = self._checked[path] = (key, damage, digest)
        return known[1], known[2]

    async def _peers_digest(
        self, log_: ScrubbedLog, file: tuple[int, int]
    ) -> tuple[int, int] | None:
        """``(size, digest)`` of ``file`` that every peer holding it agrees on, if at
        least two do (one peer against this node cannot tell which is right)."""
        request = peer_pb2.FileDigestRequest(
            session=self._session(), position=file_start(*file), stream=log_.stream
        )
        seen = []
        for name, channel in self._peers():
            try:
                reply = await peer_pb2_grpc.PeerStub(channel).FileDigest(request, timeout=60)
            except grpc.aio.AioRpcError as exc:
                log.debug("digest of %s from %s: %s", file_name(*file), name, exc)
                continue
            if reply.held:
                seen.append((reply.size, reply.crc32c))
        if len(seen) >= 2 and len(set(seen)) == 1:
            return seen[0]
        path = log_.directory / file_name(*file)
        if len(set(seen)) > 1 and path not in self._warned:
            self._warned.add(path)
            log.warning("the peers' copies of %s differ from each other", log_.describe(path))
        return None

    @staticmethod
    def _still_the_one(
        log_: ScrubbedLog, file: tuple[int, int], path: Path, checked: os.stat_result
    ) -> bool:
        """Whether ``path`` is still the sealed file found wrong: not collected or
        archived, not replaced, not become the file being written (a catch-up may
        rewrite the log)."""
        try:
            now = path.stat()
        except FileNotFoundError:
            return False
        same = (now.st_ino, now.st_dev, now.st_size) == (
            checked.st_ino,
            checked.st_dev,
            checked.st_size,
        )
        return same and file in log_.sealed_files()

    async def _mend(
        self,
        log_: ScrubbedLog,
        file: tuple[int, int],
        path: Path,
        checked: os.stat_result,
        agreed: tuple[int, int] | None,
    ) -> None:
        """Replace ``path`` by a peer's copy that is whole (and, with ``agreed``, has
        that size and digest)."""
        start = file_start(*file)
        what = log_.describe(path)
        for name, channel in self._peers():
            spare = path.with_name(path.name + ".mend")
            try:
                await self._copy_from(log_, channel, start, spare)
                damage, digest = await asyncio.to_thread(check_file, spare)
                if damage is not None:
                    raise ValueError(f"its copy is not whole either: {damage}")
                if agreed is not None and (spare.stat().st_size, digest) != agreed:
                    raise ValueError("its copy is not the one the peers agree on")
                async with self._input_lock if log_.stream else self._lock:
                    if self._busy() or not self._still_the_one(log_, file, path, checked):
                        return  # collected or rewritten meanwhile: nothing to mend
                    os.chmod(spare, checked.st_mode)
                    os.replace(spare, path)
                    fsync_directory(log_.directory)
                    if log_.stream:
                        self._input_mended(log_.stream)
                self._checked.pop(path, None)
                log.warning("%s mended from %s", what, name)
                return
            except (grpc.aio.AioRpcError, ValueError, OSError) as exc:
                log.warning("mending %s from %s: %s", what, name, exc)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    spare.unlink()
        log.error("no peer could mend %s: tried again at the next pass", what)

    async def _copy_from(
        self, log_: ScrubbedLog, channel: grpc.aio.Channel, start: int, spare: Path
    ) -> None:
        """Write the peer's file that begins at ``start`` to ``spare``, synced: pulled
        from its merged log, or fetched from its input copy of ``log_.stream``."""
        if log_.stream:
            request = peer_pb2.FetchRequest(
                stream=log_.stream, position=start, session=self._session(), pieces=True
            )
            call = peer_pb2_grpc.PeerStub(channel).Fetch(request)
        else:
            pull = pull_pb2.PullRequest(position=start, pieces=True)
            call = pull_pb2_grpc.PullStub(channel).Pull(pull)
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
                        await asyncio.to_thread(os.fsync, out.fileno())  # not on the loop
                        return
            raise ValueError("its stream ended before the file did")
        finally:
            call.cancel()
