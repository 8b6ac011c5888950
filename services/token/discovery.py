"""Server metadata: ``GET /.well-known/openid-configuration`` (OpenID Connect Discovery 1.0, section 3)
and ``GET /.well-known/oauth-authorization-server`` (RFC 8414), one document served at both.

It lists exactly what works, and is derived from the code where the code decides:
- grant types: the token endpoint's grant table (token_endpoint.GRANTS);
- revocation, introspection and device authorization (RFC 8628 4) endpoints: only if this app
  really routes them;
- id_token algorithm: the one id_tokens are signed with (id_tokens.py; never HS256);
- every URL under PUBLIC_BASE_URL; ``issuer`` is exactly the ``iss`` of our tokens and of the
  RFC 9207 ``iss`` authorization response parameter.

The rest mirrors rules enforced elsewhere, each pinned by a test against the code that enforces it:
scopes (libs/oauth/vocabulary.SCOPES; the internal machine scopes of client_credentials are not
advertised, RFC 8414 2 allows that), response type ``code`` only, PKCE ``S256`` only, prompts,
client authentication (services/token/client_auth.py). Values OIDC Discovery defaults to ``true``
that we do not support are stated as ``false`` (``request_uri_parameter_supported``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from libs.oauth.vocabulary import PROMPTS, SCOPES
from libs.platform.config import Settings
from libs.platform.web import SETTINGS, json_response

from . import token_endpoint
from .id_tokens import id_token_algorithm

OPENID_CONFIGURATION = "/.well-known/openid-configuration"
OAUTH_AUTHORIZATION_SERVER = "/.well-known/oauth-authorization-server"

AUTHORIZE_PATH = "/api/oauth2/authorize"
TOKEN_PATH = "/api/oauth2/token"
USERINFO_PATH = "/api/oauth2/userinfo"
JWKS_PATH = "/api/oauth2/jwks"
REVOKE_PATH = "/api/oauth2/revoke"
INTROSPECT_PATH = "/api/oauth2/introspect"
DEVICE_AUTHORIZATION_PATH = "/api/oauth2/device_authorization"

# discovery lists openid first (OIDC Discovery 3); the same set as the authorize endpoint's
SCOPES_SUPPORTED = ("openid", *(s for s in SCOPES if s != "openid"))
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
CONFIDENTIAL_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
# Claims that can appear in an id_token or the userinfo response (services/account/userinfo.py).
CLAIMS = (
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "email",
    "email_verified",
    "id",
    "username",
    "created_time",
    "status",
    "quota",
    "used_quota",
    "balance_formatted",
)
CACHE = {"Cache-Control": "public, max-age=300"}

METADATA = web.AppKey("server_metadata", dict)  # {"doc": the document}, filled on first use


def _routes(app: web.Application, method: str, path: str) -> bool:
    return any(
        route.method == method and route.resource is not None and route.resource.canonical == path
        for route in app.router.routes()
    )


def server_metadata(
    settings: Settings, *, grant_types: list[str], revocation: bool, introspection: bool, device: bool = False
) -> dict[str, Any]:
    base = settings.public_base_url
    doc: dict[str, Any] = {
        "issuer": settings.issuer,
        "authorization_endpoint": base + AUTHORIZE_PATH,
        "token_endpoint": base + TOKEN_PATH,
        "userinfo_endpoint": base + USERINFO_PATH,
        "jwks_uri": base + JWKS_PATH,
        "scopes_supported": list(SCOPES_SUPPORTED),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [id_token_algorithm(settings)],
        "claims_supported": list(CLAIMS),
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "prompt_values_supported": list(PROMPTS),
        "authorization_response_iss_parameter_supported": True,
    }
    if revocation:
        doc["revocation_endpoint"] = base + REVOKE_PATH
        doc["revocation_endpoint_auth_methods_supported"] = list(CLIENT_AUTH_METHODS)
    if introspection:
        doc["introspection_endpoint"] = base + INTROSPECT_PATH
        # Introspection needs a client that can authenticate: public clients cannot use it.
        doc["introspection_endpoint_auth_methods_supported"] = list(CONFIDENTIAL_AUTH_METHODS)
    if device:
        doc["device_authorization_endpoint"] = base + DEVICE_AUTHORIZATION_PATH
    return doc


def metadata_of(app: web.Application) -> dict[str, Any]:
    """The document for ``app`` (computed once: the routes and settings do not change)."""
    cache = app[METADATA]
    doc = cache.get("doc")
    if doc is None:
        doc = server_metadata(
            app[SETTINGS],
            grant_types=list(token_endpoint.GRANTS),
            revocation=_routes(app, "POST", REVOKE_PATH),
            introspection=_routes(app, "POST", INTROSPECT_PATH),
            device=_routes(app, "POST", DEVICE_AUTHORIZATION_PATH),
        )
        cache["doc"] = doc
    return doc


async def handle_metadata(request: web.Request) -> web.Response:
    return json_response(metadata_of(request.app), headers=CACHE)


def add_routes(app: web.Application) -> None:
    app[METADATA] = {}
    app.router.add_get(OPENID_CONFIGURATION, handle_metadata)
    app.router.add_get(OAUTH_AUTHORIZATION_SERVER, handle_metadata)
