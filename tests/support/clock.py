"""Moving a row's clock: the tests' only writes on a service's table that go around its store and
libs/contracts (docs/contracts.md). No service operation makes a token, code or key older, so the
few time jumps the tests need are here, one per kind of row, instead of spread over the test files."""

from __future__ import annotations

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
