"""Contracts on the account service's tables (``users``, ``oauth_apps``; docs/contracts.md):
reading a client, a user's name and status, the login lookup, and the statements of the other
services that join a user (so the user's status is read in the same statement as the row it
guards)."""

from __future__ import annotations

import uuid
from typing import TypeAlias

import asyncpg

from libs.oauth.caches import CLIENTS
from libs.oauth.clients import Client

DB: TypeAlias = asyncpg.Pool | asyncpg.Connection


# --- oauth_apps ----------------------------------------------------------------------------------
async def get_client(db: DB, client_id: str) -> Client | None:
    """The client ``client_id``, from the process's event-invalidated cache (``caches.CLIENTS``,
    dropped by client.* events) or the table. Unknown ids are not cached. Callers: authz
    (authorize, consent, authorizations), token (client authentication)."""
    if not client_id or len(client_id) > 100:
        return None
    cached = CLIENTS.get(client_id)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    ticket = CLIENTS.ticket()
    client = await _load_client(db, client_id)
    if client is not None:
        CLIENTS.put(client_id, client, ticket)
    return client


async def _load_client(db: DB, client_id: str) -> Client | None:
    row = await db.fetchrow(
        """SELECT id, client_id, name, description, redirect_uris, client_secret_hash, token_endpoint_auth_method,
                  auto_authorize, internal, verified, previous_secret_hash, previous_secret_expires_at,
                  logo_url, developer_name, homepage_url, privacy_url, terms_url, grant_types
           FROM oauth_apps WHERE client_id = $1""",
        client_id,
    )
    if row is None:
        return None
    return Client(
        id=row["id"],
        client_id=row["client_id"],
        name=row["name"],
        description=row["description"],
        redirect_uris=tuple(row["redirect_uris"]),
        secret_hash=bytes(row["client_secret_hash"]) if row["client_secret_hash"] is not None else None,
        auth_method=row["token_endpoint_auth_method"],
        auto_authorize=row["auto_authorize"],
        internal=row["internal"],
        verified=row["verified"],
        previous_secret_hash=bytes(row["previous_secret_hash"]) if row["previous_secret_hash"] is not None else None,
        previous_secret_expires_at=row["previous_secret_expires_at"],
        logo_url=row["logo_url"],
        developer_name=row["developer_name"],
        homepage_url=row["homepage_url"],
        privacy_url=row["privacy_url"],
        terms_url=row["terms_url"],
        grant_types=tuple(row["grant_types"]),
    )


async def list_consents_with_apps(db: DB, user_id: int) -> list[asyncpg.Record]:
    """A user's consent records (authz's ``grants``) joined with the app's name and description,
    newest first (authz: the authorized-apps page)."""
    return await db.fetch(
        """SELECT g.client_id, a.name, a.description, g.scopes, g.first_authorized_at, g.last_authorized_at
           FROM grants g JOIN oauth_apps a ON a.client_id = g.client_id
           WHERE g.user_id = $1
           ORDER BY g.last_authorized_at DESC, g.client_id""",
        user_id,
    )


# --- users ---------------------------------------------------------------------------------------
async def user_name_status(db: DB, user_id: int) -> asyncpg.Record | None:
    """(username, status) of ``user_id``, or None when the user is gone (authz: is the signed-in
    user still active; token: introspection)."""
    return await db.fetchrow("SELECT username, status FROM users WHERE id = $1", user_id)


async def login_user(db: DB, identifier: str) -> asyncpg.Record | None:
    """(id, username, status, password_hash) of the user whose username or email is
    ``identifier`` (case-insensitive), the username match first (authz: the login form)."""
    return await db.fetchrow(
        """SELECT id, username, status, password_hash FROM users
           WHERE lower(username) = lower($1) OR lower(email) = lower($1)
           ORDER BY (lower(username) = lower($1)) DESC LIMIT 1""",
        identifier,
    )


# --- token's refresh tokens joined with their user -----------------------------------------------
# These start from the token's unique hash (a MATERIALIZED CTE: at most one row, by the unique
# index) and only then join its family and user by primary key, so their plan cannot depend on
# statistics (docs/performance.md, tests/integration/test_hot_plans.py).
REFRESH_SQL = """
WITH rt AS MATERIALIZED (
    SELECT id, family_id, used_at, expires_at, grace_response FROM refresh_tokens WHERE token_hash = $1
)
SELECT rt.id, rt.family_id, rt.used_at IS NOT NULL AS used, rt.grace_response,
       rt.expires_at <= now() AS expired,
       rt.used_at > now() - make_interval(secs => $2) AS in_grace,
       EXISTS (SELECT 1 FROM refresh_tokens c
               WHERE c.parent_id = rt.id AND c.used_at IS NULL AND c.expires_at > now()) AS child_live,
       f.client_id, f.revoked_at IS NOT NULL AS family_revoked, f.user_id, f.scope, f.auth_time,
       u.email, u.status AS user_status
FROM rt
JOIN token_families f ON f.id = rt.family_id
LEFT JOIN users u ON u.id = f.user_id
"""


