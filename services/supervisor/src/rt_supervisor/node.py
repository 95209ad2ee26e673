"""One node's supervisor, running: the children, the REST server and the signals.

:func:`run_node` starts the sequencer and archiver (``rt-sequencer`` and ``rt-archiver``
from the same bin folder as this interpreter) and the REST server on an already bound
socket, then waits for SIGTERM or SIGINT. It then stops the children (SIGTERM, then
SIGKILL after the grace period) and the server, and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from rtcommon.cluster import NodeSpec

from .children import Child
from .health import Probe, probe_sequencer
from .rest import create_app

__all__ = ["child_command", "run_node"]

log = logging.getLogger("rt_supervisor")


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: :func:`run_node` owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def child_command(script: str, cluster: Path, node_id: int) -> list[str]:
    """``<bin>/<script> --cluster FILE --node N``, ``<bin>`` being this interpreter's folder."""
    return [
        str(Path(sys.executable).parent / script),
        "--cluster",
        str(cluster),
        "--node",
        str(node_id),
    ]


async def run_node(
    cluster: Path,
    node: NodeSpec,
    rest_socket: socket.socket,
    *,
    grace: float = 5.0,
    probe_timeout: float = 1.0,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info("%s: stopping the node", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    sequencer = Child("sequencer", child_command("rt-sequencer", cluster, node.id))
    archiver = Child("archiver", child_command("rt-archiver", cluster, node.id))
    children = (sequencer, archiver)

    async def probe() -> Probe:
        return await probe_sequencer(node.push, probe_timeout)

    app = create_app(
        node.name,
        probe,
        lambda: {child.name: child.state() for child in children},
        sequencer.describe,
    )
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, log_level="warning", access_log=False
    )
    server = _Server(config)

    for child in children:
        child.start()
    served = asyncio.create_task(server.serve(sockets=[rest_socket]), name="rest")
    log.info("REST on http://%s (sequencer health probed on %s)", node.rest, node.push)
    stopped = asyncio.create_task(stop.wait(), name="stop")
    await asyncio.wait({served, stopped}, return_when=asyncio.FIRST_COMPLETED)

    status = 0
    if served.done():
        log.error("the REST server stopped unexpectedly: %r", served.exception())
        status = 1
    await asyncio.gather(*(child.stop(grace) for child in children))
    server.should_exit = True
    with contextlib.suppress(Exception):
        await served
    stopped.cancel()
    log.info("stopped")
    return status
