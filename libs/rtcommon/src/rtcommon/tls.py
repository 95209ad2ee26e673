"""A cluster's TLS material: its certificate authority, what it issues, where it is kept,
and the gRPC credentials made from it (DESIGN sections 5 and 9).

- :class:`CertificateAuthority` issues *node* certificates (a node's listeners, named by
  its hosts, and its identity towards its peers: ``urn:rt:node:<id>``, read back with
  :func:`node_identity`) and *client* certificates: one per enrolled external
  client, short-lived, with the client's name as common name and, as SAN URIs,
  ``urn:rt:client:<name>`` and one ``urn:rt:topic:<topic>`` per topic it may insert; and
  *publisher* certificates for the cluster's own (internal) publishers: one per
  publisher id (a host name), SAN ``urn:rt:publisher:<id>``, good for any topic but only
  that id's streams. The node reads either back with :func:`client_identity`, so what a
  client or publisher may push is bound into the certificate the CA signed. A
  publisher's pair is kept on its host in a folder of its own
  (:func:`save_publisher_pair`, :func:`read_publisher_pair`).
- :class:`FileCAStore` (a :class:`CAStore`) keeps the CA, the nodes' pairs and the
  revocation list in one folder, outside the nodes' volumes (``DATA/tls`` locally). The
  CA's key is read only by whoever issues (the launcher, the info-service); a node reads
  the CA certificate, its own pair and the revocation list. :class:`KubernetesCAStore`
  keeps them in Kubernetes Secrets; :func:`ca_store` picks the one a cluster names.
- :func:`server_credentials` and :func:`channel_credentials` make gRPC credentials for
  mutual TLS.

Errors: :class:`TLSError` (an :class:`~rtcommon.errors.RTError`) for material that is
missing or unreadable.
"""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import grpc
import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import RTError
from .kube import core_api, namespaced
from .log import DirectoryLock, write_file_atomically
from .streams import check_publisher_id

__all__ = [
    "CA_CERT_FILE",
    "PUBLISHER_CERT_FILE",
    "PUBLISHER_KEY_FILE",
    "CAStore",
    "CertificateAuthority",
    "ClientIdentity",
    "FileCAStore",
    "IssuedPair",
    "KubernetesCAStore",
    "TLSError",
    "ca_store",
    "channel_credentials",
    "client_identity",
    "node_identity",
    "read_publisher_pair",
    "save_publisher_pair",
    "server_credentials",
]

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
REVOKED_FILE = "revoked.json"
CLIENT_URI = "urn:rt:client:"
PUBLISHER_URI = "urn:rt:publisher:"
TOPIC_URI = "urn:rt:topic:"
NODE_URI = "urn:rt:node:"
CA_LIFETIME = datetime.timedelta(days=3650)
SERVER_LIFETIME = datetime.timedelta(days=365)
#: An internal publisher's certificate, unless its issuer says otherwise.
PUBLISHER_LIFETIME = datetime.timedelta(days=90)
#: The files of a publisher's pair folder (with the CA's certificate, ``ca.pem``).
PUBLISHER_CERT_FILE = "publisher.pem"
PUBLISHER_KEY_FILE = "publisher.key"
#: A server pair this close to its end is issued again when the store is asked for it.
SERVER_RENEW_BEFORE = datetime.timedelta(days=30)
#: Issued certificates start this far in the past: clocks of two machines differ.
CLOCK_SKEW = datetime.timedelta(minutes=5)
#: The revocation list is read again at most this often (seconds).
REVOKED_RECHECK = 1.0
#: A call of the Kubernetes API gives up after this long (seconds).
API_TIMEOUT = 5.0


class TLSError(RTError):
    """TLS material that is missing, unreadable, or not what it should be."""


class IssuedPair(msgspec.Struct, frozen=True, kw_only=True):
    """A certificate and its private key, in PEM, as issued."""

    cert: bytes
    key: bytes
    serial: int
    not_after: float  #: the end of its validity, in seconds since the epoch


