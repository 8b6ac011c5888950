"""Contracts on the token service's tables (``signing_keys``, ``token_families``,
``refresh_tokens``; docs/contracts.md): revoking a user's or an app's token families inside the
caller's transaction, and the signing keys every access-token verifier reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import TypeAlias

import asyncpg

from libs.oauth.events import outbox
from libs.oauth.events.types import AuthorizationRevoked
from libs.oauth.keys import KEYGEN_LOCK, KeyTable, generate

from . import authz

DB: TypeAlias = asyncpg.Pool | asyncpg.Connection


# --- token_families / refresh_tokens -------------------------------------------------------------
async def revoke_families(
    conn: asyncpg.Connection, *, user_id: int | None = None, client_id: str | None = None, reason: str
) -> list[str]:
    """In the caller's transaction: revoke every live family of ``user_id`` and/or ``client_id``
    (refresh tokens expired) and expire their unused authorization codes; return the family ids
    (authz: a user revokes an app; account: a user is disabled; ``revoke_client``).

    The codes go first: an exchange in flight holds its code's row lock, so this waits for it and
    the next statement (a new snapshot) sees the family it created; an exchange after this finds
    its code expired. No token is issued for the pair once this commits. The caller writes the
    event and, after the commit, Redis (``libs/oauth/revocation.mark_revoked_safely``)."""
    if user_id is None and client_id is None:
        raise ValueError("revoke_families needs a user_id or a client_id")
    await authz.expire_codes(conn, user_id=user_id, client_id=client_id)
    rows = await conn.fetch(
        """UPDATE token_families SET revoked_at = now(), revoked_reason = $3
           WHERE revoked_at IS NULL AND ($1::bigint IS NULL OR user_id = $1) AND ($2::text IS NULL OR client_id = $2)
           RETURNING id""",
        user_id,
        client_id,
        reason,
    )
    ids = [r["id"] for r in rows]
    if ids:
        await conn.execute(
            """UPDATE refresh_tokens SET expires_at = least(expires_at, now()), grace_response = NULL
               WHERE family_id = ANY($1::uuid[]) AND (used_at IS NULL OR grace_response IS NOT NULL)""",
            ids,
        )
    return [str(i) for i in ids]


async def revoke_client(conn: asyncpg.Connection, client_id: str) -> list[str]:
    """In the caller's transaction (account: the app is being deleted): every user's consent to
    ``client_id`` and all its tokens; ``authorization.revoked`` with ``user_id`` null. Returns the
    family ids."""
    families = await revoke_families(conn, client_id=client_id, reason="client_deleted")
    consents = await authz.delete_client_consents(conn, client_id)
    if families or consents:
        await outbox.enqueue(
            conn,
            AuthorizationRevoked(
                user_id=None, client_id=client_id, family_ids=tuple(families), reason="client_deleted"
            ),
        )
    return families


async def revoked_in_db(db: DB, jti: str, family_id: str | None) -> bool:
    """Is the access token ``jti`` (libs/oauth's ``revoked_access_tokens``) or its family
    (``token_families.revoked_at``) revoked? ``family_id`` is a valid UUID or None. The PostgreSQL
    fallback of every verifier's revocation check when Redis does not answer
    (``libs/oauth/revocation.setup_revocation``)."""
    return bool(
        await db.fetchval(
            """SELECT EXISTS (SELECT 1 FROM revoked_access_tokens WHERE jti = $1)
                   OR EXISTS (SELECT 1 FROM token_families WHERE id = $2::uuid AND revoked_at IS NOT NULL)""",
            jti,
            family_id,
        )
    )


# --- signing_keys --------------------------------------------------------------------------------
async def add_signing_key(db: DB, alg: str, activate_after_seconds: int = 0) -> str:
    """Generate a key for ``alg``, published now and signing after ``activate_after_seconds``;
    returns its kid (token: ``oauthctl keys``, first start)."""
    kid, private, jwk = generate(alg)
    await db.execute(
        """INSERT INTO signing_keys (kid, alg, private_pem, public_jwk, activates_at)
           VALUES ($1, $2, $3, $4::text::jsonb, now() + make_interval(secs => $5))""",
        kid,
        alg,
        private,
        json.dumps(jwk) if jwk else None,
        float(activate_after_seconds),
    )
    return kid


async def ensure_signing_key(pool: asyncpg.Pool, alg: str) -> None:
    """Create the first key for ``alg`` on first start (once, even with many instances starting)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYGEN_LOCK)
        exists = await conn.fetchval(
            """SELECT 1 FROM signing_keys
               WHERE alg = $1 AND (retired_at IS NULL OR retired_at > now()) AND activates_at <= now()""",
            alg,
        )
        if not exists:
            await add_signing_key(conn, alg)


# The keys that sign or still verify (retired less than $1 ago), oldest activation first.
_LIVE_KEYS = """FROM signing_keys WHERE retired_at IS NULL OR retired_at > now() - $1::interval
                ORDER BY activates_at"""


async def signing_key_rows(db: DB, retire_grace: timedelta) -> Sequence[asyncpg.Record]:
    """Every key that signs or still verifies (retired less than ``retire_grace`` ago), oldest
    activation first, WITH its private key (the token service's ``libs/oauth/keys.KeyStore``)."""
    return await db.fetch(
        f"SELECT kid, alg, private_pem, public_jwk, activates_at, retired_at {_LIVE_KEYS}", retire_grace
    )


async def verifying_key_rows(db: DB, retire_grace: timedelta) -> Sequence[asyncpg.Record]:
    """The keys of ``signing_key_rows`` WITHOUT their private keys: the public JWK, and for the
    legacy HS256 only its shared secret as ``shared_secret`` (an HMAC key verifies only with
    itself; docs/operations.md "Signing keys"). Every verifier that does not sign (account)."""
    return await db.fetch(
        "SELECT kid, alg, public_jwk, activates_at, retired_at,"
        f" CASE WHEN alg = 'HS256' THEN private_pem END AS shared_secret {_LIVE_KEYS}",
        retire_grace,
    )


async def signing_key_exists(db: DB, kid: str, retire_grace: timedelta) -> bool:
    """Does ``kid`` exist and still verify (``KeyStore``: a kid another instance just created)?"""
    return bool(
        await db.fetchval(
            """SELECT 1 FROM signing_keys WHERE kid = $1
               AND (retired_at IS NULL OR retired_at > now() - $2::interval)""",
            kid,
            retire_grace,
        )
    )


# What libs/oauth's KeyStore and setup_tokens are given: the token service, which signs, reads the
# private keys; every other verifier only the public ones (least privilege; docs/operations.md).
SIGNING_KEYS = KeyTable(signs=True, rows=signing_key_rows, exists=signing_key_exists, ensure=ensure_signing_key)
VERIFYING_KEYS = KeyTable(signs=False, rows=verifying_key_rows, exists=signing_key_exists, ensure=ensure_signing_key)
