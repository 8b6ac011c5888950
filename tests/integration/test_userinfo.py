"""GET /api/oauth2/userinfo through the gateway (guide section "3. 用户信息端点"): the guide's fields,
filtered by scope, and RFC 6750 errors for every way a token can be wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import jwt
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.contracts.token import SIGNING_KEYS, ensure_signing_key
from libs.oauth.access_tokens import KEYS, mark_revoked, mint
from libs.oauth.events.bus import EventWaiter
from libs.oauth.events.types import QuotaChanged
from libs.oauth.keys import KeyStore
from libs.oauth.revocation import revoke_access_token
from libs.platform.config import Settings
from services.account import store as account_store
from services.account.user_status import disable_user_everywhere
from services.account.users import User
from tests.support.events import changed
from tests.support.factories import make_user
from tests.support.stack import Stack

PROFILE = {"sub", "id", "username", "email", "created_time", "status"}
BALANCE = {"sub", "quota", "used_quota", "balance_formatted"}
EMAIL = {"sub", "email", "email_verified"}


@pytest.fixture(scope="session")
async def keys(db: asyncpg.Pool, settings: Settings, stack: Stack) -> KeyStore:
    """A KeyStore like the token service's, after making sure a signing key exists (and that the
    running services have seen it, so the first request does not race their key cache)."""
    await ensure_signing_key(db, settings.jwt_algorithm)
    for runner in stack.runners.values():
        if KEYS in runner.app:
            await runner.app[KEYS].load()
    store = KeyStore(db, settings.jwt_algorithm, timedelta(hours=3), SIGNING_KEYS)
    await store.load()
    return store


@pytest.fixture
async def rich_user(db: asyncpg.Pool) -> User:
    user = await make_user(db)
    await account_store.set_balance(db, user.id, 1000000, 250000)
    return user


async def token_for(keys: KeyStore, settings: Settings, user_id: int | str, scope: str, **kw) -> str:
    token, _ = await mint(keys, settings, sub=str(user_id), client_id="client_x", scope=scope, family=None, **kw)
    return token


async def userinfo(http, stack: Stack, headers: dict[str, str], method: str = "GET"):
    async with http.request(method, f"{stack.base}/api/oauth2/userinfo", headers=headers) as r:
        return r.status, r.headers, await r.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("profile", PROFILE),
        ("balance", BALANCE),
        ("profile balance", PROFILE | BALANCE),
        ("balance profile", PROFILE | BALANCE),
        ("openid", {"sub"}),
        ("email", EMAIL),
        ("openid email", EMAIL),
        ("openid profile", PROFILE),
        ("profile email", PROFILE | EMAIL),
        ("openid profile email balance", PROFILE | BALANCE | EMAIL),
        ("balance offline_access", BALANCE),
    ],
)
async def test_fields_follow_the_scopes(stack: Stack, http, keys, settings, rich_user, scope, expected) -> None:
    status, headers, body = await userinfo(http, stack, bearer(await token_for(keys, settings, rich_user.id, scope)))
    assert status == 200, body
    assert set(body) == expected
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Type"].startswith("application/json")
    full = {
        "sub": str(rich_user.id),
        "id": rich_user.id,
        "username": rich_user.username,
        "email": rich_user.email,
        "quota": 1000000,
        "used_quota": 250000,
        "balance_formatted": "750.00",
        "created_time": int(rich_user.created_at.timestamp()),
        "status": 1,
        "email_verified": False,
    }
    assert body == {k: full[k] for k in expected}


async def test_the_guides_example_shape(stack: Stack, http, keys, settings, rich_user) -> None:
    _, _, body = await userinfo(http, stack, bearer(await token_for(keys, settings, rich_user.id, "profile balance")))
    for name in ("id", "quota", "used_quota", "created_time", "status"):
        assert type(body[name]) is int, name
    for name in ("username", "email", "balance_formatted", "sub"):
        assert type(body[name]) is str, name
    assert list(body) == [
        "sub",
        "id",
        "username",
        "email",
        "quota",
        "used_quota",
        "balance_formatted",
        "created_time",
        "status",
    ]
    assert abs(body["created_time"] - time.time()) < 300


async def test_balance_is_read_fresh(stack: Stack, http, keys, settings, db) -> None:
    user = await make_user(db)
    token = await token_for(keys, settings, user.id, "balance")
    for quota, used, shown in ((0, 0, "0.00"), (1, 0, "0.00"), (1234567, 0, "1234.56"), (5000, 4990, "0.01")):
        # Balances change with a quota.changed event (top-up, internal quota API): userinfo's cache
        # on every instance follows it.
        event = QuotaChanged(user_id=user.id, delta=0, quota=quota, used_quota=used, reason="test")
        await changed(db, settings, event, lambda conn, q=quota, u=used: account_store.set_balance(conn, user.id, q, u))
        _, _, body = await userinfo(http, stack, bearer(token))
        assert (body["quota"], body["used_quota"], body["balance_formatted"]) == (quota, used, shown)


async def test_post_works_too(stack: Stack, http, keys, settings, rich_user) -> None:
    status, _, body = await userinfo(
        http, stack, bearer(await token_for(keys, settings, rich_user.id, "openid")), method="POST"
    )
    assert status == 200 and body == {"sub": str(rich_user.id)}


# --- errors ------------------------------------------------------------------------------------------
def assert_invalid_token(status: int, headers, body) -> None:
    assert status == 401, body
    assert body["error"] == "invalid_token"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert headers["Cache-Control"] == "no-store"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(settings: Settings, sub: int, **over) -> dict:
    now = int(time.time())
    return {
        "iss": settings.issuer,
        "sub": str(sub),
        "aud": settings.resource_audience,
        "exp": now + 600,
        "iat": now,
        "jti": "j" + str(now),
        "client_id": "client_x",
        "scope": "profile balance",
    } | over


def _other_rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def test_expired_token(stack: Stack, http, keys, settings, rich_user) -> None:
    token = await token_for(keys, settings, rich_user.id, "profile", ttl=-60)
    assert_invalid_token(*await userinfo(http, stack, bearer(token)))


async def test_tampered_signature(stack: Stack, http, keys, settings, rich_user) -> None:
    token = await token_for(keys, settings, rich_user.id, "profile")
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    assert_invalid_token(*await userinfo(http, stack, bearer(f"{head}.{payload}.{_b64(bytes(raw))}")))


async def test_tampered_payload(stack: Stack, http, keys, settings, rich_user, db) -> None:
    other = await make_user(db)
    token = await token_for(keys, settings, rich_user.id, "profile")
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = str(other.id)
    forged = f"{head}.{_b64(json.dumps(claims).encode())}.{sig}"
    assert_invalid_token(*await userinfo(http, stack, bearer(forged)))


async def test_unknown_kid(stack: Stack, http, keys, settings, rich_user) -> None:
    token = jwt.encode(
        _claims(settings, rich_user.id), _other_rsa_pem(), algorithm="RS256", headers={"kid": "nope", "typ": "at+jwt"}
    )
    status, headers, body = await userinfo(http, stack, bearer(token))
    assert_invalid_token(status, headers, body)


async def test_other_key_with_a_real_kid(stack: Stack, http, keys, settings, rich_user) -> None:
    real = await keys.signing_key()
    token = jwt.encode(
        _claims(settings, rich_user.id),
        _other_rsa_pem(),
        algorithm=real.alg,
        headers={"kid": real.kid, "typ": "at+jwt"},
    )
    assert_invalid_token(*await userinfo(http, stack, bearer(token)))


async def test_alg_none(stack: Stack, http, keys, settings, rich_user) -> None:
    real = await keys.signing_key()
    header = {"alg": "none", "typ": "at+jwt", "kid": real.kid}
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(settings, rich_user.id)).encode())}."
    assert_invalid_token(*await userinfo(http, stack, bearer(token)))


async def test_hs256_with_the_public_key_as_secret(stack: Stack, http, keys, settings, rich_user) -> None:
    real = await keys.signing_key()
    if real.alg == "HS256":
        pytest.skip("the configured algorithm is HS256")
    public_pem = real.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = {"alg": "HS256", "typ": "at+jwt", "kid": real.kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(_claims(settings, rich_user.id)).encode())}"
    sig = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert_invalid_token(*await userinfo(http, stack, bearer(f"{signing_input}.{_b64(sig)}")))


async def test_wrong_audience_and_issuer(stack: Stack, http, keys, settings, rich_user) -> None:
    for extra in ({"aud": "https://other.example"}, {"iss": "https://other.example"}):
        token = await token_for(keys, settings, rich_user.id, "profile", extra=extra)
        assert_invalid_token(*await userinfo(http, stack, bearer(token)))


async def test_revoked_token(stack: Stack, http, keys, settings, rich_user, db) -> None:
    token, claims = await mint(
        keys, settings, sub=str(rich_user.id), client_id="client_x", scope="profile", family=None
    )
    assert (await userinfo(http, stack, bearer(token)))[0] == 200
    r = aioredis.Redis.from_url(settings.redis_url)
    try:
        # As the token service revokes: Postgres and its event (instances' caches), then Redis.
        async with EventWaiter(settings, ["token.revoked"]), db.acquire() as conn, conn.transaction():
            expires = datetime.fromtimestamp(claims["exp"], UTC)
            await revoke_access_token(
                conn,
                jti=claims["jti"],
                family_id=None,
                client_id="client_x",
                user_id=None,
                expires_at=expires,
                reason="t",
            )
        await mark_revoked(r, settings, jtis=[claims["jti"]])
    finally:
        await r.aclose()
    assert_invalid_token(*await userinfo(http, stack, bearer(token)))


@pytest.mark.parametrize("value", ["abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", "x" * 8000, "令牌", "e30.e30.e30"])
async def test_malformed_tokens(stack: Stack, http, value) -> None:
    assert_invalid_token(*await userinfo(http, stack, {"Authorization": f"Bearer {value}"}))


async def test_oversized_header_is_refused(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/api/oauth2/userinfo", headers={"Authorization": "Bearer " + "x" * 9000}) as r:
        assert r.status in (400, 431)


async def test_missing_header(stack: Stack, http) -> None:
    status, headers, body = await userinfo(http, stack, {})
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in body


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Token abc"])
async def test_wrong_scheme_is_invalid_request(stack: Stack, http, value) -> None:
    status, headers, body = await userinfo(http, stack, {"Authorization": value})
    assert status == 400 and body["error"] == "invalid_request"
    assert 'error="invalid_request"' in headers["WWW-Authenticate"]


@pytest.mark.parametrize("scope", ["", "offline_access", "internal:quota", "profiles balances"])
async def test_insufficient_scope(stack: Stack, http, keys, settings, rich_user, scope) -> None:
    status, headers, body = await userinfo(http, stack, bearer(await token_for(keys, settings, rich_user.id, scope)))
    assert status == 403 and body["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    assert "profile" in headers["WWW-Authenticate"]


async def test_disabled_user(stack: Stack, http, keys, settings, rich_user, db) -> None:
    token = await token_for(keys, settings, rich_user.id, "profile balance")
    assert (await userinfo(http, stack, bearer(token)))[0] == 200
    async with db.acquire() as conn:  # as `oauthctl user disable` does (user.disabled event)
        await disable_user_everywhere(conn, settings, rich_user.id)
    assert_invalid_token(*await userinfo(http, stack, bearer(token)))


async def test_deleted_user_and_machine_tokens(stack: Stack, http, keys, settings, db) -> None:
    gone = await make_user(db)
    token = await token_for(keys, settings, gone.id, "profile")
    await db.execute("DELETE FROM users WHERE id = $1", gone.id)
    assert_invalid_token(*await userinfo(http, stack, bearer(token)))
    machine = await token_for(keys, settings, "client_x", "profile")  # a client_credentials-style subject
    assert_invalid_token(*await userinfo(http, stack, bearer(machine)))
