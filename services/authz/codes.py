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

from .authrequest import AuthRequest
from .store.codes import CodeRow, insert_code_with_consent


async def issue_code(pool: asyncpg.Pool, settings: Settings, req: AuthRequest, user_id: int, auth_time: int) -> str:
    """Record the consent and store a new code, in one statement; return the code (shown once)."""
    code = secrets.token_urlsafe(32)
    row = CodeRow(
        code_hash=token_hash(settings.pepper_bytes, code),
        client_id=req.client_id,
        user_id=user_id,
        redirect_uri=req.redirect_uri,
        scope=req.scope,
        code_challenge=req.code_challenge,
        code_challenge_method=req.code_challenge_method,
        nonce=req.nonce,
        auth_time=datetime.fromtimestamp(auth_time, UTC),
        ttl_seconds=settings.auth_code_ttl_seconds,
    )
    await insert_code_with_consent(pool, row, list(req.scopes))
    return code
