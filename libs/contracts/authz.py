"""Contracts on the authz service's tables (``authorization_codes``, ``grants`` = consent
records; docs/contracts.md): the token service consumes a code, revocations expire codes, and the
account service deletes consent records of a deleted app or a disabled user."""

from __future__ import annotations

import uuid
from typing import TypeAlias

import asyncpg

DB: TypeAlias = asyncpg.Pool | asyncpg.Connection


# --- authorization_codes -------------------------------------------------------------------------
_CONSUME_CODE_SQL = """
UPDATE authorization_codes c SET used_at = now(), family_id = $3
FROM users u
WHERE c.code_hash = $1 AND c.client_id = $2 AND c.used_at IS NULL AND c.expires_at > now()
  AND u.id = c.user_id
RETURNING c.user_id, c.redirect_uri, c.scope, c.code_challenge, c.code_challenge_method, c.auth_time,
          c.nonce, u.email, u.status AS user_status
"""


async def consume_code(
    conn: asyncpg.Connection, code_hash: bytes, client_id: str, family_id: uuid.UUID
) -> asyncpg.Record | None:
    """In the caller's transaction: take a live code of ``client_id`` once (one atomic UPDATE, RFC
    6749 4.1.2 single use), record the family it starts, and return it with its user's email and
    status (token: the authorization_code grant)."""
    return await conn.fetchrow(_CONSUME_CODE_SQL, code_hash, client_id, family_id)


async def diagnose_code(db: DB, code_hash: bytes) -> asyncpg.Record | None:
    """Why a code could not be consumed: its client, used_at, family_id, expired (token: replay
    detection)."""
    return await db.fetchrow(
        """SELECT client_id, used_at, family_id, expires_at <= now() AS expired
           FROM authorization_codes WHERE code_hash = $1""",
        code_hash,
    )


async def expire_codes(conn: asyncpg.Connection, *, user_id: int | None, client_id: str | None) -> None:
    """In the caller's transaction: expire the unused codes of ``user_id`` and/or ``client_id``
    (``token.revoke_families``, before the families: an exchange in flight holds its code's row lock)."""
    await conn.execute(
        """UPDATE authorization_codes SET expires_at = least(expires_at, now())
           WHERE used_at IS NULL AND expires_at > now()
             AND ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR client_id = $2)""",
        user_id,
        client_id,
    )


# --- grants (consent records) --------------------------------------------------------------------
async def delete_user_consents(conn: asyncpg.Connection, user_id: int) -> None:
    """In the caller's transaction: a disabled user's consent records go (account: user status)."""
    await conn.execute("DELETE FROM grants WHERE user_id = $1", user_id)


async def delete_client_consents(conn: asyncpg.Connection, client_id: str) -> int:
    """In the caller's transaction: every user's consent to ``client_id`` goes; returns how many
    (``token.revoke_client``, account: an app is deleted)."""
    count: int = await conn.fetchval(
        "WITH d AS (DELETE FROM grants WHERE client_id = $1 RETURNING 1) SELECT count(*) FROM d", client_id
    )
    return count


# --- spending (docs/spending.md) ----------------------------------------------------------------
async def spend_grant(
    conn: asyncpg.Connection, user_id: int, client_id: str, family_id: str | None, jti: str
) -> asyncpg.Record | None:
    """owner: authz (grants), token (token_families), libs/oauth (revoked_access_tokens). The consent
    record's scopes and spending limit, and ``live``: the token is neither revoked itself nor of a
    revoked family. PostgreSQL is the truth for revocations (libs/oauth/revocation.py): read in the
    charge's transaction, so a charge that starts after a revocation committed is refused on every
    instance. None: no consent record (revoked in the user center, or the app deleted)."""
    return await conn.fetchrow(
        """SELECT scopes, spend_limit, spend_period, spend_since,
                  NOT EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = $4)
                  AND EXISTS (SELECT 1 FROM token_families WHERE id = $3::uuid AND user_id = $1 AND client_id = $2
                                                              AND revoked_at IS NULL) AS live
           FROM grants WHERE user_id = $1 AND client_id = $2""",
        user_id,
        client_id,
        family_id,
        jti,
    )
