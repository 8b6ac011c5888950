"""Table ``authorization_codes`` (RFC 6749 4.1.2): owned by authz, consumed by the token service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from libs.contracts.authz import issue_consented_code, issue_one_click_code


@dataclass(frozen=True)
class CodeRow:
    """A new code's row: only the code's keyed hash is stored, never the code."""

    code_hash: bytes
    client_id: str
    user_id: int
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    auth_time: datetime
    ttl_seconds: int


INSERT_CODE_SQL = """
INSERT INTO authorization_codes (code_hash, client_id, user_id, redirect_uri, scope, code_challenge,
                                 code_challenge_method, nonce, auth_time, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + $10 * interval '1 second')
"""


def _code_args(row: CodeRow) -> tuple[object, ...]:
    """$1..$10 of INSERT_CODE_SQL."""
    return (
        row.code_hash,
        row.client_id,
        row.user_id,
        row.redirect_uri,
        row.scope,
        row.code_challenge,
        row.code_challenge_method,
        row.nonce,
        row.auth_time,
        row.ttl_seconds,
    )


async def insert_code(conn: asyncpg.Connection, row: CodeRow) -> None:
    """The code alone, in the caller's transaction (a spending limit chosen with it; tests)."""
    await conn.execute(INSERT_CODE_SQL, *_code_args(row))


# ONE statement records the consent (the union of the old and new scopes, old ones first; the
# first time kept) and stores the code: one round trip instead of BEGIN +
# two statements + COMMIT (docs/performance.md). A data-modifying CTE always runs to completion.
INSERT_CODE_WITH_CONSENT_SQL = (
    """
WITH consent AS (
    INSERT INTO grants (user_id, client_id, scopes) VALUES ($3, $2, $11::text[])
    ON CONFLICT (user_id, client_id) DO UPDATE SET
        scopes = ARRAY(SELECT s FROM unnest(grants.scopes || EXCLUDED.scopes) WITH ORDINALITY AS t(s, i)
                       GROUP BY s ORDER BY min(i)),
        last_authorized_at = now()
)
"""
    + INSERT_CODE_SQL
)


async def insert_code_with_consent(db: asyncpg.Pool | asyncpg.Connection, row: CodeRow, scopes: list[str]) -> None:
    await db.execute(INSERT_CODE_WITH_CONSENT_SQL, *_code_args(row), scopes)


async def insert_code_at_once(
    db: asyncpg.Pool, row: CodeRow, scopes: list[str], *, one_click: bool
) -> asyncpg.Record | None:
    """The code only if its user is active and, unless ``one_click`` (which records the consent in
    the same statement), their consent record covers ``scopes``: one statement that also reads the
    user (``libs/contracts/authz.issue_consented_code``, ``issue_one_click_code``).
    (username, active, issued), or None when the user is gone."""
    issue = issue_one_click_code if one_click else issue_consented_code
    return await issue(db, _code_args(row), scopes)
