"""One asyncio event loop per process, in a daemon thread, for clients' gRPC work.

Publishers' replicators and subscribers' replication run their asyncio code here,
called from the user's threads with :func:`run_soon` or
``asyncio.run_coroutine_threadsafe(coroutine, background_loop())``.

Why one loop that lives as long as the process: grpc.aio binds its completion queue
to the loops it has seen and may still post a completion to one after its last call
ended; a loop closed earlier would then be written to after it closed. At exit the
loop cancels what still runs (closing its channels) and stops, after every exit hook
registered by its users (publishers closing) has run, so no gRPC call is left in a thread
frozen while the interpreter shuts down. A child made by ``fork`` gets a
loop of its own on first use.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading

__all__ = ["background_loop", "in_background_loop"]

_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_pid = 0
_lock = threading.Lock()


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's background loop, started on first use."""
    global _loop, _thread, _pid
    with _lock:
        if _loop is None or _pid != os.getpid():  # none yet, or inherited by a fork
            _loop = asyncio.new_event_loop()
            _pid = os.getpid()
            _thread = threading.Thread(
                target=_loop.run_forever, name="rt-background-loop", daemon=True
            )
            _thread.start()
        return _loop


def in_background_loop() -> bool:
    """True when called from the background loop's own thread."""
    return threading.current_thread() is _thread


def _stop() -> None:
    loop, thread = _loop, _thread
    if loop is None or thread is None or _pid != os.getpid():
        return

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        loop.stop()

    if thread.is_alive() and not loop.is_closed():
        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(cancel_all(), loop)
            thread.join(2.0)
    _forget(loop)


def _forget(loop: asyncio.AbstractEventLoop) -> None:
    """A stopped loop is not handed out again: a later user gets a new one."""
    global _loop, _thread
    with _lock:
        if _loop is loop:
            _loop, _thread = None, None


# Registered at import, before any user of the loop registers its own exit hook (a
# publisher closing, which needs the loop to send what it holds): atexit runs hooks in
# reverse order, so this one runs last.
atexit.register(_stop)
