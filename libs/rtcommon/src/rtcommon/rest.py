"""Requests to RT's REST APIs: a node's (the supervisor's, DESIGN section 8), for the CLI
and for the supervisors themselves (the console reads its peers' reset state), and the
info-service's and its issuer's, for external clients.

:func:`rest_call` (and :func:`rest_get`, for a node's address and a path) answers
``(HTTP status, JSON body)`` for any answer the server gives, error statuses included,
and raises :class:`RestError` when no answer comes (nothing listening, a timeout, a
body that is not JSON). Requests never go through a proxy named in the environment: the
nodes are reached directly.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import RTError

__all__ = ["RestError", "rest_call", "rest_get"]

_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RestError(RTError):
    """A node's REST API gave no usable answer."""


def rest_get(address: str, path: str, *, timeout: float, token: str = "") -> tuple[int, Any]:
    """``GET http://<address><path>`` (with ``Authorization: Bearer <token>`` if given)."""
    return rest_call(f"http://{address}{path}", timeout=timeout, token=token)


def rest_call(
    url: str,
    *,
    timeout: float,
    method: str = "GET",
    token: str = "",
    json_body: Any = None,
    form: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """``method url`` with a JSON body or a form (``application/x-www-form-urlencoded``,
    as OAuth2 token requests are), and a bearer token if given."""
    data = None
    request = urllib.request.Request(url, method=method)
    if json_body is not None:
        data = json.dumps(json_body).encode()
        request.add_header("Content-Type", "application/json")
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.data = data
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    address = urllib.parse.urlsplit(url).netloc
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
        raise RestError(f"{url} answered {status} without JSON") from exc
