"""The verifier's memory of verified access tokens (libs/oauth/access_tokens.AccessTokenVerifier,
docs/performance.md): a token presented again is not checked again for its signature, but is still
refused at once when it is revoked (by token or by family, through the real revocation endpoint and
family revocation), when it expires, and when its key is gone. Real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
import redis.asyncio as aioredis

from libs.contracts.token import SIGNING_KEYS, add_signing_key
from libs.oauth.access_tokens import AccessTokenVerifier, mint
from libs.oauth.errors import OAuthError
from libs.oauth.keys import KeyStore, sign_jwt
from libs.platform.config import Settings
from services.token.families import revoke_family
from tests.support.codes import ClientApp, make_client, make_verifier, obtain_tokens
from tests.support.stack import Stack


@pytest.fixture
async def app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)


@pytest.fixture
async def verifier(db: asyncpg.Pool, settings: Settings) -> AsyncIterator[AccessTokenVerifier]:
    v, redis = make_verifier(db, settings)
    yield v
    await redis.aclose()


async def refused(verifier: AccessTokenVerifier, token: str) -> str:
    with pytest.raises(OAuthError) as err:
        await verifier.verify(token)
    assert err.value.error == "invalid_token"
    return str(err.value.description)


async def test_a_token_is_verified_once_then_remembered(stack: Stack, http, db, settings, app, verifier) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    first = await verifier.verify(tokens["access_token"])
    assert len(verifier._verified) == 1
    again = await verifier.verify(tokens["access_token"])
    assert again is first  # from memory: no second signature check


async def test_a_remembered_token_is_refused_at_once_when_revoked(
    stack: Stack, http, db, settings, app, verifier
) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    await verifier.verify(tokens["access_token"])
    form = {"token": tokens["access_token"], "client_id": app.client_id, "client_secret": app.client_secret}
    async with http.post(f"{stack.base}/api/oauth2/revoke", data=form) as r:
        assert r.status == 200
    assert "revoked" in await refused(verifier, tokens["access_token"])


async def test_a_remembered_token_is_refused_at_once_when_its_family_is_revoked(
    stack: Stack, http, db, settings, app, verifier
) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    at = await verifier.verify(tokens["access_token"])
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        assert at.family is not None
        await revoke_family(db, redis, settings, at.family, "test")
    finally:
        await redis.aclose()
    assert "revoked" in await refused(verifier, tokens["access_token"])


async def test_a_remembered_token_expires(db, settings, verifier) -> None:
    # exp 1-2 s in the past: within the 5 s leeway for 3 s more at least, so it verifies and is
    # remembered (even on a busy machine)...
    token, _ = await mint(verifier.keys, settings, sub="1", client_id="c", scope="profile", family=None, ttl=-1)
    await verifier.verify(token)
    assert verifier._verified
    await asyncio.sleep(4.5)  # past exp + leeway: exp <= minted - 1, so exp + 5 < minted + 4.5
    # ...and once past the leeway it is refused, from memory or not.
    assert "expired" in await refused(verifier, token)
    assert not verifier._verified


async def test_a_remembered_token_of_a_deleted_key_is_refused(db, settings, verifier) -> None:
    # A key published but not yet signing (it never signs anyone else's tokens in this session).
    kid = await add_signing_key(db, settings.jwt_algorithm, activate_after_seconds=10**8)
    try:
        await verifier.keys.load()
        key = verifier.keys._keys[kid]
        at, claims = await mint(verifier.keys, settings, sub="1", client_id="c", scope="profile", family=None)
        token = sign_jwt(key, claims | {"jti": "deleted-key-" + kid}, "at+jwt")
        await verifier.verify(token)
    finally:
        await db.execute("DELETE FROM signing_keys WHERE kid = $1", kid)
    await verifier.keys.load()
    assert "unknown key" in await refused(verifier, token)


async def test_memory_is_bounded_and_off_without_caches(db, settings) -> None:
    keys = KeyStore(
        db, settings.jwt_algorithm, timedelta(seconds=settings.access_token_ttl_seconds + 300), SIGNING_KEYS
    )
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        small = AccessTokenVerifier(keys, redis, settings, verified_max=3)
        for i in range(5):
            token, _ = await mint(keys, settings, sub=str(i), client_id="c", scope="profile", family=None)
            await small.verify(token)
        assert len(small._verified) == 3
        off = AccessTokenVerifier(keys, redis, settings.model_copy(update={"cache_ttl_seconds": 0}))
        await off.verify(token)
        assert not off._verified
    finally:
        await redis.aclose()
