"""The node's REST API (FastAPI), served by the supervisor on the node's ``rest`` address.

- ``GET /resetStatus``: ``{"hostname": <node name>, "status": "UP"}`` (DESIGN section 8;
  the reset steps appear here once the hard reset exists).
- ``GET /health``: 200 with the children's state when the sequencer answers its gRPC
  health check SERVING; 503 with the reason otherwise.

``/hardReset`` is deliberately absent (404) until the hard reset is implemented.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from .health import Probe

__all__ = ["create_app"]


def create_app(
    hostname: str,
    probe: Callable[[], Awaitable[Probe]],
    children: Callable[[], Mapping[str, Mapping[str, object]]],
    sequencer_state: Callable[[], str],
) -> FastAPI:
    """The app: ``probe`` checks the sequencer, ``children`` describes the child processes,
    ``sequencer_state`` says in words whether the sequencer process runs."""
    app = FastAPI(title=f"RT supervisor {hostname}", docs_url=None, redoc_url=None)

    @app.get("/resetStatus")
    async def reset_status() -> dict[str, str]:
        return {"hostname": hostname, "status": "UP"}

    @app.get("/health")
    async def health() -> JSONResponse:
        result = await probe()
        body: dict[str, object] = {
            "hostname": hostname,
            "status": "UP" if result.serving else "DOWN",
            "sequencer": result.status,
        }
        if not result.serving:
            body["reason"] = f"{result.reason}; {sequencer_state()}"
        body["children"] = dict(children())
        return JSONResponse(body, status_code=200 if result.serving else 503)

    return app
