"""The account service verifies access tokens with public keys only (``VERIFYING_KEYS``): its KeyStore
holds no private key object, tokens the token service signs with RS256 and ES256 still verify, a
rotation is picked up, and the rows it reads carry no private key (docs/operations.md "Signing keys")."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from libs.contracts.token import add_signing_key, ensure_signing_key, verifying_key_rows
from libs.oauth.access_tokens import KEYS, mint
from libs.oauth.keys import KeyStore, VerifyingOnly
from libs.platform.config import Settings
from services.token import key_admin
from tests.support.factories import make_user
from tests.support.stack import Stack, extra_instance

PUBLIC_TYPES = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)
GRACE = timedelta(hours=3)


async def userinfo_status(http: aiohttp.ClientSession, stack: Stack, token: str) -> int:
    async with http.get(f"{stack.base}/api/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status


async def signed_by(keys: KeyStore, settings: Settings, user_id: int) -> str:
    token, _ = await mint(keys, settings, sub=str(user_id), client_id="client_x", scope="profile", family=None)
    return token


async def assert_public_only(store: KeyStore, db: asyncpg.Pool) -> None:
    """Every key the store holds (every live kid of the table) is a public key (or HS256's secret)."""
    rows = await verifying_key_rows(db, GRACE)
    assert rows
    for row in rows:
        key = await store.verification_key(row["kid"])
        assert key is not None and key.private is None
        assert isinstance(key.public, bytes if key.alg == "HS256" else PUBLIC_TYPES)


async def test_the_verifying_rows_carry_no_private_key(db: asyncpg.Pool) -> None:
    await ensure_signing_key(db, "RS256")
    for alg in ("ES256", "HS256"):  # published, never signing here
        await add_signing_key(db, alg, activate_after_seconds=3600)
    rows = await verifying_key_rows(db, GRACE)
    assert {r["alg"] for r in rows} == {"RS256", "ES256", "HS256"}
    for row in rows:
        assert "private_pem" not in row.keys()
        if row["alg"] == "HS256":  # a shared secret: the one key that verifies HMAC
            assert row["shared_secret"] and row["public_jwk"] is None
        else:
            assert row["shared_secret"] is None and '"d"' not in row["public_jwk"]


async def test_the_account_service_verifies_with_public_keys_only(
    stack: Stack, http: aiohttp.ClientSession, db: asyncpg.Pool, settings: Settings
) -> None:
    user = await make_user(db)
    account_keys = stack.runners["account"].app[KEYS]
    rs256 = await signed_by(stack.runners["token"].app[KEYS], settings, user.id)
    assert await userinfo_status(http, stack, rs256) == 200
    # An ES256 token service next to it: the account service meets its key by kid, from the JWK.
    async with extra_instance(stack, "token", settings, jwt_algorithm="ES256") as (_, es_app):
        es256 = await signed_by(es_app[KEYS], settings, user.id)
        assert await userinfo_status(http, stack, es256) == 200
    await assert_public_only(account_keys, db)
    with pytest.raises(VerifyingOnly):
        await account_keys.sign({"sub": str(user.id)}, "at+jwt")


async def test_a_rotation_is_picked_up(
    stack: Stack, http: aiohttp.ClientSession, db: asyncpg.Pool, settings: Settings
) -> None:
    user = await make_user(db)
    token_keys, account_keys = stack.runners["token"].app[KEYS], stack.runners["account"].app[KEYS]
    before = await signed_by(token_keys, settings, user.id)
    assert await userinfo_status(http, stack, before) == 200
    async with db.acquire() as conn:
        added = await key_admin.add(conn, settings.jwt_algorithm, 0)  # signs now, the old key retires
    await token_keys.load()  # what the token service does within 30 s on its own
    after = await signed_by(token_keys, settings, user.id)
    assert jwt.get_unverified_header(after)["kid"] == added.kid and added.retiring
    # The account service has not reloaded: the new kid is looked up and loaded from its JWK.
    assert await userinfo_status(http, stack, after) == 200
    assert await userinfo_status(http, stack, before) == 200  # the retired key still verifies
    await account_keys.load()
    for kid in added.retiring:
        old = await account_keys.verification_key(kid)
        assert old is not None and old.retired_at is not None and old.private is None
    await assert_public_only(account_keys, db)
