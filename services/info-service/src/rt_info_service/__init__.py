"""rt_info_service: enrolment of external publishers (DESIGN section 9).

A client authenticates with OAuth2 client credentials (a Keycloak realm, or the built-in
issuer, ``_tokens``), enrols a name for the topics it may insert (``_enrolments``), and
reads its details: the nodes' external push endpoints and a short-lived certificate the
cluster CA signed for it alone (``rtcommon.tls``). The REST API is ``_app``.
"""

from ._app import InfoService, create_app

__all__ = ["InfoService", "create_app"]
