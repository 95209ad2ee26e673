"""``rt cert publisher ID --cluster FILE [--out DIR] [--days N]`` and ``rt cert revoke
CERT --cluster FILE``: internal publishers' certificates (a cluster with ``publisher_tls``).

``publisher`` issues, from the cluster's CA (its key: the launcher's ``DATA/tls``, or the
Secrets in Kubernetes), a pair for publisher id ``ID`` (a host name, or the id its
publishers are given) and keeps it with the CA's certificate in ``DIR`` (default
``$RT_PUBLISHER_PAIR``, else the cluster's ``publisher_pair``): copy that folder to the
publisher's host and name it there with ``$RT_PUBLISHER_PAIR``. The nodes then take that
host's pushes into its own streams alone. ``revoke`` puts a certificate on the cluster's
revocation list: the nodes refuse its pushes within a second, running ones included.
Both print what they did as JSON. Exit 0 done, 1 refused (no CA key here, a list that
cannot be written), 2 a usage error.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path

from cryptography import x509

from rtcommon import env
from rtcommon.cluster import ClusterError, ClusterSpec
from rtcommon.streams import StreamNameError, check_publisher_id
from rtcommon.tls import (
    PUBLISHER_CERT_FILE,
    CAStore,
    TLSError,
    ca_store,
    client_identity,
    read_publisher_pair,
    save_publisher_pair,
)

from ._exits import FAILED, OK, USAGE

__all__ = ["PUBLISHER_FOLDER", "ensure_publisher_pair", "publisher", "revoke"]

#: The launcher keeps this host's pair in ``DATA/tls/<this>``.
PUBLISHER_FOLDER = "publisher"


def ensure_publisher_pair(
    store: CAStore, folder: Path, publisher_id: str, days: float | None = None
) -> x509.Certificate:
    """The certificate of ``publisher_id``'s pair in ``folder``, issued now unless one for
    that id, of this CA and not revoked, is kept there with more than half its life left
    (``days``: issued now, valid that long; the pair it replaces is not revoked)."""
    authority = store.ca()
    try:
        ca, cert, _ = read_publisher_pair(folder)
        identity = client_identity(cert)
        certificate = x509.load_pem_x509_certificate(cert)
    except (TLSError, ValueError):
        pass
    else:
        life = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        left = certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
        if (
            days is None
            and (identity.publisher, identity.name) == (True, publisher_id)
            and ca == authority.cert_pem
            and not store.is_revoked(identity.serial)
            and left > life / 2
        ):
            return certificate
    lifetime = {} if days is None else {"lifetime": datetime.timedelta(days=days)}
    pair = authority.issue_publisher(publisher_id, **lifetime)
    save_publisher_pair(folder, authority.cert_pem, pair)
    return x509.load_pem_x509_certificate(pair.cert)


def _store(cluster: str, command: str) -> tuple[ClusterSpec, CAStore] | None:
    """The cluster and its CA store; None (said why) if it keeps no TLS material."""
    try:
        spec = ClusterSpec.from_file(cluster)
    except ClusterError as exc:
        print(f"rt cert {command}: {exc}", file=sys.stderr)
        return None
    if not spec.has_tls:
        print(f"rt cert {command}: {cluster} keeps no TLS material (tls_dir)", file=sys.stderr)
        return None
    return spec, ca_store(spec.tls_dir, spec.tls_secret, env.settings().ca_secret)


def _described(certificate: x509.Certificate, **more: str) -> str:
    return json.dumps(
        {
            **more,
            "serial": str(certificate.serial_number),
            "not_after": certificate.not_valid_after_utc.isoformat(),
        }
    )


def publisher(cluster: str, publisher_id: str, out: str | None, days: float | None) -> int:
    found = _store(cluster, "publisher")
    if found is None:
        return USAGE
    spec, store = found
    folder = out or env.settings().publisher_pair or spec.publisher_pair
    if not folder:
        print("rt cert publisher: give the pair's folder with --out", file=sys.stderr)
        return USAGE
    try:
        check_publisher_id(publisher_id)
    except StreamNameError as exc:
        print(f"rt cert publisher: {exc}", file=sys.stderr)
        return USAGE
    if days is not None and not days > 0:
        print("rt cert publisher: --days is a positive number", file=sys.stderr)
        return USAGE
    try:
        certificate = ensure_publisher_pair(store, Path(folder), publisher_id, days)
    except (TLSError, OSError) as exc:
        print(f"rt cert publisher: {exc}", file=sys.stderr)
        return FAILED
    print(_described(certificate, publisher=publisher_id, folder=os.path.abspath(folder)))
    return OK


def revoke(cluster: str, cert_file: str) -> int:
    found = _store(cluster, "revoke")
    if found is None:
        return USAGE
    _, store = found
    path = Path(cert_file)
    if path.is_dir():
        path = path / PUBLISHER_CERT_FILE
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        print(f"rt cert revoke: no certificate in {path}: {exc}", file=sys.stderr)
        return USAGE
    try:
        store.revoke([(certificate.serial_number, certificate.not_valid_after_utc.timestamp())])
    except (TLSError, OSError) as exc:
        print(f"rt cert revoke: {exc}", file=sys.stderr)
        return FAILED
    print(_described(certificate, revoked=str(path)))
    return OK
