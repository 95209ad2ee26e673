"""Bearer tokens: the built-in issuer that makes them, and the verifier that checks them.

:class:`BuiltinIssuer` plays Keycloak's part on one machine (OAuth2 client credentials):
it signs RS256 JWTs for the clients of the registry (``rtcommon.registry``) with a key
kept in the info-service's folder, and publishes that key as a JWKS at Keycloak's path.
Its tokens carry the client's topics (``rt_topics``).

:class:`TokenVerifier` checks a token whoever issued it: signature against the issuer's
JWKS (the built-in issuer's keys directly; a real Keycloak's fetched from
``{issuer}/protocol/openid-connect/certs`` and cached), issuer, audience, expiry. It
raises :class:`Unauthorized` with the reason; the app answers 401.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from rtcommon.log import write_file_atomically
from rtcommon.registry import ClientRegistry

__all__ = ["BuiltinIssuer", "Caller", "TokenVerifier", "Unauthorized", "certs_path", "token_path"]

TOKEN_LIFETIME = 300  #: seconds, as Keycloak's default access token
ALGORITHM = "RS256"
TOPICS_CLAIM = "rt_topics"


def token_path(issuer: str) -> str:
    return f"{issuer}/protocol/openid-connect/token"


def certs_path(issuer: str) -> str:
    return f"{issuer}/protocol/openid-connect/certs"


class Unauthorized(Exception):
    """A request without a valid bearer token (401)."""


class Caller(msgspec.Struct, frozen=True):
    """Who a valid token names: the OAuth2 client, and the topics it may enrol for
    (None: the token does not say; any topic)."""

    client_id: str
    topics: frozenset[str] | None


class BuiltinIssuer:
    def __init__(self, folder: Path, url: str, audience: str, registry: ClientRegistry) -> None:
        self.url = url
        self.audience = audience
        self.registry = registry
        key_file = folder / "issuer.key"
        if not key_file.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_file_atomically(key_file, pem, mode=0o600)
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        self._key = loaded
        public = loaded.public_key()
        der = public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:12]).decode()
        self._jwk = {**RSAAlgorithm.to_jwk(public, as_dict=True), "kid": self.kid}
        self._jwk.update(use="sig", alg=ALGORITHM)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self._jwk]}

    def token(self, client_id: str, secret: str) -> dict[str, Any] | None:
        """A token answer for a registered client and its secret; None otherwise."""
        record = self.registry.authenticate(client_id, secret)
        if record is None:
            return None
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": self.audience,
            "sub": client_id,
            "azp": client_id,
            "client_id": client_id,
            "iat": now,
            "exp": now + TOKEN_LIFETIME,
            "jti": uuid.uuid4().hex,
            TOPICS_CLAIM: list(record.topics),
        }
        token = jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
        return {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_LIFETIME}

    def signing_key(self, token: str) -> Any:
        if jwt.get_unverified_header(token).get("kid") != self.kid:
            raise jwt.InvalidTokenError("signed with a key this issuer does not hold")
        return self._key.public_key()


class TokenVerifier:
    """Checks bearer tokens of ``issuer`` for ``audience``; ``signing_key(token)`` finds
    the issuer's public key for a token (raising ``jwt`` errors when it cannot)."""

    def __init__(self, issuer: str, audience: str, signing_key: Callable[[str], Any]) -> None:
        self.issuer = issuer
        self.audience = audience
        self._signing_key = signing_key

    @classmethod
    def for_keycloak(cls, issuer: str, audience: str) -> TokenVerifier:
        keys = jwt.PyJWKClient(certs_path(issuer), cache_keys=True, lifespan=300)
        return cls(issuer, audience, lambda token: keys.get_signing_key_from_jwt(token).key)

    def verify(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a bearer token is required (Authorization: Bearer <token>)")
        token = token.strip()
        try:
            claims = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "iss", "aud"]},
            )
        except jwt.PyJWKClientError as exc:
            raise Unauthorized(f"the issuer's keys cannot be read: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        client_id = claims.get("azp") or claims.get("client_id") or claims.get("sub")
        if not isinstance(client_id, str) or not client_id:
            raise Unauthorized("the token names no client (azp)")
        topics = claims.get(TOPICS_CLAIM)
        return Caller(client_id, frozenset(map(str, topics)) if isinstance(topics, list) else None)
