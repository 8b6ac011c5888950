"""Contracts on the authz service's tables (``authorization_codes``, ``grants`` = consent
records; docs/contracts.md): the token service looks a code up and consumes it, revocations expire codes, and the
account service deletes consent records of a deleted app or a disabled user."""

from __future__ import annotations

import uuid
from typing import TypeAlias

import asyncpg

DB: TypeAlias = asyncpg.Pool | asyncpg.Connection


# --- authorization_codes -------------------------------------------------------------------------
# An authorization code by its hash (the primary key) with its user: what the exchange checks
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
    """owner: authz (+ account's users). A code with its bindings, state and user's email and
    status, or None if unknown (token: the authorization_code grant, before the exchange and to
    say why it failed; a used code's ``family_id`` is revoked on replay)."""
    return await db.fetchrow(CODE_SQL, code_hash)


# ONE statement consumes a live code bound to its client (of a user still active: status 1),
# creates the token family linked to it and stores the family's first refresh token; it returns the
# refresh token's id, or nothing when the code could not be consumed (used concurrently, expired,
# revoked, the user disabled) and then nothing was written. The foreign keys between the three rows
# are checked at the end of the statement (docs/performance.md "One statement per grant").
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
    """owner: authz (+ account's users, token's token_families and refresh_tokens). Take a live
    code of ``client_id`` once (RFC 6749 4.1.2 single use), start the family ``family_id`` from it
    and store its first refresh token (``refresh_hash``), in one statement; the refresh token's
    id, or None when nothing was consumed (token: the authorization_code grant)."""
    refresh_id = await db.fetchval(EXCHANGE_CODE_SQL, code_hash, client_id, family_id, refresh_hash, ttl_seconds)
    return None if refresh_id is None else int(refresh_id)


# authorize's statements below: the new code's row ($1..$10, typed: an INSERT ... SELECT infers no
# parameter type from its target), and their answer (none when the user is gone).
_NEW_CODE = """
    INSERT INTO authorization_codes (code_hash, client_id, user_id, redirect_uri, scope, code_challenge,
                                     code_challenge_method, nonce, auth_time, expires_at)
    SELECT $1::bytea, $2, $3, $4::text, $5::text, $6::text, $7::text, $8::text, $9::timestamptz,
           now() + make_interval(secs => $10::int)"""
_ANSWER = "SELECT u.username, u.status = 1 AS active, EXISTS (SELECT 1 FROM code) AS issued FROM u\n"
# Both lock the user's row (FOR KEY SHARE, as the code's foreign key check would at the end) before
# the consent record: the order in which disabling a user takes them (its row, then its records),
# so the two wait for each other instead of deadlocking; a user disabled meanwhile gets no code.

# authz: the authorize endpoint's usual answer in ONE statement (docs/performance.md "authorize in
# one statement"): store a new code of a signed-in user only if the user is still active (status 1)
# and their consent record already covers every requested scope ($11). The record is locked FOR KEY
# SHARE, so a revocation (its DELETE, then ``expire_codes``) either came first and no code is
# stored, or waits for this statement and then expires the code. An unchanged record is not
# rewritten: only ``last_authorized_at``, and only once it is a minute old (the authorized-apps
# page shows it to the minute). One row (username, active, issued), none when the user is gone.
ISSUE_CONSENTED_CODE_SQL = (
    """
WITH u AS (
    SELECT username, status FROM users WHERE id = $3 FOR KEY SHARE
), consent AS (
    SELECT g.last_authorized_at FROM grants g
    WHERE g.user_id = $3 AND g.client_id = $2 AND g.scopes @> $11::text[]
      AND EXISTS (SELECT 1 FROM u WHERE u.status = 1)
    FOR KEY SHARE
), touched AS (
    UPDATE grants SET last_authorized_at = now()
    WHERE user_id = $3 AND client_id = $2
      AND EXISTS (SELECT 1 FROM consent WHERE last_authorized_at < now() - interval '1 minute')
), code AS (
"""
    + _NEW_CODE
    + """
    FROM consent
    RETURNING 1
)
"""
    + _ANSWER
)