class ClientIdentity(msgspec.Struct, frozen=True, kw_only=True):
    """Who a client certificate names and what it may insert: an external client's
    name and topics, or (``publisher``) an internal publisher's id, which may insert any
    topic into the streams of that id (``rtcommon.streams.publishes_into``)."""

    name: str
    topics: frozenset[str]
    serial: int
    not_after: float
    publisher: bool = False


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _general_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _server_names(hosts: Iterable[str], node_id: int | None) -> list[x509.GeneralName]:
    """A node's certificate's alternative names: its hosts, and its identity as a node."""
    names = _general_names(hosts)
    if node_id is not None:
        names.append(x509.UniformResourceIdentifier(f"{NODE_URI}{node_id}"))
    return names


def _parse_revoked(data: bytes, where: str) -> dict[str, float]:
    """A revocation list, ``{"<serial>": <end of validity>}``, as JSON bytes."""
    try:
        listed = json.loads(data)
        return {str(serial): float(end) for serial, end in listed.items()}
    except (ValueError, AttributeError) as exc:
        raise TLSError(f"the revocation list in {where} is damaged") from exc


def _with_revoked(
    listed: dict[str, float], pairs: Iterable[tuple[int, float]], now: float
) -> bytes:
    """``listed`` with (serial, end) ``pairs`` added and what ended by ``now`` dropped (its
    certificates are refused anyway), as JSON bytes."""
    listed = {**listed, **{str(serial): end for serial, end in pairs}}
    return json.dumps({s: end for s, end in listed.items() if end > now}, sort_keys=True).encode()


class CertificateAuthority:
    """A CA key and its self-signed certificate; issues the cluster's certificates."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self._key = key
        self.certificate = certificate

    @classmethod
    def create(cls, name: str) -> CertificateAuthority:
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} RT cluster CA")])
        now = _now()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            certificate = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            raise TLSError(f"the CA's certificate or key is not readable PEM: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TLSError("the CA's key is not an elliptic-curve key")
        return cls(key, certificate)

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self._key)

    def issue_server(
        self, name: str, hosts: Sequence[str], node_id: int | None = None
    ) -> IssuedPair:
        """A server certificate for ``hosts`` (names or IP addresses). With ``node_id``
        it is also that node's identity towards its peers (SAN ``urn:rt:node:<id>``, and
        good for client authentication too)."""
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]
        if node_id is not None:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        return self._issue(name, _server_names(hosts, node_id), usages, SERVER_LIFETIME)

    def issue_client(
        self, name: str, topics: Iterable[str], lifetime: datetime.timedelta
    ) -> IssuedPair:
        """A client certificate for ``name``, which may insert ``topics``."""
        uris: list[x509.GeneralName] = [x509.UniformResourceIdentifier(CLIENT_URI + name)]
        uris += [x509.UniformResourceIdentifier(TOPIC_URI + topic) for topic in sorted(topics)]
        return self._issue(name, uris, [ExtendedKeyUsageOID.CLIENT_AUTH], lifetime)

    def issue_publisher(
        self, publisher_id: str, lifetime: datetime.timedelta = PUBLISHER_LIFETIME
    ) -> IssuedPair:
        """An internal publisher's certificate: it may push the streams of
        ``publisher_id`` (a host name, or the id its publishers are given), any topic.
        StreamNameError for an id no publisher may have (``check_publisher_id``)."""
        check_publisher_id(publisher_id)
        uri = x509.UniformResourceIdentifier(PUBLISHER_URI + publisher_id)
        return self._issue(publisher_id, [uri], [ExtendedKeyUsageOID.CLIENT_AUTH], lifetime)

    def _issue(
        self,
        name: str,
        alternative_names: list[x509.GeneralName],
        usages: list[x509.ObjectIdentifier],
        lifetime: datetime.timedelta,
    ) -> IssuedPair:
        key = _new_key()
        now = _now()
        serial = x509.random_serial_number()
        not_after = now + lifetime
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return IssuedPair(
            cert=certificate.public_bytes(serialization.Encoding.PEM),
            key=_key_pem(key),
            serial=serial,
            not_after=not_after.timestamp(),
        )


@functools.lru_cache(maxsize=1024)
def client_identity(cert_pem: bytes) -> ClientIdentity:
    """The identity a client or publisher certificate (PEM, as gRPC's auth context gives
    it) names.

    Raises :class:`TLSError` for a certificate that names neither one RT client nor one
    publisher: the handshake checked the signature; this reads what the CA put in it."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound) as exc:
        raise TLSError(f"the client certificate names no RT client: {exc}") from exc
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    clients = [uri.removeprefix(CLIENT_URI) for uri in uris if uri.startswith(CLIENT_URI)]
    publishers = [uri.removeprefix(PUBLISHER_URI) for uri in uris if uri.startswith(PUBLISHER_URI)]
    if len(clients) + len(publishers) != 1:
        raise TLSError("the client certificate names no RT client or publisher")
    return ClientIdentity(
        name=(clients or publishers)[0],
        topics=frozenset(uri.removeprefix(TOPIC_URI) for uri in uris if uri.startswith(TOPIC_URI)),
        serial=certificate.serial_number,
        not_after=certificate.not_valid_after_utc.timestamp(),
        publisher=bool(publishers),
    )


