"""All SQL of the token service (docs/architecture.md "token inside"): small named functions taking
a connection or pool, plain parameterised asyncpg queries. Handlers and rules hold no SQL.

Tables owned here: token_families, refresh_tokens, signing_keys. What other services do on them
(revoking a user's or an app's families, reading the signing keys, adding a key) is published in
libs/contracts/token.py; what this service does on other services' tables (consuming a code,
refresh tokens joined with their user, a user's name and status) goes through
libs/contracts/authz.py and libs/contracts/account.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import asyncpg

from libs.platform.retention import PurgeRule

DB: TypeAlias = asyncpg.Pool | asyncpg.Connection


# --- token_families / refresh_tokens (owned by token) --------------------------------------------
async def insert_family(
    conn: asyncpg.Connection,
    family_id: uuid.UUID,
    *,
    client_id: str,
    user_id: int | None,
    scope: str,
    auth_time: datetime | None,
) -> None:
    await conn.execute(
        """INSERT INTO token_families (id, client_id, user_id, scope, auth_time)
           VALUES ($1, $2, $3, $4, $5)""",
        family_id,
        client_id,
        user_id,
        scope,
        auth_time,
    )


async def insert_refresh_token(
    conn: asyncpg.Connection, family_id: uuid.UUID, refresh_hash: bytes, parent_id: int | None, ttl_seconds: float
) -> int:
    refresh_id = await conn.fetchval(
        """INSERT INTO refresh_tokens (family_id, token_hash, parent_id, expires_at)
           VALUES ($1, $2, $3, now() + make_interval(secs => $4))
           RETURNING id""",
        family_id,
        refresh_hash,
        parent_id,
        ttl_seconds,
    )
    return int(refresh_id)


# The hot statements look a token up by its unique hash FIRST (a MATERIALIZED CTE: at most one row,
# by the unique index) and only then join its family (and user) by primary key. Their plan cannot
# depend on statistics: left to itself, the planner once drove from token_families by client_id on
# freshly filled tables and probed refresh_tokens once per family of the app (docs/performance.md;
# tests/integration/test_hot_plans.py checks the plans at 100,000 families of one app). The ones
# that join another owner's table are in libs/contracts/authz.py and libs/contracts/account.py.
REFRESH_OWNER_SQL = """
WITH rt AS MATERIALIZED (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)
SELECT rt.family_id, f.client_id FROM rt JOIN token_families f ON f.id = rt.family_id
"""


async def find_refresh_owner(db: DB, refresh_hash: bytes) -> asyncpg.Record | None:
    """family_id and client_id of a refresh token (revocation, RFC 7009)."""
    return await db.fetchrow(REFRESH_OWNER_SQL, refresh_hash)


async def revoke_family_row(conn: asyncpg.Connection, family_id: uuid.UUID, reason: str) -> asyncpg.Record | None:
    """Mark a live family revoked; its (client_id, user_id), or None if unknown or already revoked."""
    return await conn.fetchrow(
        """UPDATE token_families SET revoked_at = now(), revoked_reason = $2
           WHERE id = $1 AND revoked_at IS NULL
           RETURNING client_id, user_id""",
        family_id,
        reason,
    )


async def expire_family_refresh_tokens(conn: asyncpg.Connection, family_id: uuid.UUID) -> None:
    """Expire a revoked family's unused refresh tokens and drop its grace responses."""
    await conn.execute(
        """UPDATE refresh_tokens SET expires_at = least(expires_at, now()), grace_response = NULL
           WHERE family_id = $1 AND (used_at IS NULL OR grace_response IS NOT NULL)""",
        family_id,
    )


async def family_is_live(db: DB, family_id: uuid.UUID) -> bool:
    """False if the family is revoked or gone (with its user)."""
    return bool(await db.fetchval("SELECT revoked_at IS NULL AS live FROM token_families WHERE id = $1", family_id))


async def seed_families(
    conn: asyncpg.Connection, client_id: str, user_ids: list[int], count: int, scope: str, ttl_seconds: float
) -> None:
    """``count`` existing grants of ``client_id`` spread over ``user_ids``, one live refresh token
    each (random hashes nobody holds): an app's worth of rows, as in production (``bench``, in the
    caller's transaction)."""
    await conn.execute(
        """INSERT INTO token_families (id, client_id, user_id, scope)
           SELECT gen_random_uuid(), $1, ($2::bigint[])[1 + g % cardinality($2::bigint[])], $4
           FROM generate_series(1, $3::int) g""",
        client_id,
        user_ids,
        count,
        scope,
    )
    await conn.execute(
        """INSERT INTO refresh_tokens (family_id, token_hash, expires_at)
           SELECT f.id, decode(md5(random()::text) || md5(random()::text), 'hex'), now() + make_interval(secs => $2)
           FROM token_families f
           WHERE f.client_id = $1 AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.family_id = f.id)""",
        client_id,
        ttl_seconds,
    )


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