async def issue_consented_code(db: DB, code: tuple[object, ...], scopes: list[str]) -> asyncpg.Record | None:
    """owner: authz (+ account's users). ``code``: the new code's columns in the order of
    ``services/authz/store/codes.INSERT_CODE_SQL`` ($1..$10: hash, client_id, user_id, redirect_uri,
    scope, challenge, method, nonce, auth_time, ttl seconds). (username, active, issued), or None
    when the user is gone (authz: authorize with a consent record, ``ISSUE_CONSENTED_CODE_SQL``)."""
    return await db.fetchrow(ISSUE_CONSENTED_CODE_SQL, *code, scopes)


# The consent record's write, shared by every statement below that records a consent (an INSERT
# INTO grants (user_id, client_id, scopes) SELECT ... ends with it): the union of the old and new
# scopes (old ones first), the first time kept. A record that already covers the scopes is not
# rewritten (ON CONFLICT ... WHERE: only locked), unless its last_authorized_at is a minute old
# (the authorized-apps page shows it to the minute).
MERGE_CONSENT_SQL = """
    ON CONFLICT (user_id, client_id) DO UPDATE SET
        scopes = ARRAY(SELECT s FROM unnest(grants.scopes || EXCLUDED.scopes) WITH ORDINALITY AS t(s, i)
                       GROUP BY s ORDER BY min(i)),
        last_authorized_at = now()
    WHERE NOT (grants.scopes @> EXCLUDED.scopes) OR grants.last_authorized_at < now() - interval '1 minute'"""

# authz: a consent given (POST /consent, with or without a spending limit) or a one-click login
# (docs/operations.md "App verification") in ONE statement: for a user still active, record the
# consent (MERGE_CONSENT_SQL) and store the code; the user's row is locked first, so a disable
# waits for it or comes first, and then nothing is written. A revocation still committing makes
# the record's upsert wait and then insert a new one: the consent given now, after the
# revocation (one that comes later waits for this statement and expires its code). The same row
# as ISSUE_CONSENTED_CODE_SQL.
RECORD_CONSENT_AND_ISSUE_CODE_SQL = (
    """
WITH u AS (
    SELECT username, status FROM users WHERE id = $3 FOR KEY SHARE
), consent AS (
    INSERT INTO grants (user_id, client_id, scopes)
    SELECT $3, $2, $11::text[] FROM u WHERE u.status = 1"""
    + MERGE_CONSENT_SQL
    + """
), code AS (
"""
    + _NEW_CODE
    + """
    FROM u WHERE u.status = 1
    RETURNING 1
)
"""
    + _ANSWER
)


async def record_consent_and_issue_code(db: DB, code: tuple[object, ...], scopes: list[str]) -> asyncpg.Record | None:
    """owner: authz (+ account's users). ``RECORD_CONSENT_AND_ISSUE_CODE_SQL``; ``code`` and the
    answer as for ``issue_consented_code`` (authz: authorize, a one-click login; POST /consent, in
    the transaction that then stores the spending limit chosen with it)."""
    return await db.fetchrow(RECORD_CONSENT_AND_ISSUE_CODE_SQL, *code, scopes)


async def expire_codes(conn: asyncpg.Connection, *, user_id: int | None, client_id: str | None) -> None:
    """In the caller's transaction: expire the unused authorization codes and device codes of
    ``user_id`` and/or ``client_id`` (``token.revoke_families``, before the families: an exchange in
    flight holds its code's row lock)."""
    await conn.execute(
        """UPDATE authorization_codes SET expires_at = least(expires_at, now())
           WHERE used_at IS NULL AND expires_at > now()
             AND ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR client_id = $2)""",
        user_id,
        client_id,
    )
    # Device codes not yet exchanged (RFC 8628, docs/device.md): an approved one would otherwise
    # still yield tokens at the device's next poll.
    await conn.execute(
        """UPDATE device_codes SET expires_at = least(expires_at, now())
           WHERE status IN ('pending', 'approved') AND expires_at > now()
             AND ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR client_id = $2)""",
        user_id,
        client_id,
    )


