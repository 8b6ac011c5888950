"""All SQL of the account service: small named, parameterised asyncpg queries (docs/architecture.md
"account inside"). Rules and handlers call these; nothing else in services/account holds SQL.

Tables owned by account: ``users``, ``oauth_apps``, ``developer_tokens``, ``topup_codes``,
``quota_operations``. Queries on other owners' tables are in the marked section at the end.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"

USER_COLUMNS = "id, username, email, status, quota, used_quota, created_at"
APP_COLUMNS = """id, name, description, client_id, redirect_uris, token_endpoint_auth_method,
                 grant_types, created_at, updated_at"""


# --- users ---------------------------------------------------------------------------------------
async def insert_user(conn: Conn, username: str, email: str, email_skeleton: str, password_hash: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"""INSERT INTO users (username, email, email_skeleton, password_hash) VALUES ($1, $2, $3, $4)
            RETURNING {USER_COLUMNS}""",
        username,
        email,
        email_skeleton,
        password_hash,
    )
    assert row is not None
    return row


async def user_by_id(conn: Conn, user_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)


async def user_by_name_or_email(conn: Conn, username_or_email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""SELECT {USER_COLUMNS} FROM users
            WHERE lower(username) = lower($1) OR lower(email) = lower($1) LIMIT 1""",
        username_or_email,
    )


async def users_without_skeleton(conn: Conn) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT id, email FROM users WHERE email_skeleton IS NULL ORDER BY id")


async def set_email_skeleton(conn: Conn, user_id: int, email_skeleton: str) -> None:
    await conn.execute("UPDATE users SET email_skeleton = $2 WHERE id = $1", user_id, email_skeleton)


async def lock_user(conn: asyncpg.Connection, user_id: int) -> None:
    """Row lock on the user: serialises per-user limits (apps, developer tokens) in a transaction."""
    await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)


async def lock_user_status(conn: asyncpg.Connection, user_id: int) -> int | None:
    return await conn.fetchval("SELECT status FROM users WHERE id = $1 FOR UPDATE", user_id)


async def set_user_status(conn: asyncpg.Connection, user_id: int, status: int) -> None:
    await conn.execute("UPDATE users SET status = $2, updated_at = now() WHERE id = $1", user_id, status)


async def user_balance_row(conn: Conn, user_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT status, quota, used_quota FROM users WHERE id = $1", user_id)


async def add_quota_if_status(
    conn: asyncpg.Connection, user_id: int, amount: int, status: int | None
) -> asyncpg.Record | None:
    """``quota += amount`` (only while the user has ``status``, when given); (quota, used_quota)."""
    return await conn.fetchrow(
        """UPDATE users SET quota = quota + $2, updated_at = now()
           WHERE id = $1 AND ($3::int IS NULL OR status = $3) RETURNING quota, used_quota""",
        user_id,
        amount,
        status,
    )


async def consume_quota_if_covered(
    conn: asyncpg.Connection, user_id: int, amount: int, status: int
) -> asyncpg.Record | None:
    """``used_quota += amount`` only if the balance covers it: one conditional UPDATE, so the row
    lock serialises concurrent consumes and the balance never goes below zero."""
    return await conn.fetchrow(
        """UPDATE users SET used_quota = used_quota + $2, updated_at = now()
           WHERE id = $1 AND status = $3 AND quota - used_quota >= $2
           RETURNING quota, used_quota""",
        user_id,
        amount,
        status,
    )


# --- quota_operations (idempotency keys) ---------------------------------------------------------
async def claim_quota_key(conn: asyncpg.Connection, key: str, operation: str, user_id: int, amount: int) -> bool:
    """True when the key is new (now recorded); False when it was used before."""
    fresh = await conn.fetchval(
        """INSERT INTO quota_operations (idempotency_key, operation, user_id, amount, result)
           VALUES ($1, $2, $3, $4, '{}'::jsonb) ON CONFLICT (idempotency_key) DO NOTHING RETURNING true""",
        key,
        operation,
        user_id,
        amount,
    )
    return bool(fresh)


async def quota_operation(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT operation, user_id, amount, result::text AS result FROM quota_operations WHERE idempotency_key = $1",
        key,
    )


async def save_quota_result(conn: asyncpg.Connection, key: str, result_json: str) -> None:
    await conn.execute(
        "UPDATE quota_operations SET result = $2::text::jsonb WHERE idempotency_key = $1", key, result_json
    )


# --- topup_codes ---------------------------------------------------------------------------------
async def insert_topup_codes(conn: Conn, rows: list[tuple[bytes, int, int | None]]) -> None:
    """(code_hash, amount, expires_days) each."""
    await conn.executemany(
        """INSERT INTO topup_codes (code_hash, amount, expires_at)
           VALUES ($1, $2, CASE WHEN $3::int IS NULL THEN NULL ELSE now() + make_interval(days => $3::int) END)""",
        rows,
    )


async def take_topup_code(conn: asyncpg.Connection, code_hash: bytes, user_id: int) -> int | None:
    """Consume an unused, unexpired code in one conditional UPDATE (exactly once); its amount."""
    return await conn.fetchval(
        """UPDATE topup_codes SET redeemed_by = $2, redeemed_at = now()
           WHERE code_hash = $1 AND redeemed_at IS NULL AND (expires_at IS NULL OR expires_at > now())
           RETURNING amount""",
        code_hash,
        user_id,
    )


async def topup_code_state(conn: asyncpg.Connection, code_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT redeemed_at IS NOT NULL AS used, expires_at <= now() AS expired FROM topup_codes WHERE code_hash = $1",
        code_hash,
    )


# --- oauth_apps ----------------------------------------------------------------------------------
async def count_apps(conn: Conn, owner_id: int) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM oauth_apps WHERE owner_id = $1", owner_id))


async def insert_app(conn: Conn, owner_id: int, values: dict[str, Any]) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"""INSERT INTO oauth_apps (owner_id, name, description, client_id, client_secret_hash,
                                    redirect_uris, token_endpoint_auth_method, grant_types)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {APP_COLUMNS}""",
        owner_id,
        values["name"],
        values["description"],
        values["client_id"],
        values["client_secret_hash"],
        values["redirect_uris"],
        values["token_endpoint_auth_method"],
        values["grant_types"],
    )
    assert row is not None
    return row


