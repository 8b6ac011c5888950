"""Table ``authorization_codes`` (RFC 6749 4.1.2): owned by authz, consumed by the token service."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from libs.contracts.authz import issue_consented_code, record_consent_and_issue_code


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
    """The code alone (tests: a code for a user and an app without the authorize endpoint)."""
    await conn.execute(INSERT_CODE_SQL, *_code_args(row))


async def insert_code_at_once(
    db: asyncpg.Pool | asyncpg.Connection, row: CodeRow, scopes: list[str], *, record_consent: bool
) -> asyncpg.Record | None:
    """The code only if its user is active and either ``record_consent`` (which records the consent
    in the same statement) or their consent record covers ``scopes``: one statement that also reads
    and locks the user (``libs/contracts/authz.issue_consented_code``,
    ``record_consent_and_issue_code``). (username, active, issued), or None when the user is gone."""
    issue = record_consent_and_issue_code if record_consent else issue_consented_code
    return await issue(db, _code_args(row), scopes)
