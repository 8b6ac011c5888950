"""Authorization codes (RFC 6749 4.1.2): 256-bit random values, stored only as
HMAC-SHA256(pepper, code), bound to client, redirect_uri, scope, user, PKCE challenge and nonce,
valid for AUTH_CODE_TTL_SECONDS (<= 10 min). The token service consumes them (docs/contracts.md).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import asyncpg

from libs.platform.config import Settings
from libs.platform.security import token_hash

from . import grants
from .authrequest import AuthRequest


async def issue_code(pool: asyncpg.Pool, settings: Settings, req: AuthRequest, user_id: int, auth_time: int) -> str:
    """Record the grant and store a new code, in one transaction; return the code (shown once)."""
    code = secrets.token_urlsafe(32)
    async with pool.acquire() as conn, conn.transaction():
        await grants.upsert(conn, user_id, req.client_id, req.scopes)
        await conn.execute(
            """INSERT INTO authorization_codes (code_hash, client_id, user_id, redirect_uri, scope, code_challenge,
                                                code_challenge_method, nonce, auth_time, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + $10 * interval '1 second')""",
            token_hash(settings.pepper_bytes, code),
            req.client_id,
            user_id,
            req.redirect_uri,
            req.scope,
            req.code_challenge,
            req.code_challenge_method,
            req.nonce,
            datetime.fromtimestamp(auth_time, UTC),
            settings.auth_code_ttl_seconds,
        )
    return code
