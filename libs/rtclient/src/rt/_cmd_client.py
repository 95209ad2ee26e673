"""``rt client add NAME --topic T [--topic U] --cluster FILE``: register an external
client with the cluster's built-in identity provider.

It writes the registry the info-service reads (``cluster.json``'s ``clients_file``,
``rtcommon.registry``) and prints ``{"client_id": .., "client_secret": ..}``; the secret
is shown this once and kept only hashed. Exit 0 done, 1 refused (a name registered
already, a registry that cannot be written), 2 a usage error.
"""

from __future__ import annotations

import json
import sys

from rtcommon.cluster import ClusterError, ClusterSpec
from rtcommon.registry import ClientRegistry, RegistryError

from ._exits import FAILED, OK, USAGE


def add(cluster: str, name: str, topics: list[str]) -> int:
    try:
        spec = ClusterSpec.from_file(cluster)
    except ClusterError as exc:
        print(f"rt client add: {exc}", file=sys.stderr)
        return USAGE
    if not spec.clients_file:
        print(
            f"rt client add: {cluster} names no client registry: its info-service uses"
            " an external identity provider (register clients there)",
            file=sys.stderr,
        )
        return USAGE
    try:
        secret = ClientRegistry(spec.clients_file).add(name, topics)
    except ValueError as exc:  # a name or topic that cannot be one
        print(f"rt client add: {exc}", file=sys.stderr)
        return USAGE
    except (RegistryError, OSError) as exc:
        print(f"rt client add: {exc}", file=sys.stderr)
        return FAILED
    print(json.dumps({"client_id": name, "client_secret": secret}))
    return OK
