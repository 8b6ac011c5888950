"""All SQL of the token service (docs/architecture.md "token inside"): small named functions taking
a connection or pool, plain parameterised asyncpg queries. Handlers and rules hold no SQL.

Tables owned here: token_families, refresh_tokens, signing_keys (inserting a key and the
signing-key reads of the running services are in libs/oauth/keys.py, which this step leaves alone).
The section "cross-owner" reads or writes another service's tables; each becomes a contract in
libs/contracts/<owner>.py in the next step.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TypeAlias

import asyncpg

DB: TypeAlias = asyncpg.Pool | asyncpg.Connection


# --- token_families / refresh_tokens (owned by token) --------------------------------------------
# The hot statements look a token up by its unique hash FIRST (a MATERIALIZED CTE: at most one row,
# by the unique index) and only then join its family and user by primary key. Their plan cannot
# depend on statistics: left to itself, the planner once drove from token_families by client_id on
# freshly filled tables and probed refresh_tokens once per family of the app (docs/performance.md,
# tests/integration/test_hot_plans.py checks the plans at 100,000 families of one app).
REFRESH_OWNER_SQL = """
WITH rt AS MATERIALIZED (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)
SELECT rt.family_id, f.client_id FROM rt JOIN token_families f ON f.id = rt.family_id
"""


async def find_refresh_owner(db: DB, refresh_hash: bytes) -> asyncpg.Record | None:
    """family_id and client_id of a refresh token (revocation, RFC 7009)."""
    return await db.fetchrow(REFRESH_OWNER_SQL, refresh_hash)


async def family_is_live(db: DB, family_id: uuid.UUID) -> bool:
    """False if the family is revoked or gone (with its user)."""
    return bool(await db.fetchval("SELECT revoked_at IS NULL AS live FROM token_families WHERE id = $1", family_id))


# --- signing_keys (owned by token; key_admin.py, behind ``oauthctl keys``) ----------------------
async def lock_keygen(conn: asyncpg.Connection, lock_id: int) -> None:
    """Serialise key changes with ensure_signing_key (transaction-scoped advisory lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_id)


async def all_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT kid, alg, created_at, activates_at, retired_at, now() AS now FROM signing_keys ORDER BY activates_at"
    )


async def key_activation(conn: asyncpg.Connection, kid: str) -> datetime:
    activates_at: datetime = await conn.fetchval("SELECT activates_at FROM signing_keys WHERE kid = $1", kid)
    return activates_at


async def retire_signing_keys_at(conn: asyncpg.Connection, alg: str, except_kid: str, at: datetime) -> list[str]:
    """Retire at ``at`` the keys of ``alg`` (other than ``except_kid``) that would still sign then."""
    rows = await conn.fetch(
        """UPDATE signing_keys SET retired_at = $3
           WHERE alg = $1 AND kid <> $2 AND activates_at <= $3 AND (retired_at IS NULL OR retired_at > $3)
           RETURNING kid""",
        alg,
        except_kid,
        at,
    )
    return [r["kid"] for r in rows]