# --- device_codes (RFC 8628, docs/device.md): the token service creates, polls and consumes them --
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


# authz: the user's answer on /device (RFC 8628 3.3, docs/device.md), recorded on a still pending,
# live request, once, only if the user is still active. The user's row is locked first (FOR KEY
# SHARE, which the device code's foreign key check takes anyway, at the end), then the device
# code's: the order in which disabling a user takes them, so a disable waits for the answer or
# comes first, and then nothing is recorded. The caller records the consent next, in the same
# transaction (device code, then consent record: the order in which revocations take them).
ANSWER_DEVICE_CODE_SQL = """
WITH u AS (
    SELECT status FROM users WHERE id = $3 FOR KEY SHARE
), answered AS (
    UPDATE device_codes
    SET status = $2, user_id = $3, auth_time = to_timestamp($4), decided_at = now()
    WHERE id = $1 AND status = 'pending' AND expires_at > now() AND EXISTS (SELECT 1 FROM u WHERE u.status = 1)
    RETURNING client_id, scope
)
SELECT u.status = 1 AS active, a.client_id, a.scope FROM u LEFT JOIN answered a ON true
"""


async def answer_device_code(
    conn: asyncpg.Connection, device_id: int, *, approved: bool, user_id: int, auth_time: int
) -> asyncpg.Record | None:
    """owner: authz (+ account's users). ``ANSWER_DEVICE_CODE_SQL``: (active, client_id, scope),
    the request's client and scope null when it was not pending and live any more (answered,
    expired) or the user is not active; None when the user is gone."""
    return await conn.fetchrow(
        ANSWER_DEVICE_CODE_SQL, device_id, "approved" if approved else "denied", user_id, auth_time
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


# --- grants (consent records) --------------------------------------------------------------------
async def delete_user_consents(conn: asyncpg.Connection, user_id: int) -> None:
    """In the caller's transaction: a disabled user's consent records go (account: user status)."""
    await conn.execute("DELETE FROM grants WHERE user_id = $1", user_id)


async def delete_client_consents(conn: asyncpg.Connection, client_id: str) -> int:
    """In the caller's transaction: every user's consent to ``client_id`` goes; returns how many
    (``token.revoke_client``, account: an app is deleted)."""
    count: int = await conn.fetchval(
        "WITH d AS (DELETE FROM grants WHERE client_id = $1 RETURNING 1) SELECT count(*) FROM d", client_id
    )
    return count


# --- spending (docs/spending.md) ----------------------------------------------------------------
async def spend_grant(
    conn: asyncpg.Connection, user_id: int, client_id: str, family_id: str | None, jti: str
) -> asyncpg.Record | None:
    """owner: authz (grants), token (token_families), libs/oauth (revoked_access_tokens). The consent
    record's scopes and spending limit, and ``live``: the token is neither revoked itself nor of a
    revoked family. PostgreSQL is the truth for revocations (libs/oauth/revocation.py): read in the
    charge's transaction, so a charge that starts after a revocation committed is refused on every
    instance. None: no consent record (revoked in the user center, or the app deleted)."""
    return await conn.fetchrow(
        """SELECT scopes, spend_limit, spend_period, spend_since,
                  NOT EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = $4)
                  AND EXISTS (SELECT 1 FROM token_families WHERE id = $3::uuid AND user_id = $1 AND client_id = $2
                                                              AND revoked_at IS NULL) AS live
           FROM grants WHERE user_id = $1 AND client_id = $2""",
        user_id,
        client_id,
        family_id,
        jti,
    )
