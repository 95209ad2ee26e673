"""Requests to a node's REST API (the supervisor's, DESIGN section 8), for the CLI and
for the supervisors themselves (the console reads its peers' reset state).

:func:`rest_get` answers ``(HTTP status, JSON body)`` for any answer the node gives,
error statuses included, and raises :class:`RestError` when no answer comes (nothing
listening, a timeout, a body that is not JSON). Requests never go through a proxy
named in the environment: the nodes are reached directly.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .errors import RTError

__all__ = ["RestError", "rest_get"]

_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RestError(RTError):
    """A node's REST API gave no usable answer."""


def rest_get(address: str, path: str, *, timeout: float, token: str = "") -> tuple[int, Any]:
    """``GET http://<address><path>`` (with ``Authorization: Bearer <token>`` if given)."""
    request = urllib.request.Request(f"http://{address}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _http.open(request, timeout=timeout) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RestError(f"REST on {address} not answering: {reason}") from exc
    try:
        return status, json.loads(body)
    except ValueError as exc:
        raise RestError(f"REST on {address}{path} answered {status} without JSON") from exc