class CAStore(Protocol):
    """Where a cluster's CA, its nodes' pairs and the revocation list are kept, outside
    the nodes' volumes: :class:`FileCAStore` locally; a Kubernetes Secret in a deployment."""

    def ca(self) -> CertificateAuthority:
        """The CA with its key (issuers only)."""
        ...

    def ca_cert(self) -> bytes: ...

    def server_pair(self, name: str) -> tuple[bytes, bytes]: ...

    def revoke(self, pairs: Iterable[tuple[int, float]]) -> None: ...

    def is_revoked(self, serial: int) -> bool: ...


def node_identity(cert_pem: bytes) -> int | None:
    """The node id a peer's certificate names (``urn:rt:node:<id>``), or None."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return None
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    ids = [uri.removeprefix(NODE_URI) for uri in uris if uri.startswith(NODE_URI)]
    return int(ids[0]) if len(ids) == 1 and ids[0].isdigit() else None


class FileCAStore:
    """A cluster's TLS material in one folder (``DATA/tls`` for a local cluster).

    ==================  =============================================================
    ``ca.pem``          the CA certificate (public: nodes and clients trust it)
    ``ca.key``          the CA's key (mode 0600; for issuers only)
    ``<name>.pem/key``  a server pair, one per node (``node-0``, ...)
    ``revoked.json``    serials of client certificates revoked before their end
    ==================  =============================================================
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._revoked: frozenset[int] = frozenset()
        self._revoked_stamp: tuple[int, int] | None = None
        self._revoked_checked = float("-inf")

    # -- the CA --------------------------------------------------------------------------

    def ensure_ca(self, name: str) -> CertificateAuthority:
        """The CA kept here, made now if there is none."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if not (self.folder / CA_KEY_FILE).exists():
                authority = CertificateAuthority.create(name)
                write_file_atomically(self.folder / CA_KEY_FILE, authority.key_pem, mode=0o600)
                write_file_atomically(self.folder / CA_CERT_FILE, authority.cert_pem)
                return authority
        return self.ca()

    def ca(self) -> CertificateAuthority:
        return CertificateAuthority.from_pem(self.ca_cert(), self._read(CA_KEY_FILE))

    def ca_cert(self) -> bytes:
        return self._read(CA_CERT_FILE)

    # -- server pairs --------------------------------------------------------------------

    def ensure_server_pair(
        self, name: str, hosts: Sequence[str], node_id: int | None = None
    ) -> None:
        """Issue ``name``'s server pair for ``hosts`` (and node ``node_id``) unless one for
        them is kept and not near its end."""
        with self._locked():
            try:
                certificate = x509.load_pem_x509_certificate(self._read(f"{name}.pem"))
                held = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            except (TLSError, ValueError, x509.ExtensionNotFound):
                pass
            else:
                fresh = certificate.not_valid_after_utc - _now() > SERVER_RENEW_BEFORE
                if fresh and list(held.value) == _server_names(hosts, node_id):
                    return
            pair = self.ca().issue_server(name, hosts, node_id)
            write_file_atomically(self.folder / f"{name}.key", pair.key, mode=0o600)
            write_file_atomically(self.folder / f"{name}.pem", pair.cert)

    def server_pair(self, name: str) -> tuple[bytes, bytes]:
        """``name``'s server (certificate, key)."""
        return self._read(f"{name}.pem"), self._read(f"{name}.key")

    # -- revocation ----------------------------------------------------------------------

    def revoke(self, pairs: Iterable[tuple[int, float]]) -> None:
        """Revoke client certificates by (serial, end of validity); entries past their
        end are dropped, as their certificates are refused anyway."""
        now = time.time()
        with self._locked():
            merged = _with_revoked(self._read_revoked(), pairs, now)
            write_file_atomically(self.folder / REVOKED_FILE, merged)

    def is_revoked(self, serial: int) -> bool:
        """Whether ``serial`` is revoked (the list is read again when it changed, at most
        every ``REVOKED_RECHECK`` seconds)."""
        now = time.monotonic()
        if now - self._revoked_checked >= REVOKED_RECHECK:
            self._revoked_checked = now
            try:
                info = (self.folder / REVOKED_FILE).stat()
                stamp = (info.st_mtime_ns, info.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp != self._revoked_stamp:
                self._revoked = frozenset(int(serial) for serial in self._read_revoked())
                self._revoked_stamp = stamp
        return serial in self._revoked

    def _read_revoked(self) -> dict[str, float]:
        path = self.folder / REVOKED_FILE
        try:
            return _parse_revoked(path.read_bytes(), str(path))
        except FileNotFoundError:
            return {}

    # -- files ---------------------------------------------------------------------------

    def _read(self, name: str) -> bytes:
        try:
            return (self.folder / name).read_bytes()
        except OSError as exc:
            path = self.folder / name
            raise TLSError(f"cannot read the cluster's TLS file {path}: {exc}") from exc

    def _locked(self) -> DirectoryLock:
        """An exclusive lock on the folder while issuing or revoking: issuers may be
        several processes."""
        return DirectoryLock(self.folder, wait=True)


class KubernetesCAStore:
    """The cluster's TLS material in Kubernetes Secrets, through the official client (the
    pod's service account unless a client ``configuration`` is given): ``secret`` holds
    what the nodes read (``ca.pem``, each node's ``<name>.pem`` and ``<name>.key``, and
    ``revoked.json``, which the info-service updates with a compare-and-swap on the
    Secret's ``resourceVersion``); ``ca_secret`` holds the CA's key (``ca.key``), for the
    info-service alone. Names are ``namespace/name`` or ``name`` (the pod's namespace)."""

    ATTEMPTS = 20

    def __init__(self, secret: str, ca_secret: str = "", configuration: object = None) -> None:
        self._client, self.api = core_api(configuration)
        self.secret = namespaced(secret)
        self.ca_secret = namespaced(ca_secret) if ca_secret else None
        self._revoked: frozenset[int] = frozenset()
        self._refresher: threading.Thread | None = None
        self._refresh_error: TLSError | None = None

    def __repr__(self) -> str:
        return f"KubernetesCAStore({'/'.join(self.secret)})"

    def ca(self) -> CertificateAuthority:
        if self.ca_secret is None:
            raise TLSError(f"{self} names no Secret holding the CA's key")
        key = self._data(self._read(self.ca_secret), "ca.key")
        return CertificateAuthority.from_pem(self.ca_cert(), key)

    def ca_cert(self) -> bytes:
        return self._data(self._read(self.secret), CA_CERT_FILE)

    def server_pair(self, name: str) -> tuple[bytes, bytes]:
        secret = self._read(self.secret)
        return self._data(secret, f"{name}.pem"), self._data(secret, f"{name}.key")

    def revoke(self, pairs: Iterable[tuple[int, float]]) -> None:
        now = time.time()
        pairs = list(pairs)
        for _ in range(self.ATTEMPTS):
            secret = self._read(self.secret)
            merged = _with_revoked(self._listed(secret), pairs, now)
            encoded = base64.b64encode(merged).decode()
            secret.data = {**(secret.data or {}), REVOKED_FILE: encoded}
            try:  # the resourceVersion read makes this a compare-and-swap
                self.api.replace_namespaced_secret(
                    self.secret[1], self.secret[0], secret, _request_timeout=API_TIMEOUT
                )
                return
            except self._client.ApiException as exc:
                if exc.status != 409:
                    raise TLSError(f"cannot update {self}: {exc.status} {exc.reason}") from exc
            except Exception as exc:  # urllib3's connection errors
                raise TLSError(f"cannot reach the Kubernetes API for {self}: {exc}") from exc
        raise TLSError(f"{self}: still conflicting after {self.ATTEMPTS} attempts")

    def is_revoked(self, serial: int) -> bool:
        """From the list as last read: a node asks on its event loop, so the API is read
        by a thread of its own every ``REVOKED_RECHECK`` seconds (the first read waits)."""
        if self._refresher is None:
            self._revoked = self._read_revoked()  # fails closed if it cannot be read
            self._refresher = threading.Thread(
                target=self._refresh, name=f"rt-revocations {self}", daemon=True
            )
            self._refresher.start()
        if self._refresh_error is not None:
            raise self._refresh_error
        return serial in self._revoked

    def _refresh(self) -> None:
        while True:
            time.sleep(REVOKED_RECHECK)
            try:
                self._revoked, self._refresh_error = self._read_revoked(), None
            except TLSError as exc:  # fail closed until the API answers again
                self._refresh_error = exc

    def _read_revoked(self) -> frozenset[int]:
        return frozenset(int(s) for s in self._listed(self._read(self.secret)))

    def _read(self, named: tuple[str, str]):
        namespace, name = named
        try:
            return self.api.read_namespaced_secret(name, namespace, _request_timeout=API_TIMEOUT)
        except self._client.ApiException as exc:
            raise TLSError(
                f"cannot read Secret {namespace}/{name}: {exc.status} {exc.reason}"
            ) from exc
        except Exception as exc:  # urllib3's connection errors: the API server unreachable
            raise TLSError(
                f"cannot reach the Kubernetes API for {namespace}/{name}: {exc}"
            ) from exc

    def _data(self, secret, key: str) -> bytes:
        value = (secret.data or {}).get(key)
        if value is None:
            raise TLSError(f"Secret {secret.metadata.name} holds no {key}")
        return base64.b64decode(value)

    def _listed(self, secret) -> dict[str, float]:
        value = (secret.data or {}).get(REVOKED_FILE)
        return _parse_revoked(base64.b64decode(value), str(self)) if value else {}


def ca_store(tls_dir: str, secret: str = "", ca_secret: str = "") -> CAStore:
    """The store a cluster description names: its Secrets in Kubernetes, else its folder."""
    if secret:
        return KubernetesCAStore(secret, ca_secret)
    return FileCAStore(tls_dir)


def server_credentials(ca_cert: bytes, cert: bytes, key: bytes) -> grpc.ServerCredentials:
    """A listener's credentials: this pair, and only clients the CA signed."""
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca_cert, require_client_auth=True
    )


