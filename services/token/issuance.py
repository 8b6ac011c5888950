"""Issuing a token pair inside the caller's transaction: one new refresh token row and one access
token (RFC 6749 5.1 response). Shared by the authorization_code, device_code and refresh_token
grants; ``start_family`` opens the family a code or device code starts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from libs.oauth.access_tokens import mint
from libs.oauth.keys import KeyStore
from libs.oauth.vocabulary import REFRESH_PREFIX
from libs.platform.config import Settings
from libs.platform.security import new_token, token_hash

from . import store
from .families import create_family
from .id_tokens import Authentication, mint_id_token


@dataclass(frozen=True)
class Deps:
    """What the grants need from the app: built once per request by the handler."""

    pool: asyncpg.Pool
    redis: aioredis.Redis
    keys: KeyStore
    settings: Settings
    id_keys: KeyStore | None = None  # signs id_tokens (id_tokens.py); None: no id_tokens


@dataclass(frozen=True)
class Issued:
    body: dict[str, Any]  # the RFC 6749 5.1 response
    refresh_id: int


async def issue_pair(
    conn: asyncpg.Connection,
    deps: Deps,
    *,
    family_id: uuid.UUID,
    client_id: str,
    user_id: int,
    scope: str,
    parent_id: int | None = None,
    auth: Authentication | None = None,
) -> Issued:
    """A new refresh token (stored only as its keyed hash) and an access token for ``scope``;
    with ``auth`` and ``openid`` in ``scope``, an id_token too (OIDC Core 3.1.3.3, 12.2)."""
    settings = deps.settings
    refresh = new_token(REFRESH_PREFIX)
    refresh_id = await store.insert_refresh_token(
        conn,
        family_id,
        token_hash(settings.pepper_bytes, refresh),
        parent_id,
        float(settings.refresh_token_ttl_seconds),
    )
    access, _claims = await mint(
        deps.keys, settings, sub=str(user_id), client_id=client_id, scope=scope, family=str(family_id)
    )
    body = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl_seconds,
        "refresh_token": refresh,
        "scope": scope,
    }
    if auth is not None and deps.id_keys is not None and "openid" in scope.split():
        body["id_token"] = await mint_id_token(
            deps.id_keys, settings, sub=str(user_id), client_id=client_id, scope=scope, access_token=access, auth=auth
        )
    return Issued(body, refresh_id)


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
    """A new token family (from an authorization code or a device code) and its first pair, in the
    caller's transaction; the RFC 6749 5.1 body."""
    await create_family(conn, family_id, client_id=client_id, user_id=user_id, scope=scope, auth_time=auth.auth_time)
    issued = await issue_pair(
        conn, deps, family_id=family_id, client_id=client_id, user_id=user_id, scope=scope, auth=auth
    )
    return issued.body
