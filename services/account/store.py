"""All SQL of the account service: small named, parameterised asyncpg queries (docs/architecture.md
"account inside"). Rules and handlers call these; nothing else in services/account holds SQL.

Tables owned by account: ``users``, ``oauth_apps``, ``developer_tokens``, ``topup_codes``,
``quota_operations``, ``spend_charges``. What this service does on other owners' tables (deleting
consent records, revoking token families, reading a spending grant) goes through ``libs/contracts/``.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

from libs.contracts import account as account_contract
from libs.platform.retention import PurgeRule

Conn: TypeAlias = "asyncpg.Connection | asyncpg.Pool"

USER_COLUMNS = "id, username, email, status, quota, used_quota, created_at"
APP_COLUMNS = """id, name, description, client_id, redirect_uris, token_endpoint_auth_method,
                 logo_url, developer_name, homepage_url, privacy_url, terms_url, grant_types,
                 created_at, updated_at, previous_secret_expires_at"""
TRUST_COLUMNS = ("logo_url", "developer_name", "homepage_url", "privacy_url", "terms_url")


# --- users ---------------------------------------------------------------------------------------
async def insert_user(
    conn: Conn, username: str, email: str, email_skeleton: str | None, password_hash: str
) -> asyncpg.Record:
    """A new user (``email_skeleton`` None only for a row as they were before migration 0005)."""
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


async def set_password_hash(conn: Conn, user_id: int, password_hash: str) -> None:
    """A new password (already hashed): a password reset, ``oauthctl demo`` resetting the demo user's."""
    await conn.execute("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", user_id, password_hash)


async def set_balance(conn: Conn, user_id: int, quota: int, used_quota: int) -> None:
    """Set a balance outright, without a ``quota.changed`` event: seeding only (``oauthctl demo``,
    ``bench``, tests); live changes go through quota.py or topup.py."""
    await conn.execute("UPDATE users SET quota = $2, used_quota = $3 WHERE id = $1", user_id, quota, used_quota)


async def insert_numbered_users(conn: Conn, prefix: str, count: int, password_hash: str) -> list[int]:
    """``count`` users named ``<prefix><n>`` (``<prefix><n>@example.com``), all with one password
    hash: filler rows so tables are not toy-sized (``bench``); their ids."""
    rows = await conn.fetch(
        """INSERT INTO users (username, email, password_hash)
           SELECT $1 || g, $1 || g || '@example.com', $3 FROM generate_series(1, $2::int) g
           RETURNING id""",
        prefix,
        count,
        password_hash,
    )
    return [int(r["id"]) for r in rows]


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


