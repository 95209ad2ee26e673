"""Configuration from the environment, read in one place into a frozen :class:`Settings`.

======================================  =====================  =============================
variable                                setting                meaning
======================================  =====================  =============================
``RT_LOG_PATH``                         ``log_path``           parent of publisher and
                                                               subscriber log folders
                                                               (default ``~/.rt/logs``)
``RT_ROLL_SIZE``                        ``roll_size``          bytes at which log files roll,
                                                               publishers and nodes (1 GiB)
``RT_SINGLE_INGRESS``                   ``single_ingress``     set (not "", "0", "false",
                                                               "no"): push to one node and
                                                               fail over
``REPLICATOR_EXCHANGE_ARCHIVED``        ``archived_exchange``  subscriber GC: unset follows
                                                               the cluster, "0" prunes itself,
                                                               "1" is the lead subscriber
``RT_RAFT_KEEP_ENTRIES``                ``raft_keep_entries``  Raft entries a node keeps
                                                               after a snapshot (tests lower
                                                               it; default 20,000)
``RT_RESET_API``                        ``reset_api``          "0", "false", "no" or "off"
                                                               disable a supervisor's
                                                               /hardReset and /softReset
``RT_RESET_TOKEN``                      ``reset_token``        when set, the reset API and
                                                               the supervisors' Control calls
                                                               require ``Authorization:
                                                               Bearer <token>``
``RT_RETENTION_DURATION``               ``retention_minutes``  archiver: collect rolled merged
                                                               files whose newest message is
                                                               older (minutes; 10080)
``RT_MAX_LOG_SIZE``                     ``max_log_size``       archiver: the merged log's
                                                               bytes at most (``5Gi``; a
                                                               Kubernetes quantity or bytes)
``RT_MAX_DISK_USAGE_PERCENT``           ``max_disk_usage_``    archiver: collect while the
                                        ``percent``            volume is fuller (90)
``RT_ARCHIVER_INTERVAL``                ``archiver_interval``  archiver: seconds between
                                                               checks of the policy (10)
``RT_MAX_STREAMS``                      ``max_streams``        input streams a node holds at
                                                               most; a push that would open
                                                               another is refused (1000)
``RT_MAX_STREAMS_PER_PUBLISHER``        ``max_streams_per_``   streams one publisher
                                        ``publisher``          certificate may open on a
                                                               node (100)
``RT_MAX_MESSAGE_SIZE``                 ``max_message_size``   the largest message a publisher
                                                               writes and a node takes in
                                                               (``64Mi``; bytes or a quantity;
                                                               above the roll size counts as
                                                               it): larger ones are refused
``RT_SCRUB_INTERVAL``                   ``scrub_interval``     seconds between checks of the
                                                               merged log's sealed files,
                                                               mended from a peer when
                                                               damaged (3600)
``RT_SCRUB_RATE``                       ``scrub_rate``         bytes a second the scrubber
                                                               reads at most (``32Mi``; bytes
                                                               or a quantity)
``RT_OIDC_ISSUER``                      ``oidc_issuer``        info-service: the identity
                                                               provider's issuer (a Keycloak
                                                               realm URL); "" is the built-in
``RT_OIDC_AUDIENCE``                    ``oidc_audience``      info-service: the audience a
                                                               token must name ("rt")
``RT_CLIENT_CERT_SECONDS``              ``client_cert_``       info-service: how long an
                                        ``seconds``            external client's certificate
                                                               is valid (3600)
``RT_EXTERNAL_ENDPOINTS``               ``external_``          info-service: the nodes'
                                        ``endpoints``          external push addresses
                                                               (load balancers), comma-
                                                               separated; "" takes them from
                                                               cluster.json
``RT_TOPIC_PREFIX``                     ``topic_prefix``       Kubernetes: node n of stream S
                                                               is ``<prefix>S-<n>`` (a pod
                                                               and its Service)
``RT_REPLICAS``                         ``replicas``           Kubernetes: nodes of a stream
                                                               (1, 3 or 5; 3)
``RT_LISTEN_HOST``                      ``listen_host``        servers bind this host instead
                                                               of the one in their address
                                                               ("0.0.0.0" in a pod)
``RT_CA_SECRET``                        ``ca_secret``          info-service in Kubernetes: the
                                                               Secret holding the CA's key
``RT_PUBLISHER_PAIR``                   ``publisher_pair``     the folder of this host's
                                                               publisher pair (``rt cert
                                                               publisher``); "" takes the
                                                               cluster's ``publisher_pair``
``RT_PUBLISHER_TLS``                    ``publisher_tls``      Kubernetes: set, the nodes take
                                                               pushes only with a publisher's
                                                               or client's certificate, on
                                                               their external ports
``RT_CLUSTER_ID``, ``RT_TLS_DIR``,      (``ClusterSpec.``      Kubernetes: the rest of the
``RT_TLS_SECRET``,                      ``from_env``)          cluster description a node
``RT_SESSION_CONFIGMAP``,                                      builds from the environment
``RT_INFO_SERVICE``, ``RT_DATA``
======================================  =====================  =============================

Nothing reads the environment at import time: :func:`settings` reads it when called,
so callers build their settings once, when they start.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .log import DEFAULT_ROLL_SIZE, MAX_FILE_SIZE, MIN_ROLL_SIZE

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Settings",
    "hostname",
    "listen_address",
    "parse_size",
    "settings",
]

#: The largest message by default. Larger ones, up to the roll size, may be allowed: a
#: message longer than a mebibyte travels between processes in pieces, so what a
#: connection costs does not grow with it; it is whole only in the publisher that writes
#: it, each node's merge that copies it (about twice its size there, bench/
#: large_message_bench.py) and the subscriber that delivers it.
DEFAULT_MAX_MESSAGE_SIZE = 64 << 20

_SIZE_UNITS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1 << 10,
    "Mi": 1 << 20,
    "Gi": 1 << 30,
    "Ti": 1 << 40,
}


@dataclass(frozen=True, slots=True)
class Settings:
    log_path: Path
    roll_size: int = DEFAULT_ROLL_SIZE
    single_ingress: bool = False
    archived_exchange: str | None = None
    raft_keep_entries: int | None = None
    log_path_set: bool = False  #: RT_LOG_PATH was given (``log_path`` is not the default)
    reset_api: bool = True
    reset_token: str = ""
    retention_minutes: float = 10080.0
    max_log_size: int = 5 << 30
    max_disk_usage_percent: float = 90.0
    archiver_interval: float = 10.0
    max_streams: int = 1000
    max_streams_per_publisher: int = 100
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    scrub_interval: float = 3600.0
    scrub_rate: int = 32 << 20
    oidc_issuer: str = ""
    oidc_audience: str = "rt"
    client_cert_seconds: float = 3600.0
    external_endpoints: tuple[str, ...] = ()
    topic_prefix: str = ""
    replicas: int = 3
    listen_host: str = ""
    ca_secret: str = ""
    publisher_pair: str = ""
    publisher_tls: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Settings from ``environ``; a value out of range raises ValueError naming it."""
        log_path = environ.get("RT_LOG_PATH")
        return cls(
            log_path=Path(log_path) if log_path else Path.home() / ".rt" / "logs",
            roll_size=_roll_size(environ.get("RT_ROLL_SIZE")),
            single_ingress=_flag(environ.get("RT_SINGLE_INGRESS"), default=False),
            archived_exchange=environ.get("REPLICATOR_EXCHANGE_ARCHIVED"),
            raft_keep_entries=_whole_number("RT_RAFT_KEEP_ENTRIES", environ),
            log_path_set=bool(log_path),
            reset_api=_flag(environ.get("RT_RESET_API"), default=True),
            reset_token=environ.get("RT_RESET_TOKEN", ""),
            retention_minutes=_positive("RT_RETENTION_DURATION", environ, 10080.0),
            max_log_size=parse_size(environ.get("RT_MAX_LOG_SIZE") or "5Gi", "RT_MAX_LOG_SIZE"),
            max_disk_usage_percent=_percent("RT_MAX_DISK_USAGE_PERCENT", environ, 90.0),
            archiver_interval=_positive("RT_ARCHIVER_INTERVAL", environ, 10.0),
            max_streams=_whole_number("RT_MAX_STREAMS", environ) or 1000,
            max_streams_per_publisher=_whole_number("RT_MAX_STREAMS_PER_PUBLISHER", environ) or 100,
            max_message_size=parse_size(
                environ.get("RT_MAX_MESSAGE_SIZE") or str(DEFAULT_MAX_MESSAGE_SIZE),
                "RT_MAX_MESSAGE_SIZE",
            ),
            scrub_interval=_positive("RT_SCRUB_INTERVAL", environ, 3600.0),
            scrub_rate=parse_size(environ.get("RT_SCRUB_RATE") or "32Mi", "RT_SCRUB_RATE"),
            oidc_issuer=environ.get("RT_OIDC_ISSUER", "").rstrip("/"),
            oidc_audience=environ.get("RT_OIDC_AUDIENCE") or "rt",
            client_cert_seconds=_positive("RT_CLIENT_CERT_SECONDS", environ, 3600.0),
            external_endpoints=tuple(
                address.strip()
                for address in environ.get("RT_EXTERNAL_ENDPOINTS", "").split(",")
                if address.strip()
            ),
            topic_prefix=environ.get("RT_TOPIC_PREFIX", ""),
            replicas=_replicas(environ.get("RT_REPLICAS")),
            listen_host=environ.get("RT_LISTEN_HOST", ""),
            ca_secret=environ.get("RT_CA_SECRET", ""),
            publisher_pair=environ.get("RT_PUBLISHER_PAIR", ""),
            publisher_tls=_flag(environ.get("RT_PUBLISHER_TLS"), default=False),
        )


