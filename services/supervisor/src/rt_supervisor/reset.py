"""The hard reset: the steps on one node, their orchestration across the cluster, and
the node's reset state (what ``/resetStatus`` shows).

A hard reset wipes a stream (DESIGN section 8). On every node, in order: stop the
services but the supervisor; delete the contents of ``s/state`` and ``s/in``; empty
(truncate, never delete) the files of ``s/out``; raise the session number in the
session store (outside the volumes); start the services again, whose merged log then
begins at ``log.<session>.0``.

**Orchestration.** The node asked (``GET /hardReset``) is the coordinator:

1. it checks the session store can be raised, then reserves itself and every peer it
   reaches (``Control.Reserve``); a peer that refuses (held by a reset, its API
   disabled, another token) stops the request (503) with nothing touched;
2. every reserved node wipes itself (``Control.Wipe``, steps 1-3 above), at once;
3. only when all have stopped does the coordinator raise the session: none of them runs
   the new session while another still runs the old (a node left out may: below);
4. every node restarts (``Control.Restart``) and reports ``UP`` once its sequencer
   serves.

**Faults.** Each step is idempotent, and the session store is the truth:

- a node down or cut off during the reset is left out; when it returns with data of
  an older session than the store's, its supervisor wipes it before starting the
  sequencer (at start, and by watching the store every ``WATCH_INTERVAL`` while it
  runs), and until then peers refuse its Raft and gossip (they name their session);
- a node that dies mid-wipe finds its marker (``s/.reset``, naming the new session)
  when it starts again and completes its reset before anything else;
- a reservation no wipe follows lapses after ``RESERVE_LEASE``; a wiped node no
  restart reaches (the coordinator died) raises the session itself after
  ``RESTART_LEASE`` and restarts: raising is idempotent, all raise to one number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import tenacity

from rtcommon.cluster import NodeSpec
from rtcommon.errors import RTError
from rtcommon.log import file_name, fsync_directory, list_log_files, write_file_atomically
from rtcommon.session import SessionStore, SessionStoreError, missed_reset

__all__ = [
    "DELETING_INPUT",
    "DELETING_STATE",
    "INCREMENTING",
    "NOT_AVAILABLE",
    "RESETTING",
    "RESTARTING",
    "STEPS",
    "STOPPING",
    "TRUNCATING_OUTPUT",
    "UP",
    "Peer",
    "ResetBusyError",
    "ResetImpossibleError",
    "ResetOrder",
    "Resetter",
    "Services",
    "empty_directory",
    "wipe_volume",
]

log = logging.getLogger("rt_supervisor.reset")

UP = "UP"
RESETTING = "Resetting"
NOT_AVAILABLE = "Not available for Reset"
STOPPING = "Stopping services"
DELETING_STATE = "Deleting state"
DELETING_INPUT = "Deleting input logs"
TRUNCATING_OUTPUT = "Truncating output logs"
INCREMENTING = "Incrementing session"
RESTARTING = "Restarting"
#: The steps ``/resetStatus`` shows, in order.
STEPS = (STOPPING, DELETING_STATE, DELETING_INPUT, TRUNCATING_OUTPUT, INCREMENTING, RESTARTING)

RESERVE_LEASE = 15.0
#: How long a failing session store is retried before the node restarts regardless.
RAISE_RETRY_FOR = 10.0
RESTART_LEASE = 60.0
#: How long a restarted node waits for its sequencer to serve before it reports UP.
SERVING_TIMEOUT = 30.0
WATCH_INTERVAL = 2.0
MARKER = ".reset"


class ResetBusyError(RTError):
    """A reset cannot start now: this node or a peer is held by another, or the peers
    are not ready for it; it may later."""


class ResetImpossibleError(RTError):
    """A reset cannot start here at all (no session store, no peers to rejoin from)."""


class ResetOrder(Protocol):
    reset_id: str
    session: int
    coordinator: str


class _Order:
    def __init__(self, reset_id: str, session: int, coordinator: str) -> None:
        self.reset_id, self.session, self.coordinator = reset_id, session, coordinator


class Services(Protocol):
    """The node's services but the supervisor (its child processes)."""

    async def stop(self) -> None: ...

    def start(self) -> None: ...

    async def serving(self) -> bool:
        """Whether the sequencer answers its health check SERVING."""
        ...


class Peer(Protocol):
    """Another node's supervisor, reached over ``rtproto.v1.Control``."""

    name: str

    async def reserve(self, order: ResetOrder) -> str:
        """ "" if reserved, else why not (held by another reset, reset API disabled);
        raises if the peer cannot be reached."""
        ...

    async def release(self, order: ResetOrder) -> None: ...

    def wipe(self, order: ResetOrder) -> AsyncIterator[str]: ...

    async def restart(self, order: ResetOrder) -> None: ...


