"""The Kubernetes API as RT's stores use it (the session ConfigMap, the TLS Secrets): the
official client, imported only here and only when a deployment asks for it, the pod's
service account by default, and names written ``namespace/name`` or ``name`` (the pod's
own namespace)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["SERVICE_ACCOUNT_NAMESPACE", "core_api", "namespaced"]

#: Where a pod finds its namespace.
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def core_api(configuration: Any = None) -> tuple[Any, Any]:
    """The ``kubernetes.client`` module and a ``CoreV1Api`` on ``configuration`` (None:
    the pod's in-cluster configuration)."""
    from kubernetes import client, config  # heavy: only a deployment imports it

    if configuration is None:
        config.load_incluster_config()
        configuration = client.Configuration.get_default_copy()
    return client, client.CoreV1Api(client.ApiClient(configuration))


def namespaced(name: str) -> tuple[str, str]:
    """``(namespace, name)`` of ``namespace/name``, or of ``name`` in the pod's namespace."""
    namespace, _, name = name.rpartition("/")
    if not namespace:
        namespace = Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
    return namespace, name
