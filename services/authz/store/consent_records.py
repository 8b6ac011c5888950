"""Consent records: a user's consent to an app, with the scopes consented so far (table ``grants``;
not to be confused with the token service's grant types). Consent is recorded together with the
code it allows, by one statement (store/codes.INSERT_CODE_WITH_CONSENT_SQL)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


async def covers(db: asyncpg.Pool | asyncpg.Connection, user_id: int, client_id: str, scopes: Sequence[str]) -> bool:
    """Has ``user_id`` already granted ``client_id`` every one of ``scopes``?"""
    ok = await db.fetchval(
        "SELECT scopes @> $3::text[] FROM grants WHERE user_id = $1 AND client_id = $2",
        user_id,
        client_id,
        list(scopes),
    )
    return bool(ok)


class Store:
    """The ``decision.ConsentRecords`` protocol over a pool."""

    def __init__(self, db: asyncpg.Pool) -> None:
        self.db = db

    async def covers(self, user_id: int, client_id: str, scopes: Sequence[str]) -> bool:
        return await covers(self.db, user_id, client_id, scopes)


async def delete(conn: asyncpg.Connection, user_id: int, client_id: str) -> bool:
    """Remove the record (revoking an authorization); whether there was one."""
    deleted = await conn.fetchval(
        "DELETE FROM grants WHERE user_id = $1 AND client_id = $2 RETURNING true", user_id, client_id
    )
    return bool(deleted)
