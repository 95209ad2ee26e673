"""The node's REST API (FastAPI), served by the supervisor on the node's ``rest`` address.

The console page at ``/`` (``console``), reading ``GET /cluster``: every node's status
and reset state. OpenAPI at ``/docs`` (and ``/openapi.json``). Paths take an optional
trailing slash, as RT's documentation writes them (``GET resetStatus/``).

- ``GET /hardReset`` (or POST): reset the whole cluster from this node (``reset``
  module). 200 ``{"hostname", "status": "Resetting"}``; 503 ``{"hostname", "status":
  "Not available for Reset", "reason"}`` while a reset holds this node or a peer (or a
  peer refuses: disabled there, another token); 409 where no reset can run (the cluster
  description names no session file);
  403 with the same body when the reset API is disabled here (``RT_RESET_API=0``);
  with ``RT_RESET_TOKEN`` set, 401 without ``Authorization: Bearer <token>`` and 403
  with another token.
- ``GET /softReset`` (or POST): this node alone deletes its state and rejoins from its
  peers (``Resetter.soft_reset``); guarded and answered as ``/hardReset``; 503 until every
  peer serves and has applied what this node committed, 409 on a node without peers.
- ``GET /resetStatus``: ``UP`` when the node serves and no reset runs; the step under
  way during a reset; ``Not available for Reset`` while reserved for one or when the
  reset API is disabled; ``DOWN`` (with a ``reason``) when the sequencer does not
  serve: a hard reset can still be started then, it is the remedy for a broken stream.
- ``GET /health``: 200 with the children's state when the sequencer answers its gRPC
  health check SERVING; 503 with the reason otherwise; ``last_reset_error`` when the
  latest reset on this node failed a step.
- ``GET /latestOutPosition``: the end of the node's merged log and its session.
- ``GET /rtClients``: the publishers (Push calls) and subscribers (Pull calls) connected
  to this node: stream, name, address, position, bytes moved and bytes/s, since when.
- ``GET /dedupRtClients``: per topic and origin, the last id merged and the duplicates
  dropped.
- ``GET /logHistory``: the merged log's sessions on this node, each with its first
  position held, last position and its files held and collected (a session a hard
  reset emptied holds no bytes), and ``retention``: the archiver's policy and its last
  check (``rt_archiver``), and ``collected_before``, the start of the first file held
  after the collected ones.

``/latestOutPosition``, ``/rtClients`` and ``/dedupRtClients`` answer 503 while the
sequencer cannot answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from rtcommon.grpcopts import describe_error
from rtcommon.log import (
    SEAL_SIZE,
    collected_end,
    file_is_sealed,
    file_name,
    file_start,
    is_collected,
    list_log_files,
    next_file,
)
from rtcommon.telemetry import prometheus_text
from rtproto.v1 import admin_pb2

from .console import console_page
from .control import bearer_matches
from .health import Probe
from .reset import (
    NOT_AVAILABLE,
    RESETTING,
    UP,
    ResetBusyError,
    ResetImpossibleError,
    Resetter,
)

__all__ = ["create_app"]

DOWN = "DOWN"


def create_app(
    hostname: str,
    *,
    probe: Callable[[], Awaitable[Probe]],
    status: Callable[[], Awaitable[admin_pb2.NodeStatus]],
    children: Callable[[], Mapping[str, Mapping[str, object]]],
    sequencer_state: Callable[[], str],
    resetter: Resetter,
    token: str,
    out_dir: Path,
    retention: Callable[[], dict] = dict,
    cluster: Callable[[], Awaitable[dict]] | None = None,
    sequencer_metrics: Callable[[], Awaitable[bytes]] | None = None,
) -> FastAPI:
    """The app: ``probe`` checks the sequencer's health, ``status`` asks its
    ``Admin.Status``, ``children`` describes the child processes, ``sequencer_state``
    says in words whether the sequencer process runs; ``resetter`` runs resets, guarded
    by ``token`` when it is not ""; ``out_dir`` is the node's merged log, ``retention``
    its archiver's policy and last check; ``cluster`` gathers the console's view of
    every node; ``sequencer_metrics`` fetches the sequencer's metrics."""
    app = FastAPI(
        title=f"RT supervisor {hostname}",
        description="One RT node's REST API: hard reset, reset status, health, positions.",
        redoc_url=None,
    )

    def answer(status_code: int, status_text: str, **extra: object) -> JSONResponse:
        return JSONResponse({"hostname": hostname, "status": status_text, **extra}, status_code)

    async def authorised(request: Request) -> JSONResponse | None:
        """None if the caller may reset; otherwise the refusal to send."""
        if not resetter.enabled:
            return answer(
                403, NOT_AVAILABLE, reason="the reset API is disabled on this node (RT_RESET_API)"
            )
        header = request.headers.get("authorization")
        if bearer_matches(header, token):
            return None
        response = answer(
            401 if header is None else 403,
            NOT_AVAILABLE,
            reason="this node's reset API needs Authorization: Bearer <token>"
            if header is None
            else "the token given is not this node's reset token",
        )
        if header is None:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    def route(path: str, methods: tuple[str, ...] = ("GET", "HEAD"), **kwargs):
        """``methods`` (a read: GET and HEAD, for monitors that probe with HEAD) on ``path``
        and ``path/``, the second left out of the OpenAPI page."""

        def register(handler):
            app.api_route(path, methods=list(methods), **kwargs)(handler)
            app.api_route(path + "/", methods=list(methods), include_in_schema=False)(handler)
            return handler

        return register

    reset_responses = {
        503: {"description": "a reset is under way, or the peers are not ready for it"},
        409: {"description": "no reset can run here (no session store, no peers)"},
        401: {"description": "a reset token is configured and none was given"},
        403: {"description": "the reset API is disabled, or the token is wrong"},
    }

    def reset_endpoint(path: str, start: Callable[[], Awaitable[None]], summary: str) -> None:
        """GET (as RT's documentation has it) and POST on ``path`` run ``start``, guarded."""

        async def handler(request: Request) -> JSONResponse:
            refusal = await authorised(request)
            if refusal is not None:
                return refusal
            try:
                await start()
            except ResetBusyError as exc:
                return answer(503, NOT_AVAILABLE, reason=str(exc))
            except ResetImpossibleError as exc:
                return answer(409, NOT_AVAILABLE, reason=str(exc))
            return answer(200, RESETTING)

        route(path, ("GET",), summary=summary, responses=reset_responses)(handler)
        app.post(path, summary=summary, responses=reset_responses)(handler)

    reset_endpoint(
        "/hardReset",
        resetter.hard_reset,
        "Reset the whole cluster: every message of the stream is removed",
    )
    reset_endpoint(
        "/softReset",
        resetter.soft_reset,
        "This node alone drops its state and rejoins from its peers",
    )

    @route("/resetStatus", summary="UP, the reset step under way, or Not available for Reset")
    async def reset_status() -> JSONResponse:
        step = resetter.status()
        if step is not None:
            return answer(200, step)
        result = await probe()
        if result.serving:
            return answer(200, UP)
        return answer(200, DOWN, reason=f"{result.reason}; {sequencer_state()}")

    @app.get("/metrics", summary="Prometheus metrics of the supervisor and its sequencer")
    async def prometheus() -> Response:
        text = prometheus_text()
        if sequencer_metrics is not None:
            try:
                text += await sequencer_metrics()
            except grpc.aio.AioRpcError as exc:  # the supervisor's own still answer
                text += f"# the sequencer's metrics: {describe_error(exc)}\n".encode()
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @route("/health", summary="200 when the sequencer serves, 503 otherwise")
    async def health() -> JSONResponse:
        result = await probe()
        body: dict[str, object] = {"sequencer": result.status}
        if not result.serving:
            body["reason"] = f"{result.reason}; {sequencer_state()}"
        body["reset"] = resetter.status() or UP
        if resetter.last_error:  # a failed step is logged, and told here until the next
            body["last_reset_error"] = resetter.last_error
        body["children"] = dict(children())
        return answer(200 if result.serving else 503, UP if result.serving else DOWN, **body)

    async def node_status() -> admin_pb2.NodeStatus | JSONResponse:
        try:
            return await status()
        except grpc.aio.AioRpcError as exc:
            return answer(503, DOWN, reason=f"the sequencer cannot answer: {describe_error(exc)}")

    @route("/latestOutPosition", summary="The end of this node's merged log")
    async def latest_out_position() -> JSONResponse:
        reply = await node_status()
        if isinstance(reply, JSONResponse):
            return reply
        return answer(
            200,
            UP,
            position=reply.out_position,
            session=reply.session,
            first_position=reply.out_start,
        )

    @route("/dedupRtClients", summary="Per topic and origin: last id merged, duplicates dropped")
    async def dedup_rt_clients() -> JSONResponse:
        reply = await node_status()
        if isinstance(reply, JSONResponse):
            return reply
        clients = [
            {
                "topic": entry.topic,
                "origin": entry.origin,
                "last_id": entry.watermark,
                "dropped": entry.dropped,
            }
            for entry in reply.dedup
        ]
        return answer(200, UP, clients=clients)

    @route("/rtClients", summary="Publishers and subscribers connected to this node")
    async def rt_clients() -> JSONResponse:
        reply = await node_status()
        if isinstance(reply, JSONResponse):
            return reply
        clients = [
            {
                "kind": client.kind,
                "stream": client.stream,
                "name": client.name,
                "peer": client.peer,
                "position": client.position,
                "bytes": client.bytes,
                "bytes_per_second": client.bytes_per_second,
                "since": datetime.fromtimestamp(client.since, UTC).isoformat(),
            }
            for client in reply.clients
        ]
        return answer(200, UP, clients=clients)

    @app.get("/", response_class=HTMLResponse, summary="The console page")
    async def console() -> HTMLResponse:
        return HTMLResponse(console_page())

    @route("/cluster", summary="Every node's status and reset state, as the console shows them")
    async def cluster_state() -> JSONResponse:
        if cluster is None:
            return answer(404, UP, reason="no cluster view here")
        return JSONResponse(await cluster())

    @route(
        "/logHistory",
        summary="The merged log's sessions on this node, first to last, and its retention",
    )
    async def log_history() -> JSONResponse:
        collected = {"collected_before": collected_end(out_dir)}
        return answer(200, UP, sessions=_sessions(out_dir), retention=retention() | collected)

    return app


def _sessions(out_dir: Path) -> list[dict[str, int]]:
    """Each session of the merged log in ``out_dir``: its first position held and last
    position (the end of its last record), files held and collected (emptied by the
    retention policy), and bytes of records held."""
    sessions: dict[int, dict[str, int]] = {}
    for session, roll in list_log_files(out_dir):
        path = out_dir / file_name(session, roll)
        try:
            size = path.stat().st_size
            if size and file_is_sealed(path):
                size -= SEAL_SIZE
        except FileNotFoundError:
            continue
        entry = sessions.setdefault(
            session,
            {
                "session": session,
                "first_position": file_start(session, roll),
                "files": 0,
                "collected_files": 0,
                "bytes": 0,
            },
        )
        if is_collected(path):
            entry["collected_files"] += 1
            entry["first_position"] = file_start(*next_file(session, roll))
        else:
            entry["files"] += 1
        entry["bytes"] += size
        entry["last_position"] = file_start(session, roll) + size
    return list(sessions.values())
