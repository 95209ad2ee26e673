"""The built-in identity provider's registry of OAuth2 clients (DESIGN section 9).

When no Keycloak is configured, the info-service issues tokens itself (client
credentials grant). Its clients are registered here, one JSON file
(``DATA/info-service/clients.json`` locally, mode 0600): ``rt client add NAME --topic T``
adds one and prints its ``client_id`` (the name) and a new ``client_secret``, which is
kept only as a salted scrypt hash. The registry says which topics each client may
enrol for; the issuer puts them into the client's tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

import msgspec

from .errors import RTError
from .log import DirectoryLock, write_file_atomically
from .streams import check_topic

__all__ = [
    "ClientNameError",
    "ClientRecord",
    "ClientRegistry",
    "RegistryError",
    "check_client_name",
]

#: A client's name is the first part of its streams' names (``<name>.<topic>``): no dots.
_CLIENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1}


class RegistryError(RTError):
    """A client that cannot be registered, or a registry that cannot be read."""


class ClientNameError(RegistryError, ValueError):
    """A name that cannot name a client."""


class ClientRecord(msgspec.Struct, frozen=True, kw_only=True):
    client_id: str
    topics: tuple[str, ...]
    secret_hash: str  #: ``scrypt$<salt>$<hash>``, base64


def check_client_name(name: object) -> str:
    """``name`` if it can name a client (letters, digits, '_' and '-'), else raise."""
    if not isinstance(name, str) or not _CLIENT_NAME.fullmatch(name):
        raise ClientNameError(f"a client name is 1 to 64 letters, digits, '_' or '-', not {name!r}")
    return name


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


class ClientRegistry:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def add(self, client_id: str, topics: Iterable[str]) -> str:
        """Register ``client_id`` for ``topics``; the new secret (shown once, kept hashed)."""
        check_client_name(client_id)
        topics = tuple(dict.fromkeys(check_topic(topic) for topic in topics))
        if not topics:
            raise ClientNameError("a client needs at least one topic")
        secret = secrets.token_urlsafe(32)
        salt = os.urandom(16)
        encoded = [base64.b64encode(part).decode() for part in (salt, _hash(secret, salt))]
        digest = "$".join(["scrypt", *encoded])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock = DirectoryLock(self.path.parent, name=".registry.lock", wait=True)
        except OSError as exc:
            raise RegistryError(f"cannot lock the client registry {self.path}: {exc}") from exc
        with lock:
            records = self._read()
            if client_id in records:
                raise RegistryError(f"client {client_id!r} is registered already")
            records[client_id] = ClientRecord(
                client_id=client_id, topics=topics, secret_hash=digest
            )
            write_file_atomically(
                self.path, msgspec.json.encode(list(records.values())), mode=0o600
            )
        return secret

    def authenticate(self, client_id: str, secret: str) -> ClientRecord | None:
        """The client if ``secret`` is its secret, else None."""
        record = self._read().get(client_id)
        if record is None:
            return None
        try:
            _, *parts = record.secret_hash.split("$")
            salt, expected = (base64.b64decode(part) for part in parts)
            matches = hmac.compare_digest(_hash(secret, salt), expected)
        except ValueError:
            raise RegistryError(f"the client registry {self.path} is damaged") from None
        return record if matches else None

    def _read(self) -> dict[str, ClientRecord]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RegistryError(f"cannot read the client registry {self.path}: {exc}") from exc
        try:
            records = msgspec.json.decode(data, type=list[ClientRecord])
        except msgspec.DecodeError as exc:
            raise RegistryError(f"the client registry {self.path} is damaged: {exc}") from exc
        return {record.client_id: record for record in records}
