"""A standard OIDC client library we did not write drives the platform end to end: Authlib's
AsyncOAuth2Client (httpx), configured only from the discovery document; id_token checked with
authlib.jose (JsonWebKey + JsonWebToken + OIDC CodeIDToken rules: signature by kid from the JWKS,
iss, aud, exp, iat, nonce, at_hash, azp, auth_time).

discovery -> authorize with PKCE (S256) and nonce -> RFC 9207 iss check -> token -> id_token
validation -> userinfo -> refresh (and the refreshed id_token) -> userinfo with the new token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import asyncpg
import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.jose import JsonWebKey, JsonWebToken  # Authlib warns it moves to joserfc; kept until 2.0
from authlib.jose.errors import JoseError
from authlib.oidc.core import CodeIDToken
from joserfc.errors import JoseError as JoserfcError  # Authlib's OIDC claim checks raise these now

from libs.platform.config import Settings
from services.account import store as account_store
from tests.support.factories import make_developer, make_user
from tests.support.oauth import login, make_app
from tests.support.stack import Stack

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PASSWORD = "correct horse battery"
CB = "https://rp.example/authlib/callback"
SCOPE = "openid profile email balance"


@pytest.fixture(scope="module")
async def owner(db: asyncpg.Pool, settings: Settings):
    user, _ = await make_developer(db, settings)
    return user


@pytest.fixture
async def user(db: asyncpg.Pool):
    u = await make_user(db, PASSWORD)
    await account_store.set_balance(db, u.id, 1000000, 250000)
    return u


@pytest.fixture
async def browser(http: aiohttp.ClientSession, stack: Stack, user) -> aiohttp.ClientSession:
    """The user's browser, logged in on the platform (the part no OAuth client library does)."""
    await login(http, stack.base, user.username, PASSWORD)
    return http


@pytest.fixture
async def plain() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def discover(plain: httpx.AsyncClient, base: str) -> dict:
    r = await plain.get(f"{base}/.well-known/openid-configuration")
    assert r.status_code == 200
    return r.json()


async def user_agent(browser: aiohttp.ClientSession, url: str) -> str:
    """Follow the authorization URL as the browser would; return where it sends the user back."""
    async with browser.get(url, allow_redirects=False) as r:
        assert r.status == 302, (r.status, (await r.text())[:300])
        return r.headers["Location"]


def validate_id_token(metadata: dict, jwks: dict, id_token: str, *, client_id: str, access_token: str, nonce=None):
    keys = JsonWebKey.import_key_set(jwks)
    claims = JsonWebToken(metadata["id_token_signing_alg_values_supported"]).decode(
        id_token,
        keys,
        claims_cls=CodeIDToken,
        claims_options={
            "iss": {"essential": True, "value": metadata["issuer"]},
            "aud": {"essential": True, "value": client_id},
        },
        claims_params={"nonce": nonce, "client_id": client_id, "access_token": access_token},
    )
    claims.validate(leeway=5)
    return claims


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post", "none"])
async def test_authlib_client_end_to_end(
    stack: Stack, browser, plain: httpx.AsyncClient, db, settings: Settings, owner, user, auth_method: str
) -> None:
    metadata = await discover(plain, stack.base)
    assert auth_method in metadata["token_endpoint_auth_methods_supported"]
    assert "S256" in metadata["code_challenge_methods_supported"]
    registered = "none" if auth_method == "none" else "client_secret_post"
    client_id, client_secret = await make_app(
        db, settings, owner.id, [CB], name="Authlib RP", token_endpoint_auth_method=registered
    )

    async with AsyncOAuth2Client(
        client_id=client_id,
        client_secret=client_secret,
        token_endpoint_auth_method=auth_method,
        scope=SCOPE,
        redirect_uri=CB,
        code_challenge_method="S256",
    ) as client:
        nonce, verifier = generate_token(20), generate_token(64)
        url, state = client.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce, auto_authorize="true"
        )
        assert "code_challenge=" in url and "code_challenge_method=S256" in url
        callback = await user_agent(browser, url)
        assert callback.startswith(CB + "?")
        params = dict(parse_qsl(urlsplit(callback).query))
        assert params["iss"] == metadata["issuer"]  # RFC 9207: the response comes from whom we asked
        assert params["state"] == state

        token = await client.fetch_token(
            metadata["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier
        )
        assert token["token_type"] == "Bearer" and token["scope"] == SCOPE
        jwks = (await plain.get(metadata["jwks_uri"])).json()
        claims = validate_id_token(
            metadata,
            jwks,
            token["id_token"],
            client_id=client_id,
            access_token=token["access_token"],
            nonce=nonce,
        )
        assert claims["nonce"] == nonce and claims["email"] == user.email

        info = (await client.get(metadata["userinfo_endpoint"])).json()
        assert info["sub"] == claims["sub"] == str(user.id)
        assert info["username"] == user.username and info["balance_formatted"] == "750.00"

        old_access = token["access_token"]
        refreshed = await client.refresh_token(metadata["token_endpoint"])
        assert refreshed["access_token"] != old_access
        assert refreshed["refresh_token"] != token["refresh_token"]  # rotated
        refreshed_claims = validate_id_token(
            metadata, jwks, refreshed["id_token"], client_id=client_id, access_token=refreshed["access_token"]
        )
        assert refreshed_claims["sub"] == claims["sub"] and refreshed_claims["auth_time"] == claims["auth_time"]
        info = (await client.get(metadata["userinfo_endpoint"])).json()  # with the new access token
        assert info["sub"] == str(user.id)


async def test_authlib_catches_a_wrong_nonce_and_a_foreign_access_token(
    stack: Stack, browser, plain: httpx.AsyncClient, db, settings: Settings, owner
) -> None:
    """The validation above really validates: a replayed id_token (other nonce) or one paired with
    another access token (at_hash) is rejected by the library."""
    metadata = await discover(plain, stack.base)
    client_id, client_secret = await make_app(db, settings, owner.id, [CB])
    async with AsyncOAuth2Client(
        client_id, client_secret, scope=SCOPE, redirect_uri=CB, code_challenge_method="S256"
    ) as client:
        tokens = []
        for _ in range(2):
            verifier = generate_token(64)
            url, state = client.create_authorization_url(
                metadata["authorization_endpoint"], code_verifier=verifier, nonce="the-nonce", auto_authorize="true"
            )
            callback = await user_agent(browser, url)
            tokens.append(
                await client.fetch_token(
                    metadata["token_endpoint"], authorization_response=callback, state=state, code_verifier=verifier
                )
            )
    jwks = (await plain.get(metadata["jwks_uri"])).json()
    first, second = tokens
    validate_id_token(
        metadata, jwks, first["id_token"], client_id=client_id, access_token=first["access_token"], nonce="the-nonce"
    )
    with pytest.raises((JoseError, JoserfcError), match="nonce"):
        validate_id_token(
            metadata, jwks, first["id_token"], client_id=client_id, access_token=first["access_token"], nonce="other"
        )
    with pytest.raises((JoseError, JoserfcError), match="at_hash"):
        validate_id_token(
            metadata, jwks, first["id_token"], client_id=client_id, access_token=second["access_token"], nonce=None
        )
    with pytest.raises((JoseError, JoserfcError), match="aud"):  # another audience
        validate_id_token(
            metadata, jwks, first["id_token"], client_id="client_other", access_token=first["access_token"]
        )
