"""OpenID Connect through the gateway: the id_token of the code flow and of refresh (OIDC Core
3.1.3.3, 3.1.3.6, 3.1.3.7, 12.2), nonce round trip, auth_time, email claims, prompt=none, the
RFC 9207 ``iss`` on every authorization response, userinfo for OIDC scopes."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import jwt
import orjson
import pytest
import redis.asyncio as aioredis

from libs.platform.config import Settings
from libs.platform.redis import key
from tests.support.codes import post_token
from tests.support.factories import make_developer, make_user
from tests.support.oauth import authorize, login, make_app, query_of
from tests.support.stack import Stack

PASSWORD = "correct horse battery"
CB = "https://rp.example/oidc/callback"
ALL = "openid profile email balance"


@pytest.fixture(scope="module")
async def client(db: asyncpg.Pool, settings: Settings) -> tuple[str, str]:
    owner, _ = await make_developer(db, settings)
    cid, secret = await make_app(db, settings, owner.id, [CB], name="OIDC RP")
    assert secret is not None
    return cid, secret


@pytest.fixture
async def user(db: asyncpg.Pool):
    return await make_user(db, PASSWORD)


@pytest.fixture
async def browser(http: aiohttp.ClientSession, stack: Stack, user) -> aiohttp.ClientSession:
    await login(http, stack.base, user.username, PASSWORD)
    return http


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


def left_half_sha256(value: str) -> str:
    """OIDC Core 3.1.3.6, computed here independently of the server's code."""
    digest = hashlib.sha256(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


async def jwks(http: aiohttp.ClientSession, stack: Stack) -> jwt.PyJWKSet:
    async with http.get(f"{stack.base}/api/oauth2/jwks") as r:
        assert r.status == 200
        return jwt.PyJWKSet.from_dict(await r.json())


async def verify_id_token(
    http: aiohttp.ClientSession, stack: Stack, settings: Settings, id_token: str, client_id: str
) -> dict:
    header = jwt.get_unverified_header(id_token)
    assert header["typ"] == "JWT"
    keyset = await jwks(http, stack)
    key_ = next(k for k in keyset.keys if k.key_id == header["kid"])  # published in the JWKS
    assert header["alg"] == key_.algorithm_name != "HS256"
    return jwt.decode(
        id_token,
        key_.key,
        algorithms=[header["alg"]],
        audience=client_id,
        issuer=settings.issuer,
        options={"require": ["iss", "sub", "aud", "exp", "iat"]},
    )


async def code_flow(
    browser: aiohttp.ClientSession, stack: Stack, client: tuple[str, str], scope: str = ALL, **extra: str
) -> dict:
    q = await authorize(browser, stack.base, client[0], CB, scope=scope, **extra)
    assert "code" in q, q
    form = {
        "grant_type": "authorization_code",
        "code": q["code"],
        "redirect_uri": CB,
        "client_id": client[0],
        "client_secret": client[1],
    }
    status, _, body = await post_token(browser, stack.base, form)
    assert status == 200, body
    return body


async def refresh(http: aiohttp.ClientSession, stack: Stack, client: tuple[str, str], token: str, **extra: str) -> dict:
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": client[0], "client_secret": client[1]}
    status, _, body = await post_token(http, stack.base, form | extra)
    assert status == 200, body
    return body


async def userinfo(http: aiohttp.ClientSession, stack: Stack, access_token: str) -> tuple[int, dict]:
    async with http.get(f"{stack.base}/api/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"}) as r:
        return r.status, await r.json(content_type=None)


# --- the id_token of the code flow -----------------------------------------------------------------
async def test_id_token_claims_and_nonce_round_trip(stack, browser, settings, client, user) -> None:
    before = int(time.time())
    body = await code_flow(browser, stack, client, nonce="n-0S6_WzA2Mj")
    claims = await verify_id_token(browser, stack, settings, body["id_token"], client[0])
    assert claims["nonce"] == "n-0S6_WzA2Mj"
    assert claims["iss"] == settings.issuer
    assert claims["aud"] == client[0] and claims["azp"] == client[0]
    assert claims["sub"] == str(user.id)
    assert claims["at_hash"] == left_half_sha256(body["access_token"])
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl_seconds
    assert before - 5 <= claims["iat"] <= int(time.time()) + 1
    # auth_time: when the user entered the password (the login of the fixture), not now
    assert before - 60 <= claims["auth_time"] <= claims["iat"]
    assert claims["email"] == user.email and claims["email_verified"] is False
    assert "acr" not in claims  # one authentication method; no acr values are supported
    # The same subject as userinfo and the access token
    status, info = await userinfo(browser, stack, body["access_token"])
    assert status == 200 and info["sub"] == claims["sub"]
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["sub"] == claims["sub"]


async def test_nonce_is_absent_when_not_sent(stack, browser, settings, client) -> None:
    body = await code_flow(browser, stack, client)
    claims = await verify_id_token(browser, stack, settings, body["id_token"], client[0])
    assert "nonce" not in claims


