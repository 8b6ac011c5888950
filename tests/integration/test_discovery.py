"""Server metadata through the gateway: OIDC Discovery (/.well-known/openid-configuration) and
RFC 8414 (/.well-known/oauth-authorization-server), validated by Authlib's own metadata classes and
checked against the code that enforces each advertised rule."""

from __future__ import annotations

import aiohttp
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata

from libs.oauth.vocabulary import PROMPTS
from libs.oauth.vocabulary import SCOPES as AUTHORIZE_SCOPES
from libs.platform.config import Settings
from services.token import discovery, token_endpoint
from services.token.client_auth import presented_credentials
from tests.support.stack import Stack

PATHS = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], dict]:
    async with http.get(url) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


@pytest.fixture
async def metadata(stack: Stack, http: aiohttp.ClientSession) -> dict:
    status, _, doc = await fetch(http, stack.base + PATHS[0])
    assert status == 200
    return doc


@pytest.mark.parametrize("path", PATHS)
async def test_served_as_cacheable_json(stack: Stack, http: aiohttp.ClientSession, path: str) -> None:
    status, headers, doc = await fetch(http, stack.base + path)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert "max-age" in headers["Cache-Control"]
    assert doc["issuer"]


async def test_both_documents_are_the_same(stack: Stack, http: aiohttp.ClientSession) -> None:
    docs = [(await fetch(http, stack.base + p))[2] for p in PATHS]
    assert docs[0] == docs[1]


async def test_authlib_validates_both(metadata: dict) -> None:
    OpenIDProviderMetadata(metadata).validate()  # OIDC Discovery 1.0 section 3
    AuthorizationServerMetadata(metadata).validate()  # RFC 8414 section 2


async def test_issuer_and_endpoints(metadata: dict, settings: Settings) -> None:
    base = settings.public_base_url
    assert metadata["issuer"] == settings.issuer == base
    assert metadata["authorization_endpoint"] == f"{base}/api/oauth2/authorize"
    assert metadata["token_endpoint"] == f"{base}/api/oauth2/token"
    assert metadata["userinfo_endpoint"] == f"{base}/api/oauth2/userinfo"
    assert metadata["jwks_uri"] == f"{base}/api/oauth2/jwks"
    assert metadata["introspection_endpoint"] == f"{base}/api/oauth2/introspect"


async def test_every_advertised_endpoint_answers(stack: Stack, http: aiohttp.ClientSession, metadata: dict) -> None:
    """Not 404/405 through the gateway: GET for authorize/userinfo/jwks, POST for the others."""
    gets = ("authorization_endpoint", "userinfo_endpoint", "jwks_uri")
    posts = ("token_endpoint", "introspection_endpoint", "revocation_endpoint")
    for name in gets + posts:
        if name not in metadata:
            continue
        url = metadata[name].replace(metadata["issuer"], stack.base)
        method = http.get if name in gets else http.post
        async with method(url, allow_redirects=False) as r:
            assert r.status not in (404, 405), (name, r.status)


async def test_revocation_is_listed_exactly_when_routed(stack: Stack, metadata: dict) -> None:
    app = stack.runners["token"].app
    routed = any(r.method == "POST" and r.resource.canonical == "/api/oauth2/revoke" for r in app.router.routes())
    assert ("revocation_endpoint" in metadata) == routed
    if routed:
        assert metadata["revocation_endpoint"] == metadata["issuer"] + "/api/oauth2/revoke"


async def test_grant_types_are_the_token_endpoints(metadata: dict) -> None:
    assert metadata["grant_types_supported"] == list(token_endpoint.GRANTS)
    assert {"authorization_code", "refresh_token"} <= set(metadata["grant_types_supported"])
    assert "implicit" not in metadata["grant_types_supported"]
    assert "password" not in metadata["grant_types_supported"]


async def test_what_the_authorize_endpoint_supports(metadata: dict) -> None:
    assert (
        set(metadata["scopes_supported"]) == set(AUTHORIZE_SCOPES) == {"openid", "profile", "email", "balance", "spend"}
    )
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["response_modes_supported"] == ["query"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]  # plain is refused
    assert set(metadata["prompt_values_supported"]) == set(PROMPTS)
    assert metadata["authorization_response_iss_parameter_supported"] is True  # RFC 9207
    # OIDC Discovery defaults request_uri_parameter_supported to true: we must say false.
    assert metadata["request_uri_parameter_supported"] is False
    assert metadata["request_parameter_supported"] is False
    assert metadata["claims_parameter_supported"] is False


async def test_client_authentication_methods(metadata: dict) -> None:
    assert set(metadata["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
        "none",
    }
    # Introspection needs a client that can authenticate.
    assert set(metadata["introspection_endpoint_auth_methods_supported"]) == {
        "client_secret_basic",
        "client_secret_post",
    }
    # The token endpoint really reads both confidential methods.
    assert presented_credentials(None, {"client_id": "a", "client_secret": "b"}).secret == "b"
    assert presented_credentials("Basic YTpi", {}).secret == "b"


async def test_id_token_and_subject(metadata: dict, settings: Settings) -> None:
    assert metadata["subject_types_supported"] == ["public"]
    expected = settings.jwt_algorithm if settings.jwt_algorithm != "HS256" else "RS256"
    assert metadata["id_token_signing_alg_values_supported"] == [expected]
    assert "HS256" not in metadata["id_token_signing_alg_values_supported"]
    for claim in ("sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "email", "email_verified"):
        assert claim in metadata["claims_supported"]


def test_hs256_mode_advertises_rs256_id_tokens(settings: Settings) -> None:
    legacy = settings.model_copy(update={"jwt_algorithm": "HS256"})
    doc = discovery.server_metadata(legacy, grant_types=["authorization_code"], revocation=False, introspection=False)
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "revocation_endpoint" not in doc and "introspection_endpoint" not in doc
    es = settings.model_copy(update={"jwt_algorithm": "ES256"})
    doc = discovery.server_metadata(es, grant_types=["authorization_code"], revocation=True, introspection=True)
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    assert doc["revocation_endpoint"].endswith("/api/oauth2/revoke")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_read_only(stack: Stack, http: aiohttp.ClientSession, method: str) -> None:
    async with http.request(method, stack.base + PATHS[0]) as r:
        assert r.status == 405


async def test_unknown_well_known_is_404(stack: Stack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.base + "/.well-known/nope") as r:
        assert r.status == 404
