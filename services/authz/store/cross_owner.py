"""cross-owner (to become libs/contracts/account.py): authz's read-only queries on the account
service's tables (docs/contracts.md: "authz reads users for login and joins oauth_apps ... to list
a user's grants")."""

from __future__ import annotations

import asyncpg

# The signed-in user's name and status (identity.signed_in: is this session's user still active?).
USER_NAME_STATUS = "SELECT username, status FROM users WHERE id = $1"


async def user_name_status(db: asyncpg.Pool, user_id: int) -> asyncpg.Record | None:
    """(username, status) of ``user_id``, or None when the user is gone."""
    return await db.fetchrow(USER_NAME_STATUS, user_id)


async def login_user(db: asyncpg.Pool, identifier: str) -> asyncpg.Record | None:
    """(id, username, status, password_hash) of the user whose username or email is
    ``identifier`` (case-insensitive), the username match first (the login form)."""
    return await db.fetchrow(
        """SELECT id, username, status, password_hash FROM users
           WHERE lower(username) = lower($1) OR lower(email) = lower($1)
           ORDER BY (lower(username) = lower($1)) DESC LIMIT 1""",
        identifier,
    )


async def list_consents_with_apps(db: asyncpg.Pool, user_id: int) -> list[asyncpg.Record]:
    """A user's consent records joined with the app's name and description (oauth_apps), newest
    first (the authorized-apps page)."""
    return await db.fetch(
        """SELECT g.client_id, a.name, a.description, g.scopes, g.first_authorized_at, g.last_authorized_at
           FROM grants g JOIN oauth_apps a ON a.client_id = g.client_id
           WHERE g.user_id = $1
           ORDER BY g.last_authorized_at DESC, g.client_id""",
        user_id,
    )


async def balance_of(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record | None:
    """(quota, used_quota): the state a ``quota.changed`` event for a limit change carries."""
    return await conn.fetchrow("SELECT quota, used_quota FROM users WHERE id = $1", user_id)


async def spent_since(db: asyncpg.Pool, user_id: int, client_id: str, since: object) -> int:
    """account's spend_charges: what the app charged the user since ``since`` (the period)."""
    return int(
        await db.fetchval(
            """SELECT coalesce(sum(amount), 0) FROM spend_charges
               WHERE user_id = $1 AND client_id = $2 AND created_at >= $3""",
            user_id,
            client_id,
            since,
        )
    )


async def spend_totals(db: asyncpg.Pool, user_id: int) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT client_id, sum(amount) AS total FROM spend_charges WHERE user_id = $1 GROUP BY client_id", user_id
    )
    return {r["client_id"]: int(r["total"]) for r in rows}


async def recent_charges(db: asyncpg.Pool, user_id: int, client_id: str, limit: int = 10) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT amount, description, created_at FROM spend_charges
           WHERE user_id = $1 AND client_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3""",
        user_id,
        client_id,
        limit,
    )
