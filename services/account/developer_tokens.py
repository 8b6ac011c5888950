"""Developer tokens: bearer credentials for the developer API. Shown once, stored hashed, revocable."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiohttp import web

from libs.oauth.vocabulary import UserStatus
from libs.platform.errors import ApiError
from libs.platform.security import new_token, token_hash
from libs.platform.validation import has_control_chars
from libs.platform.web import PG, SETTINGS

from . import store

PREFIX = "devtoken"
WWW_AUTH = 'Bearer realm="developer-api"'
MAX_ACTIVE_TOKENS = 20  # per user: enough for every machine a developer runs, bounded against abuse
MAX_NAME_LEN = 100


@dataclass(frozen=True)
class DeveloperToken:
    id: int
    user_id: int
    name: str
    created_at: datetime


async def create_developer_token(
    conn: asyncpg.Connection | asyncpg.Pool, pepper: bytes, user_id: int, name: str = ""
) -> tuple[str, DeveloperToken]:
    """Return the token (to show once) and its record; only its hash is stored."""
    token = new_token(PREFIX)
    row = await store.insert_developer_token(conn, user_id, token_hash(pepper, token), name)
    return token, DeveloperToken(**dict(row))


def validate_token_name(name: object) -> str:
    if name is None:
        return ""
    if not isinstance(name, str):
        raise ApiError(400, "name must be a string")
    name = name.strip()
    if len(name) > MAX_NAME_LEN:
        raise ApiError(400, f"name must be at most {MAX_NAME_LEN} characters")
    if has_control_chars(name):
        raise ApiError(400, "name must not contain control characters")
    return name


async def issue_developer_token(
    pool: asyncpg.Pool, pepper: bytes, user_id: int, name: object = ""
) -> tuple[str, DeveloperToken]:
    """A new token for a user from the console or the session API (bounded number of active tokens)."""
    label = validate_token_name(name)
    async with pool.acquire() as conn, conn.transaction():
        # Lock the user so concurrent requests cannot pass the limit together.
        await store.lock_user(conn, user_id)
        if await store.count_active_developer_tokens(conn, user_id) >= MAX_ACTIVE_TOKENS:
            raise ApiError(400, f"you already have {MAX_ACTIVE_TOKENS} active developer tokens; revoke one first")
        return await create_developer_token(conn, pepper, user_id, label)


async def list_developer_tokens(pool: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """The user's active tokens (never the tokens themselves: only their hashes are stored)."""
    return await store.active_developer_tokens(pool, user_id)


async def revoke_developer_token(
    conn: asyncpg.Connection | asyncpg.Pool, token_id: int, user_id: int | None = None
) -> bool:
    return await store.revoke_developer_token(conn, token_id, user_id)


async def authenticate_developer(pool: asyncpg.Pool, pepper: bytes, authorization: str | None) -> int:
    """The developer's user id for an ``Authorization: Bearer <developer token>`` header, else 401."""
    if not authorization:
        raise ApiError(
            401, "missing developer token: send 'Authorization: Bearer <developer token>'", www_authenticate=WWW_AUTH
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise ApiError(
            401,
            "malformed Authorization header: expected 'Bearer <developer token>'",
            www_authenticate=WWW_AUTH + ', error="invalid_request"',
        )
    # A lookup by keyed hash: the hash cannot be computed without the pepper, so the index lookup
    # leaks nothing an attacker can use (no plain-text comparison of the secret happens here).
    row = await store.developer_token_owner(pool, token_hash(pepper, token), UserStatus.ACTIVE)
    if row is None:
        raise ApiError(
            401,
            "invalid or revoked developer token; create a new one in the developer console (/developer)",
            www_authenticate=WWW_AUTH + ', error="invalid_token"',
        )
    if row["stale"]:
        await store.touch_developer_token(pool, row["id"])
    return int(row["user_id"])


async def current_developer(request: web.Request) -> int:
    settings = request.app[SETTINGS]
    return await authenticate_developer(request.app[PG], settings.pepper_bytes, request.headers.get("Authorization"))