async def apps_of(conn: Conn, owner_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(f"SELECT {APP_COLUMNS} FROM oauth_apps WHERE owner_id = $1 ORDER BY id", owner_id)


async def app_of(conn: Conn, owner_id: int, app_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {APP_COLUMNS} FROM oauth_apps WHERE id = $1 AND owner_id = $2", app_id, owner_id
    )


async def app_exists(conn: Conn, owner_id: int, app_id: int) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM oauth_apps WHERE id = $1 AND owner_id = $2", app_id, owner_id))


async def update_app(
    conn: Conn,
    owner_id: int,
    app_id: int,
    name: str | None,
    description: str | None,
    uris: list[str] | None,
    grant_types: list[str] | None = None,
) -> asyncpg.Record | None:
    """None values keep the column (COALESCE)."""
    return await conn.fetchrow(
        f"""UPDATE oauth_apps SET name = coalesce($3, name), description = coalesce($4, description),
                   redirect_uris = coalesce($5, redirect_uris), grant_types = coalesce($6, grant_types),
                   updated_at = now()
            WHERE id = $1 AND owner_id = $2 RETURNING {APP_COLUMNS}""",
        app_id,
        owner_id,
        name,
        description,
        uris,
        grant_types,
    )


async def delete_app(conn: Conn, owner_id: int, app_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "DELETE FROM oauth_apps WHERE id = $1 AND owner_id = $2 RETURNING id, client_id", app_id, owner_id
    )


async def set_app_secret(conn: Conn, owner_id: int, app_id: int, secret_hash: bytes) -> asyncpg.Record | None:
    """Only confidential apps have a secret (token_endpoint_auth_method other than none)."""
    return await conn.fetchrow(
        f"""UPDATE oauth_apps SET client_secret_hash = $3, secret_rotated_at = now(), updated_at = now()
            WHERE id = $1 AND owner_id = $2 AND token_endpoint_auth_method <> 'none'
            RETURNING {APP_COLUMNS}""",
        app_id,
        owner_id,
        secret_hash,
    )


async def verified_app_ids(conn: Conn, owner_id: int) -> set[int]:
    rows = await conn.fetch("SELECT id FROM oauth_apps WHERE owner_id = $1 AND verified", owner_id)
    return {r["id"] for r in rows}


async def set_app_verified(conn: Conn, client_id: str, verified: bool) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE oauth_apps SET verified = $2, updated_at = now() WHERE client_id = $1 RETURNING id, client_id, name",
        client_id,
        verified,
    )


async def all_redirect_uris(conn: Conn) -> list[str]:
    rows = await conn.fetch("SELECT DISTINCT unnest(redirect_uris) AS uri FROM oauth_apps")
    return [r["uri"] for r in rows]


async def advisory_xact_lock(conn: asyncpg.Connection, key: int) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", key)


# --- developer_tokens ----------------------------------------------------------------------------
async def insert_developer_token(conn: Conn, user_id: int, token_hash: bytes, name: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        """INSERT INTO developer_tokens (user_id, token_hash, name) VALUES ($1, $2, $3)
           RETURNING id, user_id, name, created_at""",
        user_id,
        token_hash,
        name,
    )
    assert row is not None
    return row


async def count_active_developer_tokens(conn: Conn, user_id: int) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM developer_tokens WHERE user_id = $1 AND revoked_at IS NULL", user_id)
    )


async def active_developer_tokens(conn: Conn, user_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, name, created_at, last_used_at FROM developer_tokens
           WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id""",
        user_id,
    )


async def revoke_developer_token(conn: Conn, token_id: int, user_id: int | None) -> bool:
    status = await conn.execute(
        """UPDATE developer_tokens SET revoked_at = now()
           WHERE id = $1 AND revoked_at IS NULL AND ($2::bigint IS NULL OR user_id = $2)""",
        token_id,
        user_id,
    )
    return status.endswith(" 1")


async def developer_token_owner(conn: Conn, token_hash: bytes, user_status: int) -> asyncpg.Record | None:
    """The live token's (id, user_id, stale) when its user has ``user_status``; stale means
    last_used_at is over a minute old (so it is written at most once a minute)."""
    return await conn.fetchrow(
        """SELECT t.id, t.user_id, t.last_used_at < now() - interval '1 minute' OR t.last_used_at IS NULL AS stale
           FROM developer_tokens t JOIN users u ON u.id = t.user_id
           WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.status = $2""",
        token_hash,
        user_status,
    )


async def touch_developer_token(conn: Conn, token_id: int) -> None:
    await conn.execute("UPDATE developer_tokens SET last_used_at = now() WHERE id = $1", token_id)


# --- cross-owner (to become libs/contracts/<owner>.py) -------------------------------------------
async def delete_user_grants(conn: asyncpg.Connection, user_id: int) -> None:
    # owner: authz (grants): a disabled user's consents go (libs/contracts/authz.py).
    await conn.execute("DELETE FROM grants WHERE user_id = $1", user_id)
