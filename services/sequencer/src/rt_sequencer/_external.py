"""Who may push through a node's external listener (DESIGN section 9).

The external push port serves Push alone, over mutual TLS: the handshake admits only
clients whose certificate the cluster CA signed and that is within its validity. Then
:class:`ExternalAccess` reads the certificate (``rtcommon.tls.client_identity``). An
internal publisher's (``urn:rt:publisher:<id>``, a cluster with ``publisher_tls``, whose
internal push ports take no push at all) may push any topic into the streams of its id
alone (``rtcommon.streams.publishes_into``), with records of any origin (HA pairs on
two hosts publish for one origin). An external client's names its name and topics,
and a push is admitted only

- of a topic the certificate names (the topics the client enrolled for), and
- into the stream ``_<client name>.<topic>``, so a client can never write into another
  client's stream, nor into an internal publisher's (a host name never starts with '_');
- with records that name the client as their origin, so it cannot speak for another
  origin of a ``.dedup`` topic (raising that origin's watermark would drop its messages);

and, for every chunk after that, only while the certificate is neither revoked (the
info-service's revocation list in the CA store) nor past its end: a long push stream
outliving its certificate ends, and the client opens a new one with its renewed pair.
"""

from __future__ import annotations

import time

import grpc

from rtcommon.log import Admit
from rtcommon.streams import EXTERNAL_PREFIX, StreamNameError, check_publisher_id, publishes_into
from rtcommon.tls import CAStore, ClientIdentity, TLSError, client_identity
from rtproto.v1 import push_pb2

__all__ = ["AccessRefused", "ExternalAccess"]


class AccessRefused(Exception):
    """A push the external listener does not admit: ``code`` and the message say why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class ExternalAccess:
    def __init__(self, store: CAStore) -> None:
        self.store = store

    def admit(
        self, context: grpc.aio.ServicerContext, opening: push_pb2.PushOpen
    ) -> ClientIdentity:
        """The identity pushing ``opening``, if it may; else raise :class:`AccessRefused`."""
        certificates = context.auth_context().get("x509_pem_cert")
        if not certificates:
            raise AccessRefused(
                grpc.StatusCode.UNAUTHENTICATED,
                "no client certificate: this cluster takes a push only over mutual TLS with"
                " a certificate of its CA, on a node's external port",
            )
        try:
            identity = client_identity(certificates[0])
        except TLSError as exc:
            raise AccessRefused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        self.check(identity)
        topic = opening.topic or opening.stream
        if identity.publisher:
            try:
                check_publisher_id(identity.name)
            except StreamNameError as exc:
                raise AccessRefused(grpc.StatusCode.PERMISSION_DENIED, str(exc)) from None
            if not publishes_into(identity.name, opening.stream, topic):
                raise AccessRefused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"publisher {identity.name!r} pushes only its own streams"
                    f" ({identity.name}.<topic>), not {opening.stream!r}",
                )
            if not opening.owner:  # a stream is bound to the log that first pushed it
                raise AccessRefused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"publisher {identity.name!r} pushes {opening.stream!r} naming no log"
                    " (PushOpen.owner)",
                )
            return identity
        if topic not in identity.topics:
            raise AccessRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client {identity.name!r} is not enrolled to insert topic {topic!r}"
                f" (its topics: {', '.join(sorted(identity.topics)) or 'none'})",
            )
        expected = f"{EXTERNAL_PREFIX}{identity.name}.{topic}"
        if opening.stream != expected:
            raise AccessRefused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client {identity.name!r} pushes topic {topic!r} as stream {expected!r},"
                f" not {opening.stream!r}",
            )
        return identity

    def admission(self, identity: ClientIdentity) -> Admit | None:
        """What ``identity``'s input copy shows each record new to it: a record whose
        origin is not the client is refused with :class:`AccessRefused` (a long one by
        its first piece, before any of it is written). None for an internal publisher,
        whose records may name any origin."""
        if identity.publisher:
            return None

        def admit(origin: str, position: int) -> None:
            if origin != identity.name:
                raise AccessRefused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"client {identity.name!r} published a record with origin"
                    f" {origin!r} at {position}: its records name it",
                )

        return admit

    def check(self, identity: ClientIdentity) -> None:
        """Raise :class:`AccessRefused` once ``identity``'s certificate is revoked or
        past its end."""
        who = f"publisher {identity.name!r}" if identity.publisher else f"client {identity.name!r}"
        if time.time() >= identity.not_after:
            renew = "rt cert publisher" if identity.publisher else "the info-service"
            raise AccessRefused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the certificate of {who} expired: get a new one from {renew}",
            )
        try:
            revoked = self.store.is_revoked(identity.serial)
        except TLSError as exc:  # no push while it cannot be told: fail closed
            raise AccessRefused(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        if revoked:
            why = "rt cert revoke" if identity.publisher else "unenrolled"
            raise AccessRefused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the certificate of {who} was revoked ({why})",
            )