# --- spend_charges (docs/spending.md) ------------------------------------------------------------
async def lock_user_balance(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record | None:
    """(status, quota, used_quota) with the user's row lock: serialises the charges of one user, so
    the period's sum and the balance read next stay true until the commit."""
    return await conn.fetchrow("SELECT status, quota, used_quota FROM users WHERE id = $1 FOR UPDATE", user_id)


async def spent_and_charge_by_key(
    conn: asyncpg.Connection, user_id: int, client_id: str, since: Any, key: str
) -> asyncpg.Record:
    """What the grant charged since ``since``, and the charge recorded under ``key`` if any (amount
    and result; NULLs otherwise). Run after ``lock_user_balance``: a new statement, so its snapshot
    sees every charge committed before the lock was granted."""
    row = await conn.fetchrow(
        """SELECT (SELECT coalesce(sum(amount), 0) FROM spend_charges
                   WHERE user_id = $1 AND client_id = $2 AND created_at >= $3) AS spent,
                  k.amount, k.result::text AS result
           FROM (SELECT 1) AS one
           LEFT JOIN spend_charges k ON k.user_id = $1 AND k.client_id = $2 AND k.idempotency_key = $4""",
        user_id,
        client_id,
        since,
        key,
    )
    assert row is not None
    return row


async def spent_since(conn: Conn, user_id: int, client_id: str, since: Any) -> int:
    """What the app charged the user since ``since``: the statement authz reads through the
    contract (``libs/contracts/account.spent_since``), written once."""
    return await account_contract.spent_since(conn, user_id, client_id, since)


async def debit_and_record_charge(
    conn: asyncpg.Connection,
    user_id: int,
    client_id: str,
    family_id: str | None,
    amount: int,
    key: str,
    description: str,
    result_json: str,
    at: Any,
    status: int,
) -> asyncpg.Record | None:
    """``used_quota += amount`` (a user with ``status``) if the balance covers it, and the charge's row, in one statement;
    (quota, used_quota) after, or None (nothing written) when the balance does not cover it."""
    return await conn.fetchrow(
        """WITH debit AS (
               UPDATE users SET used_quota = used_quota + $4, updated_at = now()
               WHERE id = $1 AND status = $9 AND quota - used_quota >= $4
               RETURNING quota, used_quota),
           charge AS (
               INSERT INTO spend_charges (user_id, client_id, family_id, amount, idempotency_key, description,
                                          result, created_at)
               SELECT $1, $2, $3::uuid, $4, $5, $6, $7::text::jsonb, $8 FROM debit)
           SELECT quota, used_quota FROM debit""",
        user_id,
        client_id,
        family_id,
        amount,
        key,
        description,
        result_json,
        at,
        status,
    )


async def spend_totals_of_owner(conn: Conn, owner_id: int) -> list[asyncpg.Record]:
    """Per app of a developer: total charged, charges and paying users (aggregates only)."""
    return await conn.fetch(
        """SELECT a.id AS app_id, coalesce(sum(c.amount), 0) AS total, count(c.id) AS charges,
                  count(DISTINCT c.user_id) AS users
           FROM oauth_apps a LEFT JOIN spend_charges c ON c.client_id = a.client_id
           WHERE a.owner_id = $1 GROUP BY a.id""",
        owner_id,
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
                                    redirect_uris, token_endpoint_auth_method,
                                    logo_url, developer_name, homepage_url, privacy_url, terms_url, grant_types)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING {APP_COLUMNS}""",
        owner_id,
        values["name"],
        values["description"],
        values["client_id"],
        values["client_secret_hash"],
        values["redirect_uris"],
        values["token_endpoint_auth_method"],
        *(values.get(c, "") for c in TRUST_COLUMNS),
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
    trust: dict[str, str] | None = None,
    grant_types: list[str] | None = None,
) -> asyncpg.Record | None:
    """None values keep the column (COALESCE); ``trust`` holds only the trust fields to change."""
    trust = trust or {}
    return await conn.fetchrow(
        f"""UPDATE oauth_apps SET name = coalesce($3, name), description = coalesce($4, description),
                   redirect_uris = coalesce($5, redirect_uris),
                   logo_url = coalesce($6, logo_url), developer_name = coalesce($7, developer_name),
                   homepage_url = coalesce($8, homepage_url), privacy_url = coalesce($9, privacy_url),
                   terms_url = coalesce($10, terms_url), grant_types = coalesce($11, grant_types),
                   updated_at = now()
            WHERE id = $1 AND owner_id = $2 RETURNING {APP_COLUMNS}""",
        app_id,
        owner_id,
        name,
        description,
        uris,
        *(trust.get(c) for c in TRUST_COLUMNS),
        grant_types,
    )


async def delete_app(conn: Conn, owner_id: int, app_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "DELETE FROM oauth_apps WHERE id = $1 AND owner_id = $2 RETURNING id, client_id", app_id, owner_id
    )


async def set_app_secret(
    conn: Conn, owner_id: int, app_id: int, secret_hash: bytes, grace_seconds: int
) -> asyncpg.Record | None:
    """Only confidential apps have a secret (token_endpoint_auth_method other than none). The
    replaced secret stays valid for ``grace_seconds`` (0: none, and any earlier one ends now)."""
    return await conn.fetchrow(
        f"""UPDATE oauth_apps SET
                   previous_secret_hash = CASE WHEN $4 > 0 THEN client_secret_hash END,
                   previous_secret_expires_at = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4) END,
                   client_secret_hash = $3, secret_rotated_at = now(), updated_at = now()
            WHERE id = $1 AND owner_id = $2 AND token_endpoint_auth_method <> 'none'
            RETURNING {APP_COLUMNS}""",
        app_id,
        owner_id,
        secret_hash,
        grace_seconds,
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


async def app_by_client_id(conn: Conn, client_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, name, token_endpoint_auth_method FROM oauth_apps WHERE client_id = $1", client_id
    )


async def app_named(conn: Conn, owner_id: int, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT id, client_id FROM oauth_apps WHERE owner_id = $1 AND name = $2", owner_id, name)


async def set_app_internal(conn: Conn, client_id: str, internal: bool) -> None:
    """May the app use grant_type=client_credentials (``apps.set_internal`` writes the event)?"""
    await conn.execute(
        "UPDATE oauth_apps SET internal = $2, updated_at = now() WHERE client_id = $1", client_id, internal
    )


async def set_app_auto_authorize(conn: Conn, client_id: str, auto_authorize: bool) -> None:
    """The operator's per-app one-click switch (no event: set before the app is first used)."""
    await conn.execute("UPDATE oauth_apps SET auto_authorize = $2 WHERE client_id = $1", client_id, auto_authorize)


