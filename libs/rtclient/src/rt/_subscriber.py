"""``rt.Subscriber``: a local copy of the merged log, and delivery from it.

A subscriber is a thin facade over three parts: where it starts (``_sub_start``),
replication (``_sub_replication``) and delivery (``_sub_delivery``):

- **replication**, a task on the process's background loop (one asyncio loop in
  one daemon thread, shared by every subscriber, with ``grpc.aio``): pulls the
  merged log from one node (``rtproto.v1.Pull``) into a
  :class:`~rtcommon.log.LogMirror` in ``log_dir``. It asks for the mirror's end
  when the copy holds data, else for the starting ``position`` (or the node's
  START or END). On any error (node down, stream broken, a chunk that does not
  continue the copy) it moves on to the next node and resumes from the mirror's
  end, backing off exponentially (``rtcommon.follow``, capped at 2 s; the backoff
  starts afresh once a stream has made progress). Every node's merged log is
  byte-identical, so the copy does not care which node served which bytes.
- **delivery**, a thread of its own: a :class:`~rtcommon.log.LogReader` on the
  local copy calls ``on_message(record, position)`` for each record and
  ``on_event(kind, (a, b))`` for each ``badtail``/``reset`` event, then goes on
  from ``b``. Replication wakes it in-process after each write; it also polls
  (every 0.25 s), so changes made by others are seen too.

With ``cluster=None`` there is no replication: the subscriber delivers from an
existing local log (another process may be writing it), like subscribing to a
full-path topic in the original RT.

Contract details:

- The message is the :class:`~rtcommon.log.Record` (``.data`` decodes the
  payload on access; ``.origin``, ``.id``, ``.ts``, ``.tags``, ``.position``).
  ``position`` is the position just after it: a new subscriber started from it
  delivers exactly the rest.
- ``position``: ``None`` or ``"start"`` start at the first position the copy (or
  else the node) holds; ``"end"`` at the node's end now (or, when the local copy
  already holds data, at the copy's end); an integer at that position.
- A filter (``"upd"``, ``("upd", "trade")``) compares tag bytes in the record
  header; a record that does not match is skipped without being decoded.
- Callbacks run on the delivery thread, one at a time. ``pause()`` and
  ``unsubscribe()`` may be called from any thread, including from inside a
  callback; once they return, no further callback starts (called from another
  thread they wait for the callback in progress, so a callback must not block
  on a thread that is calling them).
- **A callback that raises stops the subscriber**: the exception is logged and
  kept in :attr:`Subscriber.error`, delivery and replication stop,
  :attr:`Subscriber.position` stays before the message that failed (resuming
  from it retries that message) and :meth:`Subscriber.join` returns.
  :meth:`Subscriber.unsubscribe` does not raise it. Fatal replication errors
  (a position past the end of the merged log on every node, a malformed
  position) stop the subscriber the same way, with a :class:`SubscriberError`.
- Garbage collection, by ``REPLICATOR_EXCHANGE_ARCHIVED`` (:attr:`Subscriber.gc_mode`):
  unset, the copy follows the cluster's truncation (files the cluster collected are
  collected in the copy too, once delivery has passed them); ``0`` opts out (the owner
  prunes the copy with :meth:`Subscriber.prune` or ``rt.prune``); ``1`` makes this the
  **lead subscriber**: it follows the cluster, and its :meth:`Subscriber.prune` also
  collects the cluster's merged log (``Admin.Prune``), and so every other following
  subscriber's copy, ahead of the archiver's policy.
- Records the cluster collected before this copy had them (a start position, or a copy
  left behind for longer than the retention policy keeps) are a ``collected`` event
  ``(position asked or reached, first position held)``; delivery goes on after them.

A hard reset of the cluster is mirrored into the copy, so delivery reports a
``reset`` event and goes on in the new session (``_sub_replication`` says how).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from rtcommon import env
from rtcommon.admin import prune_cluster
from rtcommon.background import background_loop, in_background_loop
from rtcommon.cluster import ClusterSpec, NodeSpec, claim_for_cluster
from rtcommon.log import COLLECTED, RESET, TagFilter, check_position

from ._cluster import Cluster
from ._errors import PositionOutOfRangeError, SubscriberError
from ._prune import prune
from ._sub_delivery import Delivery, OnEvent, OnMessage
from ._sub_replication import Replication
from ._sub_start import END, START, Start

__all__ = ["END", "START", "PositionOutOfRangeError", "Subscriber", "SubscriberError"]

#: Garbage-collection modes (``REPLICATOR_EXCHANGE_ARCHIVED``: unset, "0", "1").
FOLLOW, OPT_OUT, LEAD = "follow", "opt-out", "lead"
#: How long one node may take to answer a lead subscriber's prune.
LEAD_PRUNE_TIMEOUT = 15.0

log = logging.getLogger("rt.subscriber")

#: The longest the delivery thread sleeps before looking at the copy again without a wake-up.
IDLE_POLL = 0.25
#: Without in-process replication, a local log is watched with inotify in slices this long.
LOCAL_POLL = 0.05


class Subscriber:
    """Replicates the merged log into ``log_dir`` and delivers it from there.

    ``cluster``: an :class:`rt.Cluster`, a ``cluster.json`` path, a list of node
    addresses, or ``None`` to deliver from an existing local log without
    replication. ``log_dir`` defaults to ``<topic or cluster name>/`` in the cluster's own
    folder under ``$RT_LOG_PATH`` (``<cluster name>-<cluster id>/``); a copy records the
    cluster it holds, and another cluster refuses it (``ClusterMismatchError``).
    ``node`` is the id of the node to pull from first (default: one at random).
    The module docstring gives the delivery contract.
    """

    def __init__(
        self,
        cluster: Cluster | ClusterSpec | Sequence[str] | str | os.PathLike[str] | None,
        log_dir: str | os.PathLike[str] | None = None,
        position: int | str | None = None,
        on_message: OnMessage | None = None,
        on_event: OnEvent | None = None,
        filter: str | Sequence[str] | TagFilter | None = None,
        *,
        topic: str | None = None,
        node: int | None = None,
    ) -> None:
        self.cluster = None if cluster is None else Cluster.of(cluster)
        settings = env.settings()
        if log_dir is None:
            if self.cluster is None and topic is None:
                raise ValueError("a subscriber without a cluster needs a log_dir (or a topic)")
            if self.cluster is not None:
                parent = self.cluster.spec.client_folder(settings.log_path)
                log_dir = parent / (topic or self.cluster.name)
            else:
                log_dir = settings.log_path / topic  # type: ignore[operator]
        self.log_dir = Path(log_dir)
        if self.cluster is not None:  # a copy of one cluster's merged log, never another's
            claim_for_cluster(self.log_dir, self.cluster.spec, "the subscriber's copy")
        #: What the stream is called in messages: the topic, else the cluster's name.
        self.topic = topic or (self.cluster.name if self.cluster else self.log_dir.name)
        self._start_at = Start(position)
        self.gc_mode = _gc_mode(settings.archived_exchange)
        self._nodes: tuple[NodeSpec, ...] = self.cluster.nodes if self.cluster else ()
        if node is not None and not 0 <= node < len(self._nodes):
            raise ValueError(f"no node {node} in a cluster of {len(self._nodes)} nodes")
        self._first_node = node if node is not None else random.randrange(max(1, len(self._nodes)))
        self._delivery = Delivery(
            self.log_dir,
            self._start_at,
            on_message=on_message,
            on_event=on_event or self._log_event,
            tag_filter=_as_filter(filter),
            replicated=self.cluster is not None,
        )

        #: The exception that stopped the subscriber, or None.
        self.error: BaseException | None = None

        # Control of the delivery thread: every change bumps _control and sets _wake; the
        # delivery thread acknowledges a change once it is between callbacks.
        self._control_lock = threading.Condition()
        self._control = 0
        self._acknowledged = 0
        self._paused = False
        self._stopping = False
        self._wake = threading.Event()

        self._started = False
        self._replication: Replication | None = None
        self._delivery_thread: threading.Thread | None = None
        self._delivery_done = False
        self._replication_task: asyncio.Task[None] | None = None
        self._replication_cancelled = False  # touched only in the background loop
        self._replication_done = threading.Event()

    # -- public ---------------------------------------------------------------------------

    @property
    def position(self) -> int | None:
        """The position after the last message or event delivered (resume from it), or
        the start position until something is delivered; None until the start is known."""
        return self._delivery.position

    @position.setter
    def position(self, value: int | None) -> None:
        self._delivery.position = value

    @property
    def node(self) -> int | None:
        """The id of the node replication pulls from (or will try next)."""
        if self._replication is not None:
            return self._replication.node.id
        return self._nodes[self._first_node].id if self._nodes else None

    @property
    def last_contact(self) -> float | None:
        """When a node last sent anything, a heartbeat included (``time.monotonic()``);
        None before the first, and for a subscriber without a cluster."""
        return self._replication.last_contact if self._replication is not None else None

    @property
    def on_message(self) -> OnMessage | None:
        return self._delivery.on_message

    @on_message.setter
    def on_message(self, callback: OnMessage | None) -> None:
        self._delivery.on_message = callback

    @property
    def on_event(self) -> OnEvent:
        return self._delivery.on_event

    @on_event.setter
    def on_event(self, callback: OnEvent) -> None:
        self._delivery.on_event = callback

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the subscriber stops (unsubscribed or failed)."""
        return self._started and not self._delivery_done

    def start(self) -> Subscriber:
        """Open the local copy and start replication and delivery; return ``self``.

        Raises :class:`~rtcommon.log.LogLockedError` if another live subscriber (or a
        writer) holds ``log_dir``, and :class:`SubscriberError` if ``position`` lies
        before what the local copy holds.
        """
        if self._started:
            raise RuntimeError("a subscriber starts once; create a new one to subscribe again")
        if self._stopping:
            raise RuntimeError("this subscriber was unsubscribed")
        self._started = True
        try:
            if self.cluster is not None:
                self._replication = Replication(
                    self.log_dir,
                    self._nodes,
                    self._start_at,
                    first_node=self._first_node,
                    on_written=self._wake.set,
                    follow_pruned=None if self.gc_mode == OPT_OUT else self._delivered,
                )
            copy_end = self._replication.mirror.end if self._replication is not None else None  # type: ignore[union-attr]
            self._start_at.settle(
                self.log_dir, copy_end=copy_end, replicated=self._replication is not None
            )
            self._delivery.position = self._start_at.position
        except BaseException:
            if self._replication is not None:
                self._replication.close()
            self._replication_done.set()
            self._delivery_done = True
            raise
        if self._replication is not None:
            background_loop().call_soon_threadsafe(self._start_replication)
        else:
            self._replication_done.set()
        self._delivery_thread = threading.Thread(
            target=self._run_delivery, name=f"rt-sub-delivery:{self.log_dir}", daemon=True
        )
        self._delivery_thread.start()
        return self

    def pause(self) -> None:
        """Stop delivery (replication goes on); no callback starts after this returns."""
        seq = self._change(paused=True)
        if threading.current_thread() is not self._delivery_thread:
            with self._control_lock:
                self._control_lock.wait_for(
                    lambda: self._acknowledged >= seq or self._delivery_done or not self._started
                )

    def resume(self) -> None:
        """Deliver again from where delivery paused; nothing is lost or repeated."""
        self._change(paused=False)

    def unsubscribe(self) -> None:
        """Stop delivery and replication and close the local copy. Idempotent; safe from
        inside a callback (no further callback runs after that callback returns)."""
        self._change(stopping=True)
        self._stop_replication()
        if self._delivery_thread is None:
            self._delivery_done = True
        self.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the subscriber stops (unsubscribed, or failed: see :attr:`error`) and
        its local copy is closed; return True if it has."""
        if not self._started:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        thread = self._delivery_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return False
        if not in_background_loop():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._replication_done.wait(left):
                return False
        return self._delivery_done or thread is threading.current_thread()

    def prune(self, position: int) -> list[Path]:
        """Collect the local copy's rolled files wholly before ``position`` (see
        :func:`rt.prune`); the lead subscriber (``REPLICATOR_EXCHANGE_ARCHIVED=1``) also
        has the cluster collect its merged log there, and waits for it (raising
        :class:`SubscriberError` if no node takes it). ``position`` may not lie past what
        was handed to a callback. Returns the local files collected."""
        check_position(position)
        limit = self._delivered()
        if limit is None or position > limit:
            raise ValueError(
                f"cannot prune to {position}: only positions up to {limit} were delivered"
            )
        lead = self.gc_mode == LEAD and self._nodes
        if lead and in_background_loop():
            raise RuntimeError("a lead subscriber's prune waits for the cluster: not from its loop")
        pruned = prune(self.log_dir, position)
        if lead:
            addresses = [node.push for node in self._nodes]
            future = asyncio.run_coroutine_threadsafe(
                prune_cluster(addresses, position, LEAD_PRUNE_TIMEOUT), background_loop()
            )
            try:
                future.result(LEAD_PRUNE_TIMEOUT * len(addresses) + 1)
            except (grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
                raise SubscriberError(
                    f"the cluster did not collect its merged log before {position}: {exc}"
                ) from exc
        return pruned

    def _delivered(self) -> int | None:
        """The furthest position handed to a callback (or the start position)."""
        handed = self._delivery.handed
        return handed if handed is not None else self.position

    def __enter__(self) -> Subscriber:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unsubscribe()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped" if self._started else "new"
        return f"Subscriber({str(self.log_dir)!r}, {state}, position={self.position})"

    # -- control --------------------------------------------------------------------------

    def _change(self, *, paused: bool | None = None, stopping: bool = False) -> int:
        with self._control_lock:
            if paused is not None:
                self._paused = paused
            if stopping:
                self._stopping = True
            self._control += 1
            seq = self._control
        self._wake.set()
        return seq

    def _fail(self, error: BaseException, what: str) -> None:
        if self.error is None:
            self.error = error
        if not isinstance(error, SubscriberError):
            log.error("%s in subscriber of %s; stopping", what, self.log_dir, exc_info=error)
        else:
            log.error("subscriber of %s stops: %s", self.log_dir, error)
        self._change(stopping=True)
        self._stop_replication()

    def _log_event(self, kind: str, positions: tuple[int, int]) -> None:
        before, after = positions
        if kind == RESET:
            log.warning(
                "Reset event in %s (%s), rolling position from %d to %d",
                self.topic,
                self.log_dir,
                before,
                after,
            )
        elif kind == COLLECTED:
            log.warning(
                "Collected event in %s (%s): the records from %d were garbage-collected"
                " before this subscriber had them, rolling position to %d",
                self.topic,
                self.log_dir,
                before,
                after,
            )
        else:
            log.warning(
                "Badtail event in %s (%s): corrupt or torn data at %d, rolling position to %d",
                self.topic,
                self.log_dir,
                before,
                after,
            )

    # -- the delivery thread --------------------------------------------------------------

    def _run_delivery(self) -> None:
        try:
            self._deliver()
        except BaseException as exc:
            self._fail(exc, "delivery failed")
        finally:
            self._delivery.close()
            with self._control_lock:
                self._delivery_done = True
                self._control_lock.notify_all()

    def _deliver(self) -> None:
        """Step delivery between checks of pause and stop; wait while there is nothing."""
        delivery, wake = self._delivery, self._wake
        replicated = self._replication is not None
        seen = -1
        paused = False
        while True:
            if self._control != seen:
                with self._control_lock:
                    seen = self._acknowledged = self._control
                    paused, stopping = self._paused, self._stopping
                    self._control_lock.notify_all()
                if stopping:
                    return
            if paused:
                wake.wait(IDLE_POLL)
                wake.clear()
                continue
            if delivery.needs_read:
                wake.clear()  # before reading: a write after this point wakes the next wait
            if not delivery.step():
                if replicated or delivery.reader is None:
                    wake.wait(IDLE_POLL if replicated else LOCAL_POLL)
                else:
                    delivery.reader.wait(LOCAL_POLL)

    # -- replication, in the background loop (so it needs no lock) ------------------------

    def _start_replication(self) -> None:
        if self._replication_cancelled:
            self._replication_finished()
            return
        task = asyncio.get_running_loop().create_task(self._replicate())
        # A done callback runs even for a task cancelled before its first step.
        task.add_done_callback(lambda _: self._replication_finished())
        self._replication_task = task

    async def _replicate(self) -> None:
        assert self._replication is not None
        try:
            await self._replication.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc, "replication failed")

    def _cancel_replication(self) -> None:
        self._replication_cancelled = True
        if self._replication_task is not None:
            self._replication_task.cancel()

    def _replication_finished(self) -> None:
        if self._replication is not None:
            self._replication.close()
        self._replication_done.set()

    def _stop_replication(self) -> None:
        if self._replication is not None and not self._replication_done.is_set():
            background_loop().call_soon_threadsafe(self._cancel_replication)


def _as_filter(value: str | Sequence[str] | TagFilter | None) -> TagFilter | None:
    if value is None or isinstance(value, TagFilter):
        return value
    if isinstance(value, str):
        return TagFilter((value,))
    return TagFilter(tuple(value))


def _gc_mode(value: str | None) -> str:
    """The garbage-collection mode ``REPLICATOR_EXCHANGE_ARCHIVED`` names."""
    modes = {None: FOLLOW, "": FOLLOW, "0": OPT_OUT, "1": LEAD}
    if value not in modes:
        raise ValueError(
            f"REPLICATOR_EXCHANGE_ARCHIVED={value!r}: unset follows the cluster's truncation,"
            " 0 opts out, 1 makes the lead subscriber"
        )
    return modes[value]
