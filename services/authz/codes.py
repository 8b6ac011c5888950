"""Authorization codes (RFC 6749 4.1.2): 256-bit random values, stored only as
HMAC-SHA256(pepper, code), bound to client, redirect_uri, scope, user, PKCE challenge and nonce,
valid for AUTH_CODE_TTL_SECONDS (<= 10 min). The token service consumes them (docs/contracts.md).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from libs.platform.config import Settings
from libs.platform.security import token_hash

from .authrequest import AuthRequest
from .spend_limits import record_limit
from .store.codes import CodeRow, insert_code_at_once


def _new_code(settings: Settings, req: AuthRequest, user_id: int, auth_time: int) -> tuple[str, CodeRow]:
    """A new random code and its row."""
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
    return code, row


async def issue_code(
    pool: asyncpg.Pool,
    settings: Settings,
    req: AuthRequest,
    user_id: int,
    auth_time: int,
    *,
    spend: tuple[int, str] | None = None,
) -> str | None:
    """The consent given on the page (POST /consent): record it (with the spending limit the user
    chose, if any: docs/spending.md) and store a new code; the code (shown once), or None when the
    user is no longer active (then nothing was written). One statement locks the user's row, then
    the record, and stores the code, as authorize's (docs/architecture.md "Consent records and
    locks"); with a limit, the limit and its event follow in the same transaction."""
    code, row = _new_code(settings, req, user_id, auth_time)
    if spend is None:
        found = await insert_code_at_once(pool, row, list(req.scopes), record_consent=True)
    else:
        async with pool.acquire() as conn, conn.transaction():
            found = await insert_code_at_once(conn, row, list(req.scopes), record_consent=True)
            if found is not None and found["issued"]:
                await record_limit(conn, user_id, req.client_id, *spend)
    return code if found is not None and found["issued"] else None


@dataclass(frozen=True)
class AtOnce:
    """What ``issue_code_at_once`` found: the code (None when none was stored) and the user's
    name, None when the user is gone or no longer active."""

    code: str | None
    username: str | None


async def issue_code_at_once(
    pool: asyncpg.Pool, settings: Settings, req: AuthRequest, user_id: int, auth_time: int, *, one_click: bool
) -> AtOnce:
    """authorize's usual answer, in one round trip (docs/performance.md "authorize in one
    statement"): a new code, stored only if ``user_id`` is still active and either their consent
    record already covers ``req.scopes`` or ``one_click`` (a one-click login, which records the
    consent); a record that already covers the scopes is not rewritten. Else no code, and whether
    the user is active (their name) for the rest of the decision."""
    code, row = _new_code(settings, req, user_id, auth_time)
    found = await insert_code_at_once(pool, row, list(req.scopes), record_consent=one_click)
    if found is None or not found["active"]:
        return AtOnce(None, None)
    return AtOnce(code if found["issued"] else None, found["username"])
