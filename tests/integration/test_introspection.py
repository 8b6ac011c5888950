"""POST /api/oauth2/introspect (RFC 7662) through the gateway: active, expired, revoked, unknown and
other clients' tokens (access and refresh), client authentication, hostile input."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import asyncpg
import jwt
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.contracts.token import SIGNING_KEYS
from libs.oauth.access_tokens import mark_revoked, mint
from libs.oauth.keys import KeyStore
from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from services.account import store as account_store
from services.token.families import revoke_family
from services.token.token_endpoint import GRANTS
from tests.support.clock import expire_refresh_token
from tests.support.codes import ClientApp, make_client, obtain_tokens, post_token, refresh_form
from tests.support.stack import Stack

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
async def app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)


@pytest.fixture(scope="module")
async def other(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings, redirect_uri="https://other.example/cb")


@pytest.fixture(scope="module")
async def internal(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    made = await make_client(db, settings, redirect_uri="https://internal.example/cb")
    await account_store.set_app_internal(db, made.client_id, True)
    return made


@pytest.fixture(scope="module")
async def public(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings, method="none", redirect_uri="https://spa.example/cb")


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def tokens(stack: Stack, http, db, settings, app) -> dict:
    return await obtain_tokens(http, stack.base, db, settings, app)


async def introspect(
    http: aiohttp.ClientSession,
    stack: Stack,
    caller: ClientApp | None,
    token: str | None,
    *,
    basic: bool = False,
    **extra: str,
) -> tuple[int, dict[str, str], dict]:
    form: dict[str, str] = dict(extra)
    if token is not None:
        form["token"] = token
    headers = dict(FORM)
    if caller is not None:
        if basic:
            raw = f"{caller.client_id}:{caller.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        else:
            form["client_id"] = caller.client_id
            if caller.client_secret:
                form["client_secret"] = caller.client_secret
    async with http.post(f"{stack.base}/api/oauth2/introspect", data=form, headers=headers) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def assert_inactive(http, stack, caller, token) -> None:
    status, headers, body = await introspect(http, stack, caller, token)
    assert status == 200, body
    assert body == {"active": False}  # nothing else, whatever the reason (RFC 7662 2.2)
    assert headers["Cache-Control"] == "no-store"


# --- active -----------------------------------------------------------------------------------------
async def test_active_access_token(stack, http, settings, app, tokens) -> None:
    status, headers, body = await introspect(http, stack, app, tokens["access_token"])
    assert status == 200 and headers["Cache-Control"] == "no-store"
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert body["active"] is True
    assert body["scope"] == "profile balance"
    assert body["client_id"] == app.client_id
    assert body["sub"] == str(app.user_id)
    assert body["username"].startswith("u_")
    assert body["token_type"] == "Bearer"
    assert body["iss"] == settings.issuer and body["aud"] == settings.resource_audience
    assert body["exp"] == claims["exp"] and body["iat"] == claims["iat"] and body["jti"] == claims["jti"]
    assert "fam" not in body


async def test_active_refresh_token(stack, http, settings, app, tokens) -> None:
    status, _, body = await introspect(http, stack, app, tokens["refresh_token"])
    assert status == 200
    assert body["active"] is True
    assert body["client_id"] == app.client_id and body["sub"] == str(app.user_id)
    assert body["scope"] == "profile balance" and body["token_use"] == "refresh_token"
    assert body["exp"] - body["iat"] == pytest.approx(settings.refresh_token_ttl_seconds, abs=5)
    assert "token_type" not in body  # not a Bearer token


@pytest.mark.parametrize("hint", ["access_token", "refresh_token", "bogus"])
async def test_hint_is_not_needed(stack, http, app, tokens, hint) -> None:
    for token in (tokens["access_token"], tokens["refresh_token"]):
        status, _, body = await introspect(http, stack, app, token, token_type_hint=hint)
        assert status == 200 and body["active"] is True


async def test_client_secret_basic(stack, http, app, tokens) -> None:
    status, _, body = await introspect(http, stack, app, tokens["access_token"], basic=True)
    assert status == 200 and body["active"] is True


async def test_public_client_tokens_introspected_by_an_internal_service(
    stack, http, db, settings, public, internal
) -> None:
    pub = await obtain_tokens(http, stack.base, db, settings, public)
    status, _, body = await introspect(http, stack, internal, pub["access_token"])
    assert status == 200 and body["active"] is True and body["client_id"] == public.client_id


# --- inactive: expired, revoked, used, unknown, another client's ------------------------------------
async def test_expired_access_token(stack, http, db, settings, app) -> None:
    keys = KeyStore(db, settings.jwt_algorithm, timedelta(hours=3), SIGNING_KEYS)
    await keys.load()
    now = int(time.time())
    expired, _ = await mint(
        keys,
        settings,
        sub=str(app.user_id),
        client_id=app.client_id,
        scope="profile",
        family=None,
        extra={"iat": now - 7300, "nbf": now - 7300, "exp": now - 100},
    )
    await assert_inactive(http, stack, app, expired)


async def test_expired_refresh_token(stack, http, db, settings, app) -> None:
    fresh = await obtain_tokens(http, stack.base, db, settings, app)

    await expire_refresh_token(db, settings, fresh["refresh_token"])
    await assert_inactive(http, stack, app, fresh["refresh_token"])
    status, _, body = await introspect(http, stack, app, fresh["access_token"])
    assert body["active"] is True  # the access token has its own lifetime


async def test_revoked_family(stack, http, db, settings, app, tokens, redis) -> None:
    family = jwt.decode(tokens["access_token"], options={"verify_signature": False})["fam"]
    await revoke_family(db, redis, settings, family, "test")
    await assert_inactive(http, stack, app, tokens["access_token"])
    await assert_inactive(http, stack, app, tokens["refresh_token"])


async def test_revoked_family_even_without_redis_marker(stack, http, db, settings, app, tokens, redis) -> None:
    """Postgres says revoked, Redis lost the marker: still inactive (fall back to the source of truth)."""
    family = jwt.decode(tokens["access_token"], options={"verify_signature": False})["fam"]
    await revoke_family(db, redis, settings, family, "test")
    await redis.delete(f"{settings.redis_prefix}revoked:fam:{family}")
    await assert_inactive(http, stack, app, tokens["access_token"])


async def test_revoked_access_token_by_jti(stack, http, settings, app, tokens, redis) -> None:
    jti = jwt.decode(tokens["access_token"], options={"verify_signature": False})["jti"]
    await mark_revoked(redis, settings, jtis=[jti])
    await assert_inactive(http, stack, app, tokens["access_token"])
    status, _, body = await introspect(http, stack, app, tokens["refresh_token"])
    assert body["active"] is True  # only that access token was revoked


async def test_revoked_through_rfc7009(stack, http, app, tokens) -> None:
    """The RFC 7009 endpoint and introspection agree: once revoked, both tokens are inactive."""
    form = {"token": tokens["refresh_token"], "client_id": app.client_id, "client_secret": app.client_secret}
    async with http.post(f"{stack.base}/api/oauth2/revoke", data=form) as r:
        if r.status == 404:
            pytest.skip("no revocation endpoint")
        assert r.status == 200
    await assert_inactive(http, stack, app, tokens["refresh_token"])
    await assert_inactive(http, stack, app, tokens["access_token"])


async def test_rotated_refresh_token_is_inactive(stack, http, app, tokens) -> None:
    status, _, new = await post_token(http, stack.base, refresh_form(app, tokens["refresh_token"]))
    assert status == 200, new
    await assert_inactive(http, stack, app, tokens["refresh_token"])
    status, _, body = await introspect(http, stack, app, new["refresh_token"])
    assert body["active"] is True


async def test_disabled_user(stack, http, db, settings, app) -> None:
    fresh = await obtain_tokens(http, stack.base, db, settings, app)
    await account_store.set_user_status(db, app.user_id, UserStatus.DISABLED)
    try:
        await assert_inactive(http, stack, app, fresh["access_token"])
        await assert_inactive(http, stack, app, fresh["refresh_token"])
    finally:
        await account_store.set_user_status(db, app.user_id, UserStatus.ACTIVE)


async def test_another_clients_tokens_are_inactive(stack, http, app, other, tokens) -> None:
    """Decision (services/token/introspect.py): a client sees only its own tokens."""
    await assert_inactive(http, stack, other, tokens["access_token"])
    await assert_inactive(http, stack, other, tokens["refresh_token"])


async def test_internal_service_may_introspect_any_token(stack, http, app, internal, tokens) -> None:
    for token in (tokens["access_token"], tokens["refresh_token"]):
        status, _, body = await introspect(http, stack, internal, token)
        assert status == 200 and body["active"] is True and body["client_id"] == app.client_id


async def test_unknown_kid_and_forged_signature(stack, http, settings, app, tokens) -> None:
    header = jwt.get_unverified_header(tokens["access_token"])
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged_same_kid = jwt.encode(claims, forger, algorithm="RS256", headers={"kid": header["kid"], "typ": "at+jwt"})
    forged_new_kid = jwt.encode(claims, forger, algorithm="RS256", headers={"kid": "nope", "typ": "at+jwt"})
    unsigned = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}).encode())
        .decode()
        .rstrip("=")
        + "."
        + tokens["access_token"].split(".")[1]
        + "."
    )
    for token in (forged_same_kid, forged_new_kid, unsigned):
        await assert_inactive(http, stack, app, token)


async def test_id_token_is_not_an_active_access_token(stack, http, db, settings, app) -> None:
    fresh = await obtain_tokens(http, stack.base, db, settings, app, scope="openid profile")
    assert "id_token" in fresh
    await assert_inactive(http, stack, app, fresh["id_token"])


@pytest.mark.parametrize(
    "token",
    [
        "unknown",
        "refresh_" + "A" * 43,
        "refresh_",
        "a.b.c",
        "eyJhbGciOiJIUzI1NiJ9.e30.x",
        "' OR 1=1 --",
        "状态-😀",
        "x" * 2000,
        "secret_abc",
    ],
)
async def test_unknown_tokens(stack, http, app, token) -> None:
    await assert_inactive(http, stack, app, token)


@pytest.mark.skipif("client_credentials" not in GRANTS, reason="client_credentials grant not available")
async def test_machine_token(stack, http, internal) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": internal.client_id,
        "client_secret": internal.client_secret,
    }
    status, _, issued = await post_token(http, stack.base, form)
    assert status == 200, issued
    status, _, body = await introspect(http, stack, internal, issued["access_token"])
    assert status == 200 and body["active"] is True
    assert body["sub"] == internal.client_id and "username" not in body


# --- client authentication and request errors ---------------------------------------------------------
async def test_no_client_authentication(stack, http, tokens) -> None:
    status, headers, body = await introspect(http, stack, None, tokens["access_token"])
    assert status == 401 and body["error"] == "invalid_client"
    assert headers["Cache-Control"] == "no-store"


async def test_wrong_secret(stack, http, app, tokens) -> None:
    wrong = ClientApp(app.client_id, "secret_wrong", app.redirect_uri, app.user_id)
    status, _, body = await introspect(http, stack, wrong, tokens["access_token"])
    assert status == 401 and body["error"] == "invalid_client"
    status, headers, body = await introspect(http, stack, wrong, tokens["access_token"], basic=True)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")


async def test_public_client_cannot_introspect(stack, http, db, settings, public) -> None:
    pub = await obtain_tokens(http, stack.base, db, settings, public)
    status, _, body = await introspect(http, stack, public, pub["access_token"])
    assert status == 401 and body["error"] == "invalid_client"


async def test_missing_token(stack, http, app) -> None:
    status, _, body = await introspect(http, stack, app, None)
    assert status == 400 and body["error"] == "invalid_request"


async def test_token_twice(stack, http, app, tokens) -> None:
    data = f"token={tokens['access_token']}&token=x&client_id={app.client_id}&client_secret={app.client_secret}"
    async with http.post(f"{stack.base}/api/oauth2/introspect", data=data, headers=FORM) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_request"


async def test_json_body_is_refused(stack, http, app, tokens) -> None:
    body = {"token": tokens["access_token"], "client_id": app.client_id, "client_secret": app.client_secret}
    async with http.post(f"{stack.base}/api/oauth2/introspect", json=body) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_request"


async def test_get_is_not_allowed(stack, http) -> None:
    async with http.get(f"{stack.base}/api/oauth2/introspect") as r:
        assert r.status == 405