async def lock_key(conn: asyncpg.Connection, kid: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT alg, retired_at, retired_at <= now() AS done, activates_at <= now() AS signs
           FROM signing_keys WHERE kid = $1 FOR UPDATE""",
        kid,
    )


async def other_signing_keys(conn: asyncpg.Connection, alg: str, kid: str) -> int:
    count: int = await conn.fetchval(
        """SELECT count(*) FROM signing_keys
           WHERE alg = $1 AND kid <> $2 AND activates_at <= now() AND (retired_at IS NULL OR retired_at > now())""",
        alg,
        kid,
    )
    return count


async def retire_key_now(conn: asyncpg.Connection, kid: str) -> datetime:
    retired_at: datetime = await conn.fetchval(
        "UPDATE signing_keys SET retired_at = now() WHERE kid = $1 RETURNING retired_at", kid
    )
    return retired_at


async def delete_keys_retired_before(conn: asyncpg.Connection, window: timedelta) -> list[str]:
    rows = await conn.fetch("DELETE FROM signing_keys WHERE retired_at <= now() - $1::interval RETURNING kid", window)
    return [r["kid"] for r in rows]


# --- cross-owner (to become libs/contracts/<owner>.py) -------------------------------------------
# authz owns authorization_codes; account owns users.

# authz: an authorization code by its hash (the primary key) with its user: what the exchange checks
# before consuming it (bindings, user status), and why a code could not be consumed (unknown,
# another client's, used, expired).
CODE_SQL = """
SELECT c.client_id, c.user_id, c.redirect_uri, c.scope, c.code_challenge, c.code_challenge_method, c.auth_time,
       c.nonce, c.used_at, c.family_id, c.expires_at <= now() AS expired, u.email, u.status AS user_status
FROM authorization_codes c
LEFT JOIN users u ON u.id = c.user_id
WHERE c.code_hash = $1
"""


async def find_code(db: DB, code_hash: bytes) -> asyncpg.Record | None:
    return await db.fetchrow(CODE_SQL, code_hash)


# authz + account (users): ONE statement consumes a live code bound to its client (of a user still
# active: status 1), creates the token family linked to it and stores the family's first refresh
# token; it returns the refresh token's id, or nothing when the code could not be consumed (used
# concurrently, expired, revoked, the user disabled) and then nothing was written. The foreign keys
# between the three rows are checked at the end of the statement.
EXCHANGE_CODE_SQL = """
WITH code AS (
    UPDATE authorization_codes c SET used_at = now(), family_id = $3
    WHERE c.code_hash = $1 AND c.client_id = $2 AND c.used_at IS NULL AND c.expires_at > now()
      AND EXISTS (SELECT 1 FROM users u WHERE u.id = c.user_id AND u.status = 1)
    RETURNING c.user_id, c.scope, c.auth_time
), family AS (
    INSERT INTO token_families (id, client_id, user_id, scope, auth_time)
    SELECT $3, $2, user_id, scope, auth_time FROM code
    RETURNING id
)
INSERT INTO refresh_tokens (family_id, token_hash, expires_at)
SELECT id, $4, now() + make_interval(secs => $5) FROM family
RETURNING id
"""


async def exchange_code(
    db: DB, code_hash: bytes, client_id: str, family_id: uuid.UUID, refresh_hash: bytes, ttl_seconds: float
) -> int | None:
    refresh_id = await db.fetchval(EXCHANGE_CODE_SQL, code_hash, client_id, family_id, refresh_hash, ttl_seconds)
    return None if refresh_id is None else int(refresh_id)


# account (users): a refresh token by its hash, with its family and user: what a rotation needs
# (family, scope, user) and why a token could not be consumed (grace, reuse, invalid). The child
# check uses refresh_tokens_parent.
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
    return await db.fetchrow(REFRESH_SQL, refresh_hash, grace_seconds)


# account (users): ONE statement consumes a live refresh token (by the id and family that
# find_refresh_token gave: primary keys only, so the plan cannot drive from the app's families) of a
# non-revoked family of the client with an active user (status 1), stores on it the sealed
# response, and inserts its child; it returns the child's id, or nothing when the token could not
# be consumed (a concurrent refresh won, or it was revoked meanwhile) and then nothing was written.
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
    child_id = await db.fetchval(ROTATE_REFRESH_SQL, refresh_id, client_id, child_hash, ttl_seconds, sealed, family_id)
    return None if child_id is None else int(child_id)


# account (users): the name and status of a user (introspection).
async def user_name_and_status(db: DB, user_id: int) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT username, status FROM users WHERE id = $1", user_id)


# account (users): a live refresh token with its family and active user (introspection).
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
    return await db.fetchrow(LIVE_REFRESH_SQL, refresh_hash)