async def find_refresh_token(db: DB, refresh_hash: bytes, grace_seconds: float) -> asyncpg.Record | None:
    """owner: token (+ account's users). A refresh token by its hash with its family and its user's
    email and status: what a rotation needs, and why a token could not be consumed (grace, reuse,
    invalid; the child check uses refresh_tokens_parent). Token: the refresh_token grant."""
    return await db.fetchrow(REFRESH_SQL, refresh_hash, grace_seconds)


# ONE statement consumes a live refresh token (by the id and family find_refresh_token gave:
# primary keys only, so the plan cannot drive from the app's families) of a non-revoked family of
# the client with an active user (status 1), stores on it the sealed response, and inserts its
# child; it returns the child's id, or nothing when the token could not be consumed (a concurrent
# refresh won, or it was revoked meanwhile) and then nothing was written.
ROTATE_REFRESH_SQL = """
WITH consumed AS (
    UPDATE refresh_tokens rt SET used_at = now(), grace_response = $5
    WHERE rt.id = $1 AND rt.family_id = $6 AND rt.used_at IS NULL AND rt.expires_at > now()
      AND EXISTS (SELECT 1 FROM token_families f JOIN users u ON u.id = f.user_id
                  WHERE f.id = $6 AND f.client_id = $2 AND f.revoked_at IS NULL AND u.status = 1)
    RETURNING rt.id, rt.family_id
)
INSERT INTO refresh_tokens (family_id, token_hash, parent_id, expires_at)
SELECT family_id, $3, id, now() + make_interval(secs => $4) FROM consumed
RETURNING id
"""


async def rotate_refresh_token(
    db: DB,
    refresh_id: int,
    family_id: uuid.UUID,
    client_id: str,
    child_hash: bytes,
    ttl_seconds: float,
    sealed: bytes,
) -> int | None:
    """owner: token (+ account's users). Consume a live refresh token of an active user (RFC 9700
    4.14.2 rotation), keep ``sealed`` on it for the grace window and insert its child, in one
    statement; the child's id, or None when nothing was consumed (token: the refresh_token grant)."""
    child_id = await db.fetchval(ROTATE_REFRESH_SQL, refresh_id, client_id, child_hash, ttl_seconds, sealed, family_id)
    return None if child_id is None else int(child_id)


LIVE_REFRESH_SQL = """
WITH rt AS MATERIALIZED (
    SELECT family_id, created_at, expires_at FROM refresh_tokens
    WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
)
SELECT rt.created_at, rt.expires_at, f.client_id, f.user_id, f.scope, u.username, u.status
FROM rt
JOIN token_families f ON f.id = rt.family_id
JOIN users u ON u.id = f.user_id
WHERE f.revoked_at IS NULL
"""


async def live_refresh_token(db: DB, refresh_hash: bytes) -> asyncpg.Record | None:
    """A live refresh token with its family and its user's name and status (token: introspection)."""
    return await db.fetchrow(LIVE_REFRESH_SQL, refresh_hash)


# --- spending (docs/spending.md): authz shows the user what an app spent ----------------------
async def balance_of(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record | None:
    """(quota, used_quota): the state a ``quota.changed`` event for a limit change carries."""
    return await conn.fetchrow("SELECT quota, used_quota FROM users WHERE id = $1", user_id)


async def spent_since(db: DB, user_id: int, client_id: str, since: object) -> int:
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


async def spend_totals(db: DB, user_id: int) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT client_id, sum(amount) AS total FROM spend_charges WHERE user_id = $1 GROUP BY client_id", user_id
    )
    return {r["client_id"]: int(r["total"]) for r in rows}


async def recent_charges(db: DB, user_id: int, client_id: str, limit: int = 10) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT amount, description, created_at FROM spend_charges
           WHERE user_id = $1 AND client_id = $2 ORDER BY created_at DESC, id DESC LIMIT $3""",
        user_id,
        client_id,
        limit,
    )
