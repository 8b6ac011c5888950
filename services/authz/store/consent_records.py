"""Consent records: a user's consent to an app, with the scopes consented so far (table ``grants``;
not to be confused with the token service's grant types). Consent is recorded together with the
code it allows, by one statement (store/codes.INSERT_CODE_WITH_CONSENT_SQL) when no spending
limit is chosen; ``upsert`` records it alone (the device flow, a limit chosen, seeding)."""

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


# --- spending limits (docs/spending.md) ----------------------------------------------------------
async def set_spend_limit(conn: asyncpg.Connection, user_id: int, client_id: str, limit: int, period: str) -> bool:
    """Store the limit the user chose on the record (which must exist: record the consent first).
    A new period, or a limit where there was none, starts a new ``once`` budget (``spend_since``);
    changing only the amount keeps what was already spent in the period counted."""
    status = await conn.execute(
        """UPDATE grants SET spend_limit = $3, spend_period = $4,
               spend_since = CASE WHEN spend_limit IS NULL OR spend_period IS DISTINCT FROM $4
                                  THEN now() ELSE spend_since END
           WHERE user_id = $1 AND client_id = $2 AND 'spend' = ANY(scopes)""",
        user_id,
        client_id,
        limit,
        period,
    )
    return status.endswith(" 1")


async def stop_spending(conn: asyncpg.Connection, user_id: int, client_id: str) -> bool:
    """The app may no longer spend; the record (and the login) stays."""
    status = await conn.execute(
        """UPDATE grants SET scopes = array_remove(scopes, 'spend'), spend_limit = NULL, spend_period = NULL,
                             spend_since = NULL
           WHERE user_id = $1 AND client_id = $2 AND spend_limit IS NOT NULL""",
        user_id,
        client_id,
    )
    return status.endswith(" 1")


async def spend_limits_of(db: asyncpg.Pool | asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT client_id, spend_limit, spend_period, spend_since FROM grants
           WHERE user_id = $1 AND spend_limit IS NOT NULL""",
        user_id,
    )
