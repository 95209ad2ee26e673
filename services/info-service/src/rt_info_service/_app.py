"""The info-service's REST API (FastAPI), DESIGN section 9.

=========================================================  ==================================
``POST {issuer}/protocol/openid-connect/token``            built-in issuer: a token for the
                                                           client credentials grant
``GET {issuer}/protocol/openid-connect/certs``             built-in issuer: its JWKS
``POST /clientcontroller/enrol``                           enrol a client name for topics
                                                           (bearer token); answers its id
``GET /informationservice/details/{id}``                   the client's endpoints, CA,
                                                           certificate and key (bearer token)
``DELETE /clientcontroller/enrol/{id}``                    unenrol; revokes its certificates
``GET /informationservice/config``                        where tokens come from (public)
``GET /health``                                            200 while serving
=========================================================  ==================================

The built-in issuer's routes exist only when no external issuer (``RT_OIDC_ISSUER``) is
configured. An enrolment belongs to the OAuth2 client that made it: another client's
token gets 404 for it, as an unknown id does.
"""

import base64
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from rtcommon.registry import RegistryError, check_client_name
from rtcommon.streams import StreamNameError, check_topic
from rtcommon.tls import CAStore, TLSError

from ._enrolments import Enrolment, EnrolmentConflict, Enrolments
from ._tokens import BuiltinIssuer, Caller, TokenVerifier, Unauthorized, certs_path, token_path

__all__ = ["InfoService", "create_app"]


@dataclass(frozen=True, kw_only=True)
class InfoService:
    """What the API works with."""

    verifier: TokenVerifier
    issuer: BuiltinIssuer | None  #: the built-in issuer, when no external one is set
    enrolments: Enrolments
    ca: CAStore
    endpoints: Callable[[], list[str]]  #: the nodes' external push addresses, now
    cluster_id: str
    cert_lifetime: float  #: seconds


class Topics(BaseModel):
    insert: str | list[str]
    query: str | list[str] = []


class EnrolRequest(BaseModel):
    name: str = Field(description="the client's name: its streams are _<name>.<topic>")
    topics: Topics | list[str] = Field(description='{"insert": topic or topics} or a list')


def _insert_topics(topics: Topics | list[str]) -> tuple[str, ...]:
    insert = topics.insert if isinstance(topics, Topics) else topics
    listed = [insert] if isinstance(insert, str) else insert
    return tuple(dict.fromkeys(check_topic(topic) for topic in listed))