def channel_credentials(ca_cert: bytes, cert: bytes, key: bytes) -> grpc.ChannelCredentials:
    """A client's credentials: trusting servers the CA signed, presenting this pair."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca_cert, private_key=key, certificate_chain=cert
    )


def save_publisher_pair(folder: str | os.PathLike[str], ca_cert: bytes, pair: IssuedPair) -> None:
    """Keep a publisher's pair, and the CA it trusts, in ``folder`` (its key mode 0600)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_file_atomically(folder / PUBLISHER_KEY_FILE, pair.key, mode=0o600)
    write_file_atomically(folder / PUBLISHER_CERT_FILE, pair.cert)
    write_file_atomically(folder / CA_CERT_FILE, ca_cert)


def read_publisher_pair(folder: str | os.PathLike[str]) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, certificate, key) of the publisher's pair kept in ``folder``;
    :class:`TLSError` if any is missing or unreadable."""
    files = (CA_CERT_FILE, PUBLISHER_CERT_FILE, PUBLISHER_KEY_FILE)
    try:
        return tuple(Path(folder, name).read_bytes() for name in files)  # type: ignore[return-value]
    except OSError as exc:
        raise TLSError(
            f"no publisher pair in {folder} ({exc.strerror}): this cluster takes pushes only"
            " with a publisher certificate of its CA (rt cert publisher)"
        ) from None
