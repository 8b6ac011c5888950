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


async def store_grace_response(conn: asyncpg.Connection, refresh_id: int, sealed: bytes) -> None:
    await conn.execute("UPDATE refresh_tokens SET grace_response = $2 WHERE id = $1", refresh_id, sealed)


async def find_refresh_owner(db: DB, refresh_hash: bytes) -> asyncpg.Record | None:
    """family_id and client_id of a refresh token (revocation, RFC 7009)."""
    return await db.fetchrow(
        """SELECT rt.family_id, f.client_id FROM refresh_tokens rt JOIN token_families f ON f.id = rt.family_id
           WHERE rt.token_hash = $1""",
        refresh_hash,
    )


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
# authz owns authorization_codes and device_codes; account owns users.

# authz: consume a code bound to its client in the caller's transaction (joined with its user).
CONSUME_CODE_SQL = """
UPDATE authorization_codes c SET used_at = now(), family_id = $3
FROM users u
WHERE c.code_hash = $1 AND c.client_id = $2 AND c.used_at IS NULL AND c.expires_at > now()
  AND u.id = c.user_id
RETURNING c.user_id, c.redirect_uri, c.scope, c.code_challenge, c.code_challenge_method, c.auth_time,
          c.nonce, u.email, u.status AS user_status
"""


async def consume_code(
    conn: asyncpg.Connection, code_hash: bytes, client_id: str, family_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(CONSUME_CODE_SQL, code_hash, client_id, family_id)


# authz: why a code could not be consumed (unknown, another client's, used, expired).
async def diagnose_code(db: DB, code_hash: bytes) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT client_id, used_at, family_id, expires_at <= now() AS expired
           FROM authorization_codes WHERE code_hash = $1""",
        code_hash,
    )


# authz: a new device authorization request (RFC 8628 3.1, docs/device.md); None when the user code
# collides with a stored one (the caller draws another).
async def insert_device_code(
    conn: asyncpg.Connection,
    *,
    device_code_hash: bytes,
    user_code_hash: bytes,
    client_id: str,
    scope: str,
    device_agent: str,
    device_ip: str,
    interval_seconds: int,
    ttl_seconds: int,
) -> int | None:
    return await conn.fetchval(
        """INSERT INTO device_codes (device_code_hash, user_code_hash, client_id, scope, device_agent, device_ip,
                                     interval_seconds, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
           ON CONFLICT (user_code_hash) DO NOTHING
           RETURNING id""",
        device_code_hash,
        user_code_hash,
        client_id,
        scope,
        device_agent,
        device_ip,
        interval_seconds,
        float(ttl_seconds),
    )


# authz (+ account's users): a polled device code, locked for this poll (RFC 8628 3.4, 3.5), with
# whether this poll came sooner than the interval after the previous one.
LOCK_DEVICE_CODE_SQL = """
SELECT d.id, d.client_id, d.status, d.scope, d.user_id, d.auth_time, d.interval_seconds,
       d.expires_at <= now() AS expired,
       d.last_polled_at IS NOT NULL
         AND d.last_polled_at + make_interval(secs => d.interval_seconds) > now() AS too_fast,
       u.email, u.status AS user_status
FROM device_codes d LEFT JOIN users u ON u.id = d.user_id
WHERE d.device_code_hash = $1
FOR UPDATE OF d
"""


async def lock_device_code(conn: asyncpg.Connection, device_code_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(LOCK_DEVICE_CODE_SQL, device_code_hash)


# authz: remember this poll (and the longer interval after a slow_down) on a pending device code.
async def record_device_poll(conn: asyncpg.Connection, device_id: int, add_seconds: int) -> None:
    await conn.execute(
        """UPDATE device_codes SET last_polled_at = now(), interval_seconds = interval_seconds + $2
           WHERE id = $1""",
        device_id,
        add_seconds,
    )


# authz: consume an approved device code (single use) and link the family issued from it.
async def consume_device_code(conn: asyncpg.Connection, device_id: int, family_id: uuid.UUID) -> bool:
    done = await conn.fetchval(
        """UPDATE device_codes SET status = 'used', used_at = now(), last_polled_at = now(), family_id = $2
           WHERE id = $1 AND status = 'approved' RETURNING true""",
        device_id,
        family_id,
    )
    return bool(done)


# account (users): consume a live refresh token of a non-revoked family of the client, with its user.
CONSUME_REFRESH_SQL = """
UPDATE refresh_tokens rt SET used_at = now()
FROM token_families f JOIN users u ON u.id = f.user_id
WHERE rt.token_hash = $1 AND rt.used_at IS NULL AND rt.expires_at > now()
  AND f.id = rt.family_id AND f.client_id = $2 AND f.revoked_at IS NULL
RETURNING rt.id, rt.family_id, f.user_id, f.scope, f.auth_time, u.email, u.status AS user_status
"""


async def consume_refresh_token(conn: asyncpg.Connection, refresh_hash: bytes, client_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(CONSUME_REFRESH_SQL, refresh_hash, client_id)


# account (users): why a refresh token could not be consumed (grace, reuse, invalid), with the user status.
DIAGNOSE_REFRESH_SQL = """
SELECT rt.id, rt.family_id, rt.used_at IS NOT NULL AS used, rt.grace_response,
       rt.expires_at <= now() AS expired,
       rt.used_at > now() - make_interval(secs => $2) AS in_grace,
       EXISTS (SELECT 1 FROM refresh_tokens c
               WHERE c.parent_id = rt.id AND c.used_at IS NULL AND c.expires_at > now()) AS child_live,
       f.client_id, f.revoked_at IS NOT NULL AS family_revoked, u.status AS user_status
FROM refresh_tokens rt
JOIN token_families f ON f.id = rt.family_id
LEFT JOIN users u ON u.id = f.user_id
WHERE rt.token_hash = $1
"""


async def diagnose_refresh_token(db: DB, refresh_hash: bytes, grace_seconds: float) -> asyncpg.Record | None:
    return await db.fetchrow(DIAGNOSE_REFRESH_SQL, refresh_hash, grace_seconds)


# account (users): the name and status of a user (introspection).
async def user_name_and_status(db: DB, user_id: int) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT username, status FROM users WHERE id = $1", user_id)


# account (users): a live refresh token with its family and active user (introspection).
async def live_refresh_token(db: DB, refresh_hash: bytes) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT rt.created_at, rt.expires_at, f.client_id, f.user_id, f.scope, u.username, u.status
           FROM refresh_tokens rt
           JOIN token_families f ON f.id = rt.family_id
           JOIN users u ON u.id = f.user_id
           WHERE rt.token_hash = $1 AND rt.used_at IS NULL AND rt.expires_at > now() AND f.revoked_at IS NULL""",
        refresh_hash,
    )
