"""One node's supervisor, running: the children, the REST server, the Control service
and the signals.

:func:`run_node` completes or catches up with a hard reset the node missed (``reset``),
starts the sequencer and archiver (``rt-sequencer`` and ``rt-archiver`` from the same
bin folder as this interpreter), the REST server on an already bound socket and the
supervisors' gRPC Control service on the node's ``control`` address, then waits for
SIGTERM or SIGINT. It then stops the children (SIGTERM, then SIGKILL after the grace
period) and the servers, and returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import uvicorn

from rt_archiver import RetentionPolicy, read_status
from rtcommon import env
from rtcommon.admin import node_metrics, node_status
from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.errors import RTError
from rtcommon.session import session_store
from rtproto.v1 import control_pb2_grpc

from .children import Child
from .console import cluster_view
from .control import ControlPeer, ControlService
from .health import Probe, probe_sequencer
from .reset import Resetter
from .rest import create_app

__all__ = ["child_command", "run_node"]

log = logging.getLogger("rt_supervisor")


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling: :func:`run_node` owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def child_command(script: str, cluster: Path | str, node_id: int) -> list[str]:
    """``<bin>/<script> --cluster FILE --node N``, ``<bin>`` being this interpreter's folder."""
    return [
        str(Path(sys.executable).parent / script),
        "--cluster",
        str(cluster),
        "--node",
        str(node_id),
    ]


class _ChildServices:
    """The node's children, as the reset sees them."""

    def __init__(self, children: Sequence[Child], grace: float, probe) -> None:
        self.children, self.grace, self._probe = children, grace, probe

    async def stop(self) -> None:
        await asyncio.gather(*(child.stop(self.grace) for child in self.children))

    def start(self) -> None:
        for child in self.children:
            child.start()

    async def serving(self) -> bool:
        return (await self._probe()).serving


async def _serve_control(node: NodeSpec, resetter: Resetter, token: str) -> grpc.aio.Server | None:
    if not node.control:
        log.warning("no control address for %s: it cannot take part in hard resets", node.name)
        return None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    control_pb2_grpc.add_ControlServicer_to_server(ControlService(resetter, token), server)
    if server.add_insecure_port(env.listen_address(node.control)) == 0:
        raise OSError(f"cannot serve Control on {node.control}")
    await server.start()
    return server


async def run_node(
    cluster: Path | str,
    spec: ClusterSpec,
    node: NodeSpec,
    rest_socket: socket.socket,
    *,
    grace: float = 5.0,
    probe_timeout: float = 1.0,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    settings = env.settings()

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

    peers = [
        ControlPeer(peer, settings.reset_token)
        for peer in spec.nodes
        if peer.id != node.id and peer.control
    ]

    async def peers_hold_what_this_node_committed() -> str:
        """ "" if every peer serves and has applied all this node committed (so a soft
        reset loses nothing only this node held), else why not."""
        try:
            committed = (await node_status(node.push, probe_timeout)).commit_index
        except grpc.aio.AioRpcError:
            committed = 0  # its sequencer is down: nothing it says can be checked
        for peer in spec.nodes:
            if peer.id == node.id:
                continue
            try:
                status = await node_status(peer.push, probe_timeout)
            except grpc.aio.AioRpcError as exc:
                return (
                    f"{peer.name} does not answer ({exc.code().name}): a soft reset needs"
                    " every peer"
                )
            if status.leader < 0:
                return f"{peer.name} knows no leader: a soft reset needs a working cluster"
            if status.applied_index < committed:
                return (
                    f"{peer.name} has applied up to {status.applied_index}, this node committed"
                    f" {committed}: try again once it caught up"
                )
        return ""

    resetter = Resetter(
        node,
        session_store(spec),
        _ChildServices(children, grace, probe),
        peers,
        enabled=settings.reset_api,
        soft_reset_check=peers_hold_what_this_node_committed,
    )
    try:
        resetter.recover_at_start()
        control = await _serve_control(node, resetter, settings.reset_token)
    except (OSError, RTError) as exc:
        log.error("cannot start: %s", exc)
        return 1

    app = create_app(
        node.name,
        probe=probe,
        status=lambda: node_status(node.push, probe_timeout),
        children=lambda: {child.name: child.state() for child in children},
        sequencer_state=sequencer.describe,
        resetter=resetter,
        token=settings.reset_token,
        out_dir=Path(node.data) / "s" / "out",
        retention=lambda: (
            read_status(node.data) or {"policy": RetentionPolicy.from_settings(settings).describe()}
        ),
        cluster=lambda: cluster_view(spec, node.name, probe_timeout),
        sequencer_metrics=lambda: node_metrics(node.push, probe_timeout),
    )
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, log_level="warning", access_log=False
    )
    server = _Server(config)

    for child in children:
        child.start()
    served = asyncio.create_task(server.serve(sockets=[rest_socket]), name="rest")
    watch = asyncio.create_task(resetter.watch(), name="reset watch")
    log.info(
        "REST on http://%s, Control on %s (sequencer health probed on %s)",
        node.rest,
        node.control or "-",
        node.push,
    )
    stopped = asyncio.create_task(stop.wait(), name="stop")
    await asyncio.wait({served, stopped}, return_when=asyncio.FIRST_COMPLETED)

    status = 0
    if served.done():
        log.error("the REST server stopped unexpectedly: %r", served.exception())
        status = 1
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    await resetter.close()
    await asyncio.gather(*(child.stop(grace) for child in children))
    if control is not None:
        await control.stop(grace=0.5)
    server.should_exit = True
    with contextlib.suppress(Exception):
        await served
    stopped.cancel()
    log.info("stopped")
    return status
