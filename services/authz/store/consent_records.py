"""Consent records: a user's consent to an app, with the scopes consented so far (table ``grants``;
not to be confused with the token service's grant types). The services record consent in the
statement that locks the user's row first and stores the code it allows
(``libs/contracts/authz.record_consent_and_issue_code``), or with ``upsert`` right after the
device's approval locked it (``libs/contracts/authz.answer_device_code``): the lock order of
docs/architecture.md "Consent records and locks"."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from libs.contracts.authz import MERGE_CONSENT_SQL


async def covers(db: asyncpg.Pool | asyncpg.Connection, user_id: int, client_id: str, scopes: Sequence[str]) -> bool:
    """Has ``user_id`` already granted ``client_id`` every one of ``scopes``?"""
    ok = await db.fetchval(
        "SELECT scopes @> $3::text[] FROM grants WHERE user_id = $1 AND client_id = $2",
        user_id,
        client_id,
        list(scopes),
    )
    return bool(ok)


async def upsert(db: asyncpg.Pool | asyncpg.Connection, user_id: int, client_id: str, scopes: Sequence[str]) -> None:
    """Record consent (``MERGE_CONSENT_SQL``, as the code's statement does) in the caller's
    transaction, once the user's row is locked (the device's approval, ``answer_device_code``);
    alone for seeding (tests, the bench, the tour)."""
    await db.execute(
        "INSERT INTO grants (user_id, client_id, scopes) VALUES ($1, $2, $3::text[])" + MERGE_CONSENT_SQL,
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
