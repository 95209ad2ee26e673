"""Entry point of ``rt-info-service`` (also ``python -m rt_info_service``).

``rt-info-service --cluster FILE --data DIR --listen HOST:PORT`` serves the REST API of
``_app`` on ``HOST:PORT``, keeping its issuer key, client registry and enrolments in
``DIR``, the nodes' endpoints and the CA from the cluster description (its ``tls_dir``;
``--tls-dir`` overrides). Tokens come from ``RT_OIDC_ISSUER`` when set (a Keycloak
realm's URL), else from the built-in issuer at ``http://HOST:PORT/realms/rt``.
Exit 0 on SIGTERM or SIGINT, 1 if it cannot start.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from rtcommon import env
from rtcommon.cluster import ClusterError, ClusterSpec, cluster_source
from rtcommon.logs import setup_logging
from rtcommon.registry import ClientRegistry
from rtcommon.telemetry import setup_telemetry
from rtcommon.tls import TLSError, ca_store

from ._app import InfoService, create_app
from ._enrolments import Enrolments
from ._tokens import BuiltinIssuer, TokenVerifier

log = logging.getLogger("rt_info_service")

#: The built-in issuer's realm, at Keycloak's path.
BUILTIN_REALM = "/realms/rt"
CLIENTS_FILE = "clients.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rt-info-service",
        description="Enrol external publishers: tokens, endpoints, certificates.",
    )
    parser.add_argument("--cluster", required=True, metavar="FILE", help="path to cluster.json")
    parser.add_argument("--data", required=True, metavar="DIR", help="the service's own folder")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT", help="REST address")
    parser.add_argument("--tls-dir", metavar="DIR", help="the CA's folder (cluster.json's)")
    parser.add_argument(
        "--issuer-url",
        metavar="URL",
        help="the built-in issuer's URL as clients reach it (default http://HOST:PORT/realms/rt"
        " of --listen; behind a Service or ingress, its address)",
    )
    return parser.parse_args(argv)


def builtin_issuer_url(listen: str) -> str:
    return f"http://{listen}{BUILTIN_REALM}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging("info-service")
    setup_telemetry("info-service")
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    cluster_file = cluster_source(args.cluster)
    data = Path(args.data).absolute()
    try:
        settings = env.settings()
        spec = ClusterSpec.from_file(cluster_file)
        tls_dir = args.tls_dir or spec.tls_dir
        if not (tls_dir or spec.tls_secret):
            raise ClusterError(f"{cluster_file} names no TLS material (tls_dir): use --tls-dir")
        # In Kubernetes the CA's key is in a Secret of its own, for this service alone.
        store = ca_store(tls_dir, "" if args.tls_dir else spec.tls_secret, settings.ca_secret)
        store.ca()  # the CA must be readable now, not at the first enrolment
        data.mkdir(parents=True, exist_ok=True)
        host, _, port = args.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--listen {args.listen!r} is not host:port")
    except (ClusterError, TLSError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 1
    if settings.oidc_issuer:
        issuer = None
        verifier = TokenVerifier.for_keycloak(settings.oidc_issuer, settings.oidc_audience)
    else:
        registry = ClientRegistry(data / CLIENTS_FILE)
        url = (args.issuer_url or builtin_issuer_url(args.listen)).rstrip("/")
        issuer = BuiltinIssuer(data, url, settings.oidc_audience, registry)
        verifier = TokenVerifier(url, settings.oidc_audience, issuer.signing_key)

    def endpoints() -> list[str]:
        if settings.external_endpoints:
            return list(settings.external_endpoints)
        try:  # read each time: the description may change (a node moved)
            nodes = ClusterSpec.from_file(cluster_file).nodes
        except ClusterError:
            nodes = spec.nodes
        return [node.external for node in nodes if node.external]

    service = InfoService(
        verifier=verifier,
        issuer=issuer,
        enrolments=Enrolments(data / "enrolments.json"),
        ca=store,
        endpoints=endpoints,
        cluster_id=spec.id,
        cert_lifetime=settings.client_cert_seconds,
    )
    log.info(
        "serving on http://%s (pid %d; tokens from %s)",
        args.listen,
        os.getpid(),
        settings.oidc_issuer or verifier.issuer,
    )
    config = uvicorn.Config(
        create_app(service),
        host=host.strip("[]"),
        port=int(port),
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
