"""Consent records: a user's consent to an app, with the scopes consented so far (table ``grants``;
not to be confused with the token service's grant types)."""

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


async def upsert(conn: asyncpg.Connection, user_id: int, client_id: str, scopes: Sequence[str]) -> None:
    """Record consent: the union of the old and new scopes (old ones first), the first time kept."""
    await conn.execute(
        """INSERT INTO grants (user_id, client_id, scopes) VALUES ($1, $2, $3::text[])
           ON CONFLICT (user_id, client_id) DO UPDATE SET
               scopes = ARRAY(SELECT s FROM unnest(grants.scopes || EXCLUDED.scopes) WITH ORDINALITY AS t(s, i)
                              GROUP BY s ORDER BY min(i)),
               last_authorized_at = now()""",
        user_id,
        client_id,
        list(scopes),
    )


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