# --- retention (docs/operations.md "Retention"; `oauthctl purge`) --------------------------------
# A token family is dead, and with it every refresh token it ever had, used ones included, once
# ($1 = PURGE_TOKEN_RETENTION_SECONDS, $2 = ACCESS_TOKEN_TTL_SECONDS):
# - nothing it issued can still be valid: its last issuance (the family's creation or its newest
#   refresh token's, which is when the last access token was minted) is older than the access-token
#   lifetime plus the retention, so every access token of it expired at least the retention ago
#   and the revocation check no longer needs the row (token_families.revoked_at, `revoked_in_db`);
# - and it is either revoked for longer than the retention, or has no unused refresh token left
#   that is unexpired or expired within the retention (nothing can rotate it any more).
# Until then a live family keeps its used refresh tokens: a used one presented again is the reuse
# that revokes the family (RFC 9700 4.14.2), so deleting it would turn a detected theft into a
# plain invalid_grant. A dead family cannot come back to life (a rotation needs an unused, unexpired
# token of an unrevoked family), so an interrupted purge is safe to resume.
# Where a walk of token_families by (created_at, id) starts.
OLDEST = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))
# "OFFSET 0" keeps each NOT EXISTS a per-family probe of refresh_tokens_family: without it the
# planner turns the first into a hash anti-join over the whole of refresh_tokens, for every batch.
DEAD_FAMILY = """
f.created_at < now() - make_interval(secs => $1::float8 + $2::float8)
AND NOT EXISTS (SELECT 1 FROM refresh_tokens x
                WHERE x.family_id = f.id AND x.created_at >= now() - make_interval(secs => $1::float8 + $2::float8)
                OFFSET 0)
AND (f.revoked_at < now() - make_interval(secs => $1::float8)
     OR (f.revoked_at IS NULL
         AND NOT EXISTS (SELECT 1 FROM refresh_tokens x
                         WHERE x.family_id = f.id AND x.used_at IS NULL
                           AND x.expires_at >= now() - make_interval(secs => $1::float8)
                         OFFSET 0)))
"""


def purge_rules(retention_seconds: float, access_token_ttl_seconds: float) -> list[PurgeRule]:
    """The dead rows of token's tables, refresh tokens before their families (so a family's
    delete cascades to nothing and every batch stays ``batch_size`` rows). Both walk
    token_families from the oldest, by (created_at, id) (index token_families_created, migration
    0003; ``$4, $5`` the cursor, included: a batch may end inside a family), so a run reads each
    old family once instead of once per batch, and never the young ones."""
    args = (float(retention_seconds), float(access_token_ttl_seconds))
    refresh = f"FROM token_families f JOIN refresh_tokens r ON r.family_id = f.id WHERE {DEAD_FAMILY}"
    families = f"FROM token_families f WHERE {DEAD_FAMILY}"
    walk = "AND (f.created_at, f.id) >= ($4, $5) ORDER BY f.created_at, f.id LIMIT $3"
    last = """SELECT (SELECT count(*) FROM gone), last.created_at, last.id FROM (SELECT 1) one
              LEFT JOIN LATERAL (SELECT created_at, id FROM doomed ORDER BY created_at DESC, id DESC LIMIT 1) last
              ON true"""
    return [
        PurgeRule(
            table="refresh_tokens",
            owner="token",
            rule="every refresh token (used or not) of a dead token family",
            count_sql=f"SELECT count(*) {refresh}",
            delete_sql=f"""WITH doomed AS (SELECT r.id AS token_id, f.created_at, f.id {refresh} {walk}
                                       FOR UPDATE OF r SKIP LOCKED),
                gone AS (DELETE FROM refresh_tokens WHERE id IN (SELECT token_id FROM doomed) RETURNING 1)
                {last}""",
            args=args,
            start=OLDEST,
        ),
        PurgeRule(
            table="token_families",
            owner="token",
            rule="families revoked, or with no usable refresh token, whose access tokens all expired, "
            "both longer ago than the retention",
            count_sql=f"SELECT count(*) {families}",
            delete_sql=f"""WITH doomed AS (SELECT f.created_at, f.id {families} {walk} FOR UPDATE SKIP LOCKED),
                gone AS (DELETE FROM token_families WHERE id IN (SELECT id FROM doomed) RETURNING 1)
                {last}""",
            args=args,
            start=OLDEST,
        ),
    ]