@pytest.mark.parametrize("nonce", ["状态-😀", "<script>alert(1)</script>", "a" * 255, "' OR 1=1 --"])
async def test_nonce_is_returned_exactly(stack, browser, settings, client, nonce) -> None:
    body = await code_flow(browser, stack, client, scope="openid", nonce=nonce)
    claims = await verify_id_token(browser, stack, settings, body["id_token"], client[0])
    assert claims["nonce"] == nonce


async def test_no_id_token_without_openid(stack, browser, client) -> None:
    body = await code_flow(browser, stack, client, scope="profile balance", nonce="ignored")
    assert "id_token" not in body
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}  # the guide's


async def test_email_claims_only_with_email_scope(stack, browser, settings, client) -> None:
    body = await code_flow(browser, stack, client, scope="openid profile")
    claims = await verify_id_token(browser, stack, settings, body["id_token"], client[0])
    assert "email" not in claims and "email_verified" not in claims


async def test_auth_time_is_the_sessions_login(stack, browser, settings, client, redis) -> None:
    sid = next(c.value for c in browser.cookie_jar if c.key == "sid")
    skey = key(settings, "session", hashlib.sha256(sid.encode()).hexdigest())
    data = orjson.loads(await redis.get(skey))
    data["auth_time"] -= 500  # the user logged in 500 s ago
    await redis.set(skey, orjson.dumps(data), keepttl=True)
    body = await code_flow(browser, stack, client, scope="openid", max_age="3600")
    claims = await verify_id_token(browser, stack, settings, body["id_token"], client[0])
    assert claims["auth_time"] == data["auth_time"]
    assert claims["iat"] - claims["auth_time"] >= 500


async def test_id_token_is_not_an_access_token(stack, browser, client) -> None:
    body = await code_flow(browser, stack, client)
    status, info = await userinfo(browser, stack, body["id_token"])
    assert status == 401 and info["error"] == "invalid_token"


# --- refresh -----------------------------------------------------------------------------------------
async def test_refresh_returns_a_new_id_token_without_nonce(stack, browser, settings, client) -> None:
    first = await code_flow(browser, stack, client, nonce="n-1")
    original = await verify_id_token(browser, stack, settings, first["id_token"], client[0])
    second = await refresh(browser, stack, client, first["refresh_token"])
    claims = await verify_id_token(browser, stack, settings, second["id_token"], client[0])
    assert "nonce" not in claims  # OIDC Core 12.2
    assert claims["auth_time"] == original["auth_time"]  # the original authentication
    assert claims["sub"] == original["sub"] and claims["aud"] == original["aud"] and claims["iss"] == original["iss"]
    assert claims["at_hash"] == left_half_sha256(second["access_token"])
    assert claims["email"] == original["email"]


async def test_refresh_narrowed_without_openid_has_no_id_token(stack, browser, client) -> None:
    first = await code_flow(browser, stack, client)
    second = await refresh(browser, stack, client, first["refresh_token"], scope="profile")
    assert second["scope"] == "profile" and "id_token" not in second


async def test_refresh_without_openid_grant_has_no_id_token(stack, browser, client) -> None:
    first = await code_flow(browser, stack, client, scope="profile")
    second = await refresh(browser, stack, client, first["refresh_token"])
    assert "id_token" not in second


# --- prompt=none and iss (RFC 9207) ------------------------------------------------------------------
async def test_prompt_none_without_session_is_login_required(stack, http, settings, client) -> None:
    params = {
        "client_id": client[0],
        "redirect_uri": CB,
        "response_type": "code",
        "scope": "openid profile",
        "state": "xyz",
        "nonce": "n",
        "prompt": "none",
    }
    async with http.get(f"{stack.base}/api/oauth2/authorize", params=params, allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert location.startswith(CB + "?")
    q = query_of(location)
    assert q["error"] == "login_required" and q["state"] == "xyz" and q["iss"] == settings.issuer
    assert "code" not in q


async def test_iss_in_every_authorization_response(stack, browser, db, settings) -> None:
    owner, _ = await make_developer(db, settings)
    cid, _ = await make_app(db, settings, owner.id, [CB], name="iss check")
    success = await authorize(browser, stack.base, cid, CB, scope="openid")
    consent_required = await authorize(browser, stack.base, cid, CB, prompt="none", auto_authorize=None, scope=ALL)
    invalid_scope = await authorize(browser, stack.base, cid, CB, scope="openid admin")
    assert "code" in success
    assert consent_required["error"] == "consent_required"
    assert invalid_scope["error"] == "invalid_scope"
    for q in (success, consent_required, invalid_scope):
        assert q["iss"] == settings.issuer, q


# --- userinfo for the OIDC scopes ----------------------------------------------------------------------
async def test_userinfo_openid_only_is_just_sub(stack, browser, client, user) -> None:
    body = await code_flow(browser, stack, client, scope="openid")
    status, info = await userinfo(browser, stack, body["access_token"])
    assert status == 200 and info == {"sub": str(user.id)}


async def test_userinfo_openid_email(stack, browser, client, user) -> None:
    body = await code_flow(browser, stack, client, scope="openid email")
    status, info = await userinfo(browser, stack, body["access_token"])
    assert status == 200 and info == {"sub": str(user.id), "email": user.email, "email_verified": False}
