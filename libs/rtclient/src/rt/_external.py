"""An external publisher's way in: the info-service (DESIGN section 9).

:class:`Enrolment` does the whole flow for ``rt.Cluster.from_info_service``:

1. asks the info-service where its identity provider issues tokens
   (``GET /informationservice/config``), and gets a token there with the client
   credentials grant;
2. enrols its name for its topics (``POST /clientcontroller/enrol``);
3. reads its details (``GET /informationservice/details/{id}``): the nodes' external
   push endpoints, the cluster CA, and a certificate and key for it alone;
4. then, in a daemon thread, reads the details again every ``POLL_INTERVAL`` seconds
   (getting a new token when the last one is near its end), so a renewed certificate or
   a moved endpoint is used from the next connection on.

:meth:`Enrolment.connect` opens a mutual-TLS channel to a node's current endpoint with
the current pair; the publisher's replicator calls it for every push session. Errors:
:class:`EnrolmentError` with the info-service's reason.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import grpc
import jwt
import msgspec

from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.errors import RTError
from rtcommon.grpcopts import CHANNEL_OPTIONS
from rtcommon.rest import RestError, rest_call
from rtcommon.tls import channel_credentials

__all__ = ["POLL_INTERVAL", "Enrolment", "EnrolmentError"]

log = logging.getLogger("rt.external")

#: Details are read again this often (seconds).
POLL_INTERVAL = 5.0
#: A token this close to its end is replaced before the next request (seconds).
TOKEN_MARGIN = 30.0
REQUEST_TIMEOUT = 10.0


class EnrolmentError(RTError):
    """The info-service or the identity provider refused, or did not answer."""


class Details(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    topics: tuple[str, ...]
    endpoints: tuple[str, ...]
    cluster: str
    ca: bytes
    cert: bytes
    key: bytes


def _endpoint(text: str) -> str:
    """``host:port`` from the info-service's ``:host:port`` (q's handle form)."""
    return text.removeprefix(":")


class Enrolment:
    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        client_secret: str,
        name: str | None = None,
        topics: list[str] | tuple[str, ...] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = f"http://{self.url}"
        self.client_id = client_id
        self._secret = client_secret
        self.name = name or client_id
        self._topics = list(topics) if topics else None
        self._token = ""
        self._token_until = 0.0
        self._token_topics: list[str] = []
        self._lock = threading.Lock()
        self._credentials: grpc.ChannelCredentials | None = None
        self._stop = threading.Event()
        self.id = self._enrol()
        self.details = self._read_details()
        self.spec()  # a malformed answer fails here, before the poller starts
        self._poller = threading.Thread(
            target=self._poll, name=f"rt-enrolment {self.name}", daemon=True
        )
        self._poller.start()

    # -- what clients use ----------------------------------------------------------------

    def spec(self) -> ClusterSpec:
        """The cluster as this client reaches it: the nodes' external endpoints."""
        details = self.details
        return ClusterSpec(
            id=details.cluster,
            nodes=tuple(
                NodeSpec(id=n, name=f"node-{n}", push=address, pull="", rest="")
                for n, address in enumerate(details.endpoints)
            ),
            info_service=self.url,
        )

    def connect(self, node: NodeSpec) -> grpc.aio.Channel:
        """A mutual-TLS channel to ``node``'s current external endpoint."""
        with self._lock:
            details, credentials = self.details, self._credentials
            if credentials is None:
                credentials = self._credentials = channel_credentials(
                    details.ca, details.cert, details.key
                )
        endpoints = details.endpoints
        address = endpoints[node.id] if node.id < len(endpoints) else node.push
        return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)

    def close(self) -> None:
        self._stop.set()

    def unenrol(self) -> None:
        """Remove the enrolment: its certificates are revoked at once."""
        self.close()
        self._request("DELETE", f"/clientcontroller/enrol/{self.id}")

    # -- the flow ------------------------------------------------------------------------

    def _enrol(self) -> str:
        topics = self._topics
        if topics is None:
            self._ensure_token()
            topics = self._token_topics
            if not topics:
                raise EnrolmentError("the token names no topics for this client: give topics=[...]")
        body = {"name": self.name, "topics": {"insert": topics, "query": []}}
        answer = self._request("POST", "/clientcontroller/enrol", body)
        return str(answer["id"])

    def _read_details(self) -> Details:
        answer = self._request("GET", f"/informationservice/details/{self.id}")
        try:
            insert = answer["insert"]["insert"]
            topics = answer["topics"]["insert"]
            return Details(
                name=answer["name"],
                topics=tuple([topics] if isinstance(topics, str) else topics),
                endpoints=tuple(_endpoint(address) for address in insert),
                cluster=answer.get("cluster", ""),
                ca=answer["ca"].encode(),
                cert=answer["cert"].encode(),
                key=answer["key"].encode(),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise EnrolmentError(f"the info-service's details lack {exc}") from None

    def _poll(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            try:
                details = self._read_details()
            except Exception as exc:  # the poller must outlive any answer
                log.warning("reading the details of %s again: %s", self.name, exc)
                continue
            with self._lock:
                if details != self.details:
                    if details.endpoints != self.details.endpoints:
                        log.info("%s: endpoints now %s", self.name, ", ".join(details.endpoints))
                    self.details, self._credentials = details, None

    def _ensure_token(self) -> str:
        if self._token and time.time() < self._token_until - TOKEN_MARGIN:
            return self._token
        config = self._call("GET", f"{self.url}/informationservice/config")
        try:
            token_endpoint = config["token_endpoint"]
        except (KeyError, TypeError):
            raise EnrolmentError(
                f"{self.url} names no token endpoint: is it an info-service?"
            ) from None
        answer = self._call(
            "POST",
            token_endpoint,
            form={
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_secret": self._secret,
            },
        )
        try:
            self._token = answer["access_token"]
            self._token_until = time.time() + float(answer.get("expires_in", 60))
        except (KeyError, TypeError, ValueError) as exc:
            raise EnrolmentError(f"the identity provider's answer lacks {exc}") from None
        claims = _unverified_claims(self._token)
        topics = claims.get("rt_topics")
        self._token_topics = [str(topic) for topic in topics] if isinstance(topics, list) else []
        return self._token

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        token = self._ensure_token()
        return self._call(method, f"{self.url}{path}", token=token, json_body=body)

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            status, answer = rest_call(url, method=method, timeout=REQUEST_TIMEOUT, **kwargs)
        except RestError as exc:
            raise EnrolmentError(str(exc)) from exc
        if status >= 400:
            reason = answer
            if isinstance(answer, dict):
                reason = answer.get("detail") or answer.get("error_description") or answer
            raise EnrolmentError(f"{method} {url}: {status} {reason}")
        return answer


def _unverified_claims(token: str) -> dict[str, Any]:
    """A token's claims, read without checking it (the client only learns its topics)."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}
