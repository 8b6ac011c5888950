"""Moving a row's clock: the tests' only writes on a service's table that go around its store and
libs/contracts (docs/contracts.md). No service operation makes a token, code or key older, so the
few time jumps the tests need are here, one per kind of row, instead of spread over the test files."""

from __future__ import annotations

import uuid

import asyncpg

from libs.platform.config import Settings
from libs.platform.security import token_hash


async def expire_refresh_token(db: asyncpg.Pool, settings: Settings, refresh_token: str) -> None:
    """The refresh token expired a second ago."""
    await db.execute(
        "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        token_hash(settings.pepper_bytes, refresh_token),
    )


async def age_refresh_token_use(db: asyncpg.Pool, settings: Settings, refresh_token: str, seconds: float) -> str:
    """Move a used refresh token's use ``seconds`` back (out of the grace window); the UPDATE status."""
    status: str = await db.execute(
        """UPDATE refresh_tokens SET used_at = used_at - make_interval(secs => $2)
           WHERE token_hash = $1 AND used_at IS NOT NULL""",
        token_hash(settings.pepper_bytes, refresh_token),
        float(seconds),
    )
    return status


async def expire_code(db: asyncpg.Pool, settings: Settings, code: str) -> None:
    """The authorization code expired a second ago."""
    await db.execute(
        "UPDATE authorization_codes SET expires_at = now() - interval '1 second' WHERE code_hash = $1",
        token_hash(settings.pepper_bytes, code),
    )


async def expire_topup_code(db: asyncpg.Pool, settings: Settings, code: str) -> None:
    """The top-up code expired a second ago (``code`` as printed: already normalised)."""
    await db.execute(
        "UPDATE topup_codes SET expires_at = now() - interval '1 second' WHERE code_hash = $1",
        token_hash(settings.pepper_bytes, code),
    )


async def retire_key_ago(db: asyncpg.Pool, kid: str, seconds: float) -> None:
    """The signing key was retired ``seconds`` ago."""
    await db.execute(
        "UPDATE signing_keys SET retired_at = now() - make_interval(secs => $2) WHERE kid = $1", kid, float(seconds)
    )


async def end_previous_secret_in(db: asyncpg.Pool, app_id: int, seconds: float) -> None:
    """The secret replaced by the last rotation stops working ``seconds`` from now."""
    await db.execute(
        "UPDATE oauth_apps SET previous_secret_expires_at = now() + make_interval(secs => $2) WHERE id = $1",
        app_id,
        float(seconds),
    )


async def expire_first_reset_token(db: asyncpg.Pool, user_id: int) -> None:
    """The user's oldest password-reset link expired a second ago."""
    await db.execute(
        """UPDATE password_reset_tokens SET expires_at = now() - interval '1 second'
           WHERE id = (SELECT min(id) FROM password_reset_tokens WHERE user_id = $1)""",
        user_id,
    )


async def spending_a_day_ago(db: asyncpg.Pool, user_id: int) -> None:
    """The user's charges, and the day their spending limits were chosen, move one day back."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE spend_charges SET created_at = created_at - interval '1 day' WHERE user_id = $1", user_id
        )
        await conn.execute("UPDATE grants SET spend_since = spend_since - interval '1 day' WHERE user_id = $1", user_id)


async def age_consent(db: asyncpg.Pool, user_id: int, client_id: str, seconds: float) -> None:
    """The consent record was last authorized ``seconds`` ago."""
    await db.execute(
        """UPDATE grants SET last_authorized_at = now() - make_interval(secs => $3)
           WHERE user_id = $1 AND client_id = $2""",
        user_id,
        client_id,
        float(seconds),
    )


# --- retention (tests/integration/test_purge.py): rows made as old as the purge needs ----------
async def age_family(
    db: asyncpg.Pool, family_id: uuid.UUID, seconds: float, refresh_ids: list[int] | None = None
) -> None:
    """The token family was created (and revoked, if it is) ``seconds`` earlier, and so was
    everything of its refresh tokens (or only of ``refresh_ids``): creation, use and expiry."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            """UPDATE token_families SET created_at = created_at - make_interval(secs => $2),
                                         revoked_at = revoked_at - make_interval(secs => $2)
               WHERE id = $1""",
            family_id,
            float(seconds),
        )
        await conn.execute(
            """UPDATE refresh_tokens SET created_at = created_at - make_interval(secs => $2),
                                         used_at = used_at - make_interval(secs => $2),
                                         expires_at = expires_at - make_interval(secs => $2)
               WHERE family_id = $1 AND ($3::bigint[] IS NULL OR id = ANY($3::bigint[]))""",
            family_id,
            float(seconds),
            refresh_ids,
        )


async def age_code(db: asyncpg.Pool, settings: Settings, code: str, seconds: float) -> None:
    """The authorization code was issued (and expired) ``seconds`` earlier."""
    await db.execute(
        """UPDATE authorization_codes SET created_at = created_at - make_interval(secs => $2),
                                          expires_at = expires_at - make_interval(secs => $2)
           WHERE code_hash = $1""",
        token_hash(settings.pepper_bytes, code),
        float(seconds),
    )


async def age_device_code(db: asyncpg.Pool, device_id: int, seconds: float) -> None:
    """The device authorization request was made (and expired) ``seconds`` earlier."""
    await db.execute(
        """UPDATE device_codes SET created_at = created_at - make_interval(secs => $2),
                                   expires_at = expires_at - make_interval(secs => $2)
           WHERE id = $1""",
        device_id,
        float(seconds),
    )


async def age_reset_tokens(db: asyncpg.Pool, user_id: int, seconds: float) -> None:
    """The user's password-reset links were sent (used, expired) ``seconds`` earlier."""
    await db.execute(
        """UPDATE password_reset_tokens SET created_at = created_at - make_interval(secs => $2),
                                            used_at = used_at - make_interval(secs => $2),
                                            expires_at = expires_at - make_interval(secs => $2)
           WHERE user_id = $1""",
        user_id,
        float(seconds),
    )


async def age_processed_event(db: asyncpg.Pool, consumer: str, event_id: uuid.UUID, seconds: float) -> None:
    """The consumer applied the event ``seconds`` earlier."""
    await db.execute(
        """UPDATE processed_events SET processed_at = processed_at - make_interval(secs => $3)
           WHERE consumer = $1 AND event_id = $2""",
        consumer,
        event_id,
        float(seconds),
    )
