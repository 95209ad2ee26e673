"""``rt reset --cluster FILE [--yes] [--token T] [--timeout S]``: a hard reset of a cluster.

It removes every message of the stream on every node (DESIGN section 8): each node's
state, input copies and merged log are wiped, the session number is raised, and the
merged log goes on at ``log.<session>.0``. Subscribers receive one ``reset`` event.

Without ``--yes`` it asks first, on a terminal, and refuses to run without one. It asks
the first node that answers (``GET /hardReset``, with ``Authorization: Bearer <token>``
from ``--token`` or ``RT_RESET_TOKEN``), prints each node's steps as they change
(``GET /resetStatus``), and exits 0 once every node is ``UP`` again; 1 if the reset
was refused (a reset under way, the API disabled, a wrong token) or not done within
``--timeout``; 2 without a readable cluster description or without ``--yes`` off a
terminal; 130 on Ctrl-C (the reset goes on: the nodes run it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import IO

from rtcommon.cluster import ClusterSpec
from rtcommon.rest import RestError, rest_get

from ._exits import FAILED, INTERRUPTED, OK, USAGE, read_cluster
from ._status import reset_states

__all__ = ["run"]

REQUEST_TIMEOUT = 10.0
POLL_INTERVAL = 0.25


def run(
    args: argparse.Namespace, *, stdin: IO[str] | None = None, out: IO[str] | None = None
) -> int:
    stdin, out = stdin or sys.stdin, out or sys.stdout
    spec = read_cluster(args.cluster, "reset")
    if spec is None:
        return USAGE
    if not args.yes:
        if not stdin.isatty():
            print("rt reset: not a terminal to ask on: pass --yes to reset", file=sys.stderr)
            return USAGE
        names = ", ".join(node.name for node in spec.nodes)
        print(
            f"This removes every message of cluster {spec.name!r} on {names}; publishers send"
            " again what their logs still hold. Type 'reset' to go on: ",
            end="",
            file=out,
            flush=True,
        )
        if stdin.readline().strip() != "reset":
            print("rt reset: not reset", file=sys.stderr)
            return FAILED
    token = args.token if args.token is not None else os.environ.get("RT_RESET_TOKEN", "")
    try:
        return _reset(spec, token, args.timeout, out)
    except KeyboardInterrupt:
        print("rt reset: interrupted; the nodes carry on with the reset", file=sys.stderr)
        return INTERRUPTED


def _reset(spec: ClusterSpec, token: str, timeout: float, out: IO[str]) -> int:
    answered = None
    for node in spec.nodes:
        try:
            status, body = rest_get(node.rest, "/hardReset", timeout=REQUEST_TIMEOUT, token=token)
        except RestError as exc:
            print(f"rt reset: {exc}; trying the next node", file=sys.stderr)
            continue
        answered = node
        break
    if answered is None:
        print("rt reset: no node's REST API answers", file=sys.stderr)
        return FAILED
    if status != 200:
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        print(f"rt reset: {answered.name} answered {status}: {reason or body}", file=sys.stderr)
        return FAILED
    print(f"{answered.name}: {body.get('status')}", file=out, flush=True)
    shown: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node, state in zip(spec.nodes, reset_states(spec.nodes, 2.0), strict=True):
            if shown.get(node.name) != state:
                shown[node.name] = state
                print(f"{node.name}: {state}", file=out, flush=True)
        if all(state == "UP" for state in shown.values()) and len(shown) == len(spec.nodes):
            print("reset done: every node is UP", file=out, flush=True)
            return OK
        time.sleep(POLL_INTERVAL)
    print(f"rt reset: not every node UP within {timeout:g} s: {shown}", file=sys.stderr)
    return FAILED