async def reset_app_credentials(conn: Conn, app_id: int, secret_hash: bytes, redirect_uris: list[str]) -> None:
    """New secret and redirect URIs, verified (``oauthctl demo`` resetting the demo app)."""
    await conn.execute(
        """UPDATE oauth_apps SET client_secret_hash = $2, redirect_uris = $3, verified = true, updated_at = now()
           WHERE id = $1""",
        app_id,
        secret_hash,
        redirect_uris,
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


async def revoke_developer_tokens_named(conn: Conn, user_id: int, name: str) -> None:
    """Revoke a user's live developer tokens labelled ``name`` (``oauthctl demo``)."""
    await conn.execute(
        "UPDATE developer_tokens SET revoked_at = now() WHERE user_id = $1 AND name = $2 AND revoked_at IS NULL",
        user_id,
        name,
    )


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


# --- password_reset_tokens -----------------------------------------------------------------------
async def user_by_email(conn: Conn, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)", email)


async def insert_reset_token(conn: Conn, user_id: int, token_hash: bytes, ttl_seconds: int) -> None:
    await conn.execute(
        """INSERT INTO password_reset_tokens (user_id, token_hash, expires_at)
           VALUES ($1, $2, now() + make_interval(secs => $3))""",
        user_id,
        token_hash,
        ttl_seconds,
    )


async def usable_reset_token(conn: Conn, token_hash: bytes, *, lock: bool = False) -> asyncpg.Record | None:
    """The unused, unexpired reset token with this hash and its user (locked for the reset)."""
    return await conn.fetchrow(
        f"""SELECT t.id, t.user_id, u.username, u.email, u.status FROM password_reset_tokens t
            JOIN users u ON u.id = t.user_id
            WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now()
            {"FOR UPDATE OF t" if lock else ""}""",
        token_hash,
    )


async def use_reset_tokens(conn: Conn, user_id: int) -> None:
    """Every pending reset token of the user is used up (the one just used and any older link)."""
    await conn.execute(
        "UPDATE password_reset_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL", user_id
    )


# --- retention (docs/operations.md "Retention"; `oauthctl purge`) --------------------------------
# A password-reset token is single use and lives PASSWORD_RESET_TTL_SECONDS; once expired (used or
# not) longer ago than $1 = PURGE_CODE_RETENTION_SECONDS it answers nothing a missing row would not.
# The other tables here only grow by what people do (users, apps, developer tokens) or are a
# ledger (topup_codes, quota_operations, spend_charges): no rule deletes them.
RESET_TOKENS_DEAD = "FROM password_reset_tokens WHERE expires_at < now() - make_interval(secs => $1::float8)"


def purge_rules(retention_seconds: float) -> list[PurgeRule]:
    return [
        PurgeRule.keyed(
            "password_reset_tokens",
            "account",
            "reset links (used or not) expired longer ago than the retention",
            "id",
            RESET_TOKENS_DEAD,
            (float(retention_seconds),),
        )
    ]
