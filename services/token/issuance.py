"""Minting a token pair (RFC 6749 5.1 response): a new refresh token, known to the database only as
its keyed hash, and an access token (and an id_token). Shared by the authorization_code,
refresh_token and device_code grants. The code and refresh grants mint BEFORE the one statement
that consumes the code or the old token and stores the new refresh token's hash
(libs/contracts/authz.exchange_code, libs/contracts/account.rotate_refresh_token): no transaction
is held open while signing, and a pair whose statement matched nothing is dropped unseen
(docs/performance.md). ``start_family`` stores a minted pair as a new family in the caller's
transaction (the device code grant, which holds its code's row lock while it decides).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from libs.oauth.access_tokens import access_claims
from libs.oauth.keys import KeyStore
from libs.oauth.vocabulary import REFRESH_PREFIX
from libs.platform.config import Settings
from libs.platform.security import TOKEN_BYTES, token_from, token_hash

from . import store
from .families import create_family
from .id_tokens import Authentication, id_token_claims, sign_with_id_token

GRACE_NONCE_BYTES = 12  # AES-GCM's 96-bit nonce (NIST SP 800-38D 8.2.2: random, never reused under a key)


@dataclass(frozen=True)
class Deps:
    """What the grants need from the app: built once per request by the handler."""

    pool: asyncpg.Pool
    redis: aioredis.Redis
    keys: KeyStore
    settings: Settings
    id_keys: KeyStore | None = None  # signs id_tokens (id_tokens.py); None: no id_tokens


@dataclass(frozen=True)
class Minted:
    body: dict[str, Any]  # the RFC 6749 5.1 response
    refresh_hash: bytes  # what the database stores of body["refresh_token"]
    # 12 more CSPRNG bytes of the same draw: the AES-GCM nonce if a rotation seals this response
    # (grants/refresh_token.seal_response); None: it draws its own.
    grace_nonce: bytes | None = None


async def mint_pair(
    deps: Deps,
    *,
    family_id: uuid.UUID,
    client_id: str,
    user_id: int,
    scope: str,
    auth: Authentication | None = None,
) -> Minted:
    """A new refresh token and an access token for ``scope``; with ``auth`` and ``openid`` in
    ``scope``, an id_token too (OIDC Core 3.1.3.3, 12.2). Nothing is stored here."""
    settings = deps.settings
    # One CSPRNG call for every random value of the response: the refresh token's 256 bits, the
    # access token's jti (128 bits) and the grace response's nonce (96 bits; refresh_token.py).
    random_bytes = os.urandom(TOKEN_BYTES + 16 + GRACE_NONCE_BYTES)
    refresh = token_from(REFRESH_PREFIX, random_bytes[:TOKEN_BYTES])
    sub, now = str(user_id), int(time.time())
    claims = access_claims(
        settings,
        sub=sub,
        client_id=client_id,
        scope=scope,
        family=str(family_id),
        jti=random_bytes[TOKEN_BYTES : TOKEN_BYTES + 16].hex(),
        now=now,
    )
    id_claims = None
    if auth is not None and deps.id_keys is not None and "openid" in scope.split():
        id_claims = id_token_claims(settings, sub=sub, client_id=client_id, scope=scope, auth=auth, now=now)
    access, id_token = await sign_with_id_token(deps.keys, deps.id_keys, claims, id_claims)
    body = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl_seconds,
        "refresh_token": refresh,
        "scope": scope,
    }
    if id_token is not None:
        body["id_token"] = id_token
    return Minted(body, token_hash(settings.pepper_bytes, refresh), random_bytes[TOKEN_BYTES + 16 :])


async def start_family(
    conn: asyncpg.Connection,
    deps: Deps,
    *,
    family_id: uuid.UUID,
    client_id: str,
    user_id: int,
    scope: str,
    auth: Authentication,
) -> dict[str, Any]:
    """A new token family (from a device code) and its first pair, in the caller's transaction; the
    RFC 6749 5.1 body."""
    minted = await mint_pair(deps, family_id=family_id, client_id=client_id, user_id=user_id, scope=scope, auth=auth)
    await create_family(conn, family_id, client_id=client_id, user_id=user_id, scope=scope, auth_time=auth.auth_time)
    ttl = float(deps.settings.refresh_token_ttl_seconds)
    await store.insert_refresh_token(conn, family_id, minted.refresh_hash, None, ttl)
    return minted.body