def create_app(service: InfoService) -> FastAPI:
    app = FastAPI(
        title="RT info-service",
        description="Enrolment of external publishers: endpoints and TLS material.",
    )

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )

    def caller(authorization: Annotated[str | None, Header()] = None) -> Caller:
        return service.verifier.verify(authorization)

    def owned(enrolment_id: str, who: Caller) -> Enrolment:
        enrolment = service.enrolments.get(enrolment_id)
        if enrolment is None or enrolment.client_id != who.client_id:
            raise HTTPException(404, f"no enrolment {enrolment_id!r} of this client")
        return enrolment

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: what load balancers ask
    def health() -> dict[str, str]:
        return {"status": "UP"}

    @app.get("/informationservice/config")
    def config() -> dict[str, str]:
        """Where clients get their tokens (public)."""
        return {
            "issuer": service.verifier.issuer,
            "token_endpoint": token_path(service.verifier.issuer),
            "audience": service.verifier.audience,
        }

    @app.post("/clientcontroller/enrol")
    def enrol(body: EnrolRequest, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        try:
            name = check_client_name(body.name)
            topics = _insert_topics(body.topics)
        except (RegistryError, StreamNameError) as exc:
            raise HTTPException(422, str(exc)) from None
        if not topics:
            raise HTTPException(422, "enrol for at least one topic to insert")
        if who.topics is not None and not set(topics) <= who.topics:
            refused = sorted(set(topics) - who.topics)
            raise HTTPException(403, f"client {who.client_id!r} may not insert {refused}")
        try:
            enrolment, superseded = service.enrolments.enrol(who.client_id, name, topics)
        except EnrolmentConflict as exc:
            raise HTTPException(409, str(exc)) from None
        if superseded:
            _revoke(service.ca, superseded)
        return {
            "message": "success",
            "detail": "Client enrolled",
            "url": enrolment.id,
            "id": enrolment.id,
        }

    @app.get("/informationservice/details/{enrolment_id}")
    def details(enrolment_id: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, Any]:
        enrolment = owned(enrolment_id, who)
        if who.topics is not None and not set(enrolment.topics) <= who.topics:
            # The identity provider took a topic away: no new certificate for it.
            refused = sorted(set(enrolment.topics) - who.topics)
            raise HTTPException(403, f"client {who.client_id!r} may no longer insert {refused}")
        try:
            enrolment = service.enrolments.current_pair(
                enrolment.id, service.ca, service.cert_lifetime
            )
            ca = service.ca.ca_cert().decode()
        except KeyError:
            raise HTTPException(404, f"no enrolment {enrolment_id!r} of this client") from None
        except TLSError as exc:
            raise HTTPException(503, f"the cluster's CA cannot be read: {exc}") from None
        endpoints = [f":{address}" for address in service.endpoints()]
        return {
            "name": enrolment.name,
            "topics": {"insert": list(enrolment.topics), "query": []},
            "ca": ca,
            "cert": enrolment.cert,
            "key": enrolment.key,
            "expires": enrolment.not_after,
            "insert": {"insert": endpoints, "query": []},
            "query": [],
            "cluster": service.cluster_id,
        }

    @app.delete("/clientcontroller/enrol/{enrolment_id}")
    def unenrol(enrolment_id: str, who: Annotated[Caller, Depends(caller)]) -> dict[str, str]:
        _revoke(service.ca, owned(enrolment_id, who).serials)  # first: kept if it fails
        service.enrolments.remove(enrolment_id)
        return {"message": "success", "detail": "Client removed"}

    if service.issuer is not None:
        _add_issuer(app, service.issuer)
    return app


def _revoke(store: CAStore, serials: list[tuple[int, float]]) -> None:
    try:
        store.revoke(serials)
    except (OSError, TLSError) as exc:
        raise HTTPException(503, f"the certificates cannot be revoked now: {exc}") from None


def _add_issuer(app: FastAPI, issuer: BuiltinIssuer) -> None:
    realm = urllib.parse.urlsplit(issuer.url).path

    @app.get(f"{realm}/protocol/openid-connect/certs")
    def certs() -> dict[str, Any]:
        return issuer.jwks()

    @app.get(f"{realm}/.well-known/openid-configuration")
    def configuration() -> dict[str, Any]:
        return {
            "issuer": issuer.url,
            "token_endpoint": token_path(issuer.url),
            "jwks_uri": certs_path(issuer.url),
            "grant_types_supported": ["client_credentials"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    @app.post(f"{realm}/protocol/openid-connect/token")
    async def token(request: Request, authorization: Annotated[str | None, Header()] = None):
        # OAuth2 sends a form (application/x-www-form-urlencoded); the client's
        # credentials come in it or as HTTP Basic.
        form = urllib.parse.parse_qs((await request.body()).decode(errors="replace"))
        fields = {key: values[0] for key, values in form.items()}
        if fields.get("grant_type") != "client_credentials":
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "client_credentials"},
                status_code=400,
            )
        client_id, secret = fields.get("client_id", ""), fields.get("client_secret", "")
        scheme, _, basic = (authorization or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(basic).decode()
            except ValueError:
                decoded = ""
            client_id, _, secret = decoded.partition(":")
        answer = None
        if client_id and secret:  # scrypt takes a while: not on the event loop
            answer = await run_in_threadpool(issuer.token, client_id, secret)
        if answer is None:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "unknown client or secret"},
                status_code=401,
            )
        return answer