def _replicas(value: str | None) -> int:
    if not value:
        return 3
    if value.strip() not in ("1", "3", "5"):
        raise ValueError(f"RT_REPLICAS={value!r}: a cluster has 1, 3 or 5 nodes")
    return int(value)


def listen_address(address: str) -> str:
    """Where a server given ``address`` (``host:port``) binds: the same, or the same port
    on ``RT_LISTEN_HOST`` when set (a pod binds all its interfaces, while its address
    names its Service)."""
    host = settings().listen_host
    if not host:
        return address
    return f"{host}:{address.rpartition(':')[2]}"


def settings() -> Settings:
    """The settings of this process's environment, now."""
    return Settings.from_env(os.environ)


def hostname() -> str:
    return socket.gethostname()


def _flag(value: str | None, *, default: bool) -> bool:
    """A yes/no variable: unset or "" is ``default``; "0", "false", "no", "off" are no."""
    if not value:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


def _roll_size(value: str | None) -> int:
    if not value:
        return DEFAULT_ROLL_SIZE
    try:
        size = int(value)
    except ValueError:
        raise ValueError(f"RT_ROLL_SIZE={value!r} is not a number of bytes") from None
    if not MIN_ROLL_SIZE <= size <= MAX_FILE_SIZE:
        raise ValueError(f"RT_ROLL_SIZE={size} is outside {MIN_ROLL_SIZE}..{MAX_FILE_SIZE}")
    return size


def _whole_number(name: str, environ: Mapping[str, str]) -> int | None:
    value = environ.get(name)
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a whole number") from None
    if number < 0:
        raise ValueError(f"{name}={number} is negative")
    return number


def parse_size(value: str, name: str) -> int:
    """A size in bytes written as Kubernetes writes quantities (``5Gi``, ``500M``,
    ``1048576``); ValueError naming ``name`` otherwise."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]*)?)([kMGT]i?|Ki)?", value.strip())
    number = float(match[1]) if match else -1.0
    unit = (match[2] or "") if match else ""
    if unit not in _SIZE_UNITS or not 0 <= number < 1 << 63:
        raise ValueError(f"{name}={value!r} is not a size (bytes, or a quantity like 5Gi or 500M)")
    return int(number * _SIZE_UNITS[unit])


def _positive(name: str, environ: Mapping[str, str], default: float) -> float:
    value = environ.get(name)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number") from None
    if not 0 < number < 1e12:
        raise ValueError(f"{name}={value} must be above 0 (and finite)")
    return number


def _percent(name: str, environ: Mapping[str, str], default: float) -> float:
    number = _positive(name, environ, default)
    if number > 100:
        raise ValueError(f"{name}={number:g} is above 100")
    return number