def empty_directory(directory: Path) -> None:
    """Delete what ``directory`` holds (it stays, empty), durably."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in list(directory.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    fsync_directory(directory)


def wipe_volume(data: Path, on_step: Callable[[str], None]) -> None:
    """Steps 2-4 of the reset on a node's volume: delete what ``s/state`` and ``s/in``
    hold, empty the log files of ``s/out`` (its ``.session`` stays, so a reader still
    knows the files' session); each change made durable before the next step."""
    volume = data / "s"
    for step, part in ((DELETING_STATE, "state"), (DELETING_INPUT, "in")):
        on_step(step)
        empty_directory(volume / part)
    on_step(TRUNCATING_OUTPUT)
    out = volume / "out"
    out.mkdir(parents=True, exist_ok=True)
    for file in list_log_files(out):
        fd = os.open(out / file_name(*file), os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        finally:
            os.close(fd)


class Resetter:
    """One node's part in hard resets, as coordinator or participant."""

    def __init__(
        self,
        node: NodeSpec,
        store: SessionStore,
        services: Services,
        peers: Sequence[Peer],
        *,
        enabled: bool = True,
        soft_reset_check: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.node = node
        self.data = Path(node.data)
        self.store = store
        self.services = services
        self.peers = list(peers)
        self.enabled = enabled
        #: "" when the peers can take over this node's state (a soft reset), else why not
        self.soft_reset_check = soft_reset_check
        self.step: str | None = None  #: the step under way, None when no reset runs
        #: what went wrong in the latest reset, if anything (``/health`` tells it)
        self.last_error = ""
        self._held_by: str | None = None  # the reset id this node is reserved for
        self._lease: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def marker(self) -> Path:
        return self.data / "s" / MARKER

    @property
    def busy(self) -> bool:
        return self._held_by is not None

    def status(self) -> str | None:
        """The step under way, ``Not available for Reset`` while reserved or disabled, or
        None: no reset (the caller tells UP from DOWN)."""
        if self.step is not None:
            return self.step
        if self.busy or not self.enabled:
            return NOT_AVAILABLE
        return None

    # -- the coordinator -------------------------------------------------------------------

    async def hard_reset(self) -> None:
        """Reserve this node and every peer reached, then run the reset in the background.
        Raises :class:`ResetBusyError` (nothing touched) if any is held by another reset."""
        if self.busy:
            raise ResetBusyError(f"{self.node.name} is already resetting")
        try:
            self.store.check()  # before anything is touched: raising it must not fail later
            order = _Order(uuid.uuid4().hex, self.store.read() + 1, self.node.name)
        except SessionStoreError as exc:
            raise ResetImpossibleError(str(exc)) from exc
        self._reserve(order)
        replies = await asyncio.gather(
            *(peer.reserve(order) for peer in self.peers), return_exceptions=True
        )
        taking_part: list[Peer] = []
        refused: list[str] = []
        for peer, reply in zip(self.peers, replies, strict=True):
            if isinstance(reply, BaseException):
                log.warning(
                    "hard reset: %s cannot be reached (%s): it is wiped when it returns",
                    peer.name,
                    reply,
                )
            elif reply:
                refused.append(f"{peer.name}: {reply}")
            else:
                taking_part.append(peer)
        if refused:
            await asyncio.gather(
                *(peer.release(order) for peer in taking_part), return_exceptions=True
            )
            self.release(order.reset_id)
            raise ResetBusyError("; ".join(refused))
        log.warning(
            "hard reset %s: the cluster goes to session %d (nodes: %s)",
            order.reset_id[:8],
            order.session,
            ", ".join([self.node.name, *(peer.name for peer in taking_part)]),
        )
        self._spawn(self._orchestrate(order, taking_part), "reset")

    async def _orchestrate(self, order: ResetOrder, peers: list[Peer]) -> None:
        async def wipe_peer(peer: Peer) -> Peer:
            async for step in peer.wipe(order):
                log.info("hard reset: %s: %s", peer.name, step)
            return peer

        results = await asyncio.gather(
            self._wipe(order), *(wipe_peer(peer) for peer in peers), return_exceptions=True
        )
        if isinstance(results[0], BaseException):
            self.last_error = f"wiping {self.node.name}: {results[0]}"
            log.error("hard reset: %s", self.last_error)
        wiped = [peer for peer in results[1:] if not isinstance(peer, BaseException)]
        for peer, result in zip(peers, results[1:], strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "hard reset: %s failed to wipe (%s): it completes its reset when it returns",
                    peer.name,
                    result,
                )
        restarts = await asyncio.gather(
            self._restart(order), *(peer.restart(order) for peer in wiped), return_exceptions=True
        )
        for name, result in zip(
            [self.node.name, *(peer.name for peer in wiped)], restarts, strict=True
        ):
            if isinstance(result, BaseException):
                log.warning("hard reset: restarting %s failed: %s", name, result)
        log.warning("hard reset %s: done, session %d", order.reset_id[:8], order.session)

    # -- the soft reset ---------------------------------------------------------------------

    async def soft_reset(self) -> None:
        """This node alone rejoins from its peers (it lost ``s/state``, or fell hopelessly
        behind): stop its services, delete its state (Raft log and hard state, checkpoint),
        keep its input copies and merged log, start again. The sequencer then starts above
        its peers' terms and catches up from the leader. Raises :class:`ResetBusyError`
        while any reset holds the node, or without peers to rejoin from."""
        if not self.peers:
            raise ResetImpossibleError(
                f"{self.node.name} has no peers to rejoin from: a soft reset would lose"
                " what only its state knows"
            )
        if self.busy:
            raise ResetBusyError(f"{self.node.name} is already resetting")
        self._held_by = f"soft-{uuid.uuid4().hex}"
        refusal = await self.soft_reset_check() if self.soft_reset_check else ""
        if refusal:
            self._held_by = None
            raise ResetBusyError(refusal)
        self._spawn(self._soft_reset(), "soft reset")

    async def _soft_reset(self) -> None:
        log.warning("soft reset: %s rejoins from its peers", self.node.name)
        self.last_error = ""
        try:
            self.step = STOPPING
            await self.services.stop()
            self.step = DELETING_STATE
            await asyncio.to_thread(empty_directory, self.data / "s" / "state")
            self.step = RESTARTING
            self.services.start()
            await self._wait_serving()
        except Exception as exc:
            self.last_error = f"soft reset: {exc}"
            log.error("%s", self.last_error)
        finally:
            self.services.start()  # whatever failed, the node does not stay down
            self.step, self._held_by = None, None
        log.warning("soft reset: done")

    # -- a participant (the coordinator too) ---------------------------------------------

    def reserve(self, order: ResetOrder) -> str:
        """Hold this node for ``order``'s reset: "", or why it cannot be."""
        if not self.enabled:
            return "the reset API is disabled there (RT_RESET_API)"
        if self._held_by not in (None, order.reset_id):
            return "held by another reset"
        self._reserve(order)
        return ""

    def _reserve(self, order: ResetOrder) -> None:
        self._held_by = order.reset_id
        self._set_lease(RESERVE_LEASE, lambda: self.release(order.reset_id))

    def release(self, reset_id: str) -> None:
        """Drop a reservation no wipe followed."""
        if self._held_by == reset_id and self.step is None:
            self._held_by = None
            self._cancel_lease()

    async def wipe(self, order: ResetOrder) -> AsyncIterator[str]:
        """Steps 1-3 here, each step's name as it begins; then wait for :meth:`restart`
        (or raise the session and restart after ``RESTART_LEASE``)."""
        if self._held_by != order.reset_id:
            raise ResetBusyError(f"{self.node.name} is not reserved for this reset")
        if self.step is not None:
            raise ResetBusyError(f"{self.node.name} is already wiping for this reset")
        steps: asyncio.Queue[str | None] = asyncio.Queue()
        task = self._spawn(self._wipe(order, steps.put_nowait), "reset wipe")
        task.add_done_callback(lambda _: steps.put_nowait(None))
        try:
            while (step := await steps.get()) is not None:
                yield step
            await task
        finally:
            # Restarted even after a failed wipe: the sequencer then refuses the stale
            # data, and the watch wipes again.
            self._set_lease(RESTART_LEASE, lambda: self._restart_alone(order))

    def _restart_alone(self, order: ResetOrder) -> None:
        log.warning(
            "hard reset: no restart came from %s within %.0f s: restarting in session %d",
            order.coordinator,
            RESTART_LEASE,
            order.session,
        )
        self._spawn(self._restart(order), "reset restart")

    async def restart(self, order: ResetOrder) -> None:
        """Raise the session to ``order``'s and start the services in it."""
        if self._held_by != order.reset_id:
            raise ResetBusyError(f"{self.node.name} is not held by this reset")
        await self._restart(order)

    async def _wipe(self, order: ResetOrder, on_step: Callable[[str], None] | None = None) -> None:
        def step(name: str) -> None:
            self.step = name
            log.info("hard reset: %s", name)
            if on_step is not None:
                on_step(name)

        self._cancel_lease()
        self.last_error = ""  # a new reset: the last one's failure is history
        # Written first: a supervisor that dies from here on completes the reset at start.
        write_file_atomically(self.marker, b"%d\n" % order.session)
        step(STOPPING)
        await self.services.stop()
        await asyncio.to_thread(wipe_volume, self.data, step)
        step(INCREMENTING)

    async def _restart(self, order: ResetOrder) -> None:
        self._cancel_lease()
        try:
            self.step = INCREMENTING
            await self._raise_session(order.session)
            # Before the start: once the sequencer runs in the new session, a crash must
            # not wipe it again (it may have voted there).
            self.marker.unlink(missing_ok=True)
        except Exception as exc:
            self.last_error = f"raising the session to {order.session}: {exc}"
            log.error("hard reset: %s", self.last_error)
        finally:
            self.step = RESTARTING
            # Started even if the raise failed: a sequencer refuses data of an older
            # session than the store's, and the watch wipes again.
            self.services.start()
        try:
            await self._wait_serving()
        finally:
            self.step = None
            self._held_by = None

    async def _raise_session(self, session: int) -> None:
        """Raise the store to ``session``, retrying a store that fails for a while."""
        async for attempt in tenacity.AsyncRetrying(
            stop=tenacity.stop_after_delay(RAISE_RETRY_FOR),
            wait=tenacity.wait_exponential(multiplier=0.1, max=2.0),
            retry=tenacity.retry_if_exception_type(SessionStoreError),
            reraise=True,
        ):
            with attempt:
                self.store.raise_to(session)

    async def _wait_serving(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SERVING_TIMEOUT
        while loop.time() < deadline and not await self.services.serving():
            await asyncio.sleep(0.2)

    # -- a node that missed a reset --------------------------------------------------------

    def recover_at_start(self) -> None:
        """Before the services first start: complete a reset this supervisor died in, or
        wipe data of a session the cluster was reset from while this node was away."""
        pending = self._pending_session()
        if pending is not None:
            log.warning("completing a hard reset to session %d interrupted here", pending)
            wipe_volume(self.data, lambda step: log.info("hard reset: %s", step))
            self.store.raise_to(pending)
            self.marker.unlink(missing_ok=True)
            return
        session = self.store.read()
        stale = missed_reset(self.data, session)
        if stale is not None:
            log.warning(
                "this node holds data of session %d, but the cluster was reset to session %d"
                " while it was away: wiping it before it rejoins",
                stale,
                session,
            )
            wipe_volume(self.data, lambda step: log.info("hard reset: %s", step))

    def _pending_session(self) -> int | None:
        try:
            return int(self.marker.read_text().strip())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("unreadable reset marker %s (%s): ignored", self.marker, exc)
            return None

    async def watch(self) -> None:
        """While the node runs: a reset raised the session past this node's data (it
        was cut off from the coordinator) -> stop, wipe, restart."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.busy:
                continue
            try:
                session = self.store.read()
                stale = missed_reset(self.data, session)
            except (SessionStoreError, OSError) as exc:
                log.warning("cannot compare this node's session with the store's: %s", exc)
                continue
            if stale is None:
                continue
            log.warning(
                "the cluster was reset to session %d; this node still runs session %d: wiping"
                " it and restarting",
                session,
                stale,
            )
            order = _Order(uuid.uuid4().hex, session, self.node.name)
            self._reserve(order)
            try:
                await self._wipe(order)
                await self._restart(order)
            except Exception as exc:  # the next look tries again
                self.last_error = f"catching up with the reset: {exc}"
                log.error("%s", self.last_error)
                self.services.start()
                self.step, self._held_by = None, None

    # -- leases ----------------------------------------------------------------------------

    def _set_lease(self, seconds: float, on_expiry: Callable[[], None]) -> None:
        self._cancel_lease()
        self._lease = asyncio.get_running_loop().call_later(seconds, on_expiry)

    def _cancel_lease(self) -> None:
        if self._lease is not None:
            self._lease.cancel()
            self._lease = None

    def _spawn(self, coroutine: Awaitable[None], name: str) -> asyncio.Task[None]:
        """Run ``coroutine`` as a task kept until it ends, its failure logged."""
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_ended)
        return task

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.last_error = f"{task.get_name()}: {task.exception()}"
            log.error("%s failed: %s", task.get_name(), task.exception())

    async def close(self) -> None:
        self._cancel_lease()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
