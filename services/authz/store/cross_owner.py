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
