"""POST /api/oauth2/token with grant_type=refresh_token: rotation, reuse detection, the grace window
for concurrent refreshes, scope narrowing, family revocation (RFC 6749 6, RFC 9700 4.14.2, docs/api.md; guide FAQ Q2). Through the gateway, against real Postgres and Redis."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from libs.oauth.access_tokens import AccessTokenVerifier
from libs.oauth.errors import OAuthError
from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from services.account import store as account_store
from services.token.families import revoke_family
from services.token.grants.refresh_token import narrowed_scope, open_response, seal_response
from tests.support.clock import age_refresh_token_use, expire_refresh_token
from tests.support.codes import ClientApp, make_client, make_verifier, obtain_tokens, post_token, refresh_form
from tests.support.stack import Stack


@pytest.fixture
async def app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)


@pytest.fixture
async def public_app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings, method="none", redirect_uri="http://localhost:3000/callback")


@pytest.fixture
async def verifier(db: asyncpg.Pool, settings: Settings) -> AsyncIterator[AccessTokenVerifier]:
    v, redis = make_verifier(db, settings)
    yield v
    await redis.aclose()


def hashed(settings: Settings, token: str) -> bytes:
    return hmac.new(settings.pepper_bytes, token.encode(), hashlib.sha256).digest()


async def age_use(db: asyncpg.Pool, settings: Settings, token: str, seconds: int = 3600) -> None:
    """Move a used token's use back in time, outside the grace window."""
    assert await age_refresh_token_use(db, settings, token, seconds) == "UPDATE 1"


async def refresh(http, stack: Stack, app: ClientApp, token: str, **extra: str) -> tuple[int, dict[str, str], dict]:
    return await post_token(http, stack.base, refresh_form(app, token, **extra))


async def family_of(verifier: AccessTokenVerifier, body: dict) -> str:
    fam = (await verifier.verify(body["access_token"])).family
    assert fam
    return fam


async def assert_family_revoked(db, verifier, family: str, reason: str, *access_tokens: str) -> None:
    row = await db.fetchrow("SELECT revoked_at, revoked_reason FROM token_families WHERE id = $1::uuid", family)
    assert row["revoked_at"] is not None and row["revoked_reason"] == reason
    for at in access_tokens:
        with pytest.raises(OAuthError):
            await verifier.verify(at)
    n = await db.fetchval(
        "SELECT count(*) FROM event_outbox WHERE type = 'token.revoked' AND data->>'family_id' = $1 AND data->>'reason' = $2",
        family,
        reason,
    )
    assert n == 1


# --- rotation ------------------------------------------------------------------------------------
async def test_refresh_rotates(stack: Stack, http, db, settings, app, verifier) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    status, headers, second = await refresh(http, stack, app, first["refresh_token"])
    assert status == 200, second
    assert headers["Cache-Control"] == "no-store" and headers["Pragma"] == "no-cache"
    assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert second["token_type"] == "Bearer" and second["expires_in"] == 7200 and second["scope"] == "profile balance"
    assert second["refresh_token"] != first["refresh_token"] and second["access_token"] != first["access_token"]
    assert second["refresh_token"].startswith("refresh_") and len(second["refresh_token"]) == 51

    old, new = await verifier.verify(first["access_token"]), await verifier.verify(second["access_token"])
    assert new.family == old.family and new.sub == str(app.user_id) and new.client_id == app.client_id
    assert new.jti != old.jti

    parent = await db.fetchrow(
        "SELECT * FROM refresh_tokens WHERE token_hash = $1", hashed(settings, first["refresh_token"])
    )
    child = await db.fetchrow(
        "SELECT * FROM refresh_tokens WHERE token_hash = $1", hashed(settings, second["refresh_token"])
    )
    assert parent["used_at"] is not None and child["used_at"] is None
    assert child["parent_id"] == parent["id"] and child["family_id"] == parent["family_id"]
    # The grace response is stored encrypted: neither token appears in it.
    sealed = bytes(parent["grace_response"])
    assert second["access_token"].encode() not in sealed and second["refresh_token"].encode() not in sealed
    assert open_response(settings.pepper_bytes, first["refresh_token"], parent["id"], sealed) == second
    assert open_response(settings.pepper_bytes, second["refresh_token"], parent["id"], sealed) is None

    # And again with the new one, by HTTP Basic this time.
    auth = base64.b64encode(f"{app.client_id}:{app.client_secret}".encode()).decode()
    form = {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
    status, _, third = await post_token(http, stack.base, form, headers={"Authorization": f"Basic {auth}"})
    assert status == 200, third
    assert (await verifier.verify(third["access_token"])).family == old.family


async def test_public_client_refreshes_without_a_secret(stack: Stack, http, db, settings, public_app) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, public_app)
    status, _, second = await refresh(http, stack, public_app, first["refresh_token"])
    assert status == 200, second


async def test_old_token_after_rotation_revokes_the_family(stack: Stack, http, db, settings, app, verifier) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    family = await family_of(verifier, first)
    status, _, second = await refresh(http, stack, app, first["refresh_token"])
    assert status == 200
    await age_use(db, settings, first["refresh_token"])

    status, headers, body = await refresh(http, stack, app, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant") and headers["Cache-Control"] == "no-store"
    await assert_family_revoked(db, verifier, family, "refresh_reuse", first["access_token"], second["access_token"])
    # The legitimate holder's newer token is dead too.
    status, _, body = await refresh(http, stack, app, second["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_reuse_of_an_unrotated_use_outside_the_window(stack: Stack, http, db, settings, app, verifier) -> None:
    """A token used once, whose child is still unused, replayed after the window: reuse, not a retry."""
    first = await obtain_tokens(http, stack.base, db, settings, app)
    family = await family_of(verifier, first)
    status, _, second = await refresh(http, stack, app, first["refresh_token"])
    assert status == 200
    await age_use(db, settings, first["refresh_token"], seconds=settings.refresh_grace_seconds + 1)
    status, _, body = await refresh(http, stack, app, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    await assert_family_revoked(db, verifier, family, "refresh_reuse", second["access_token"])


# --- the grace window ----------------------------------------------------------------------------
async def test_retry_within_the_grace_window_gets_the_same_pair(stack: Stack, http, db, settings, app) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    status, _, second = await refresh(http, stack, app, first["refresh_token"])
    assert status == 200
    status, headers, again = await refresh(http, stack, app, first["refresh_token"])
    assert status == 200, again
    assert again == second and headers["Cache-Control"] == "no-store"
    # The pair handed out twice is the family's live pair: it keeps working.
    status, _, third = await refresh(http, stack, app, second["refresh_token"])
    assert status == 200, third


async def test_two_tabs_refreshing_at_once_both_succeed(stack: Stack, http, db, settings, app, verifier) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    results = await asyncio.gather(*(refresh(http, stack, app, first["refresh_token"]) for _ in range(2)))
    (s1, _, a), (s2, _, b) = results
    assert (s1, s2) == (200, 200), results
    assert a["access_token"] == b["access_token"] and a["refresh_token"] == b["refresh_token"]
    await verifier.verify(a["access_token"])
    family = await family_of(verifier, a)
    assert await db.fetchval("SELECT count(*) FROM refresh_tokens WHERE family_id = $1::uuid", family) == 2
    status, _, next_ = await refresh(http, stack, app, a["refresh_token"])
    assert status == 200, next_


async def test_many_concurrent_refreshes_issue_one_pair(stack: Stack, http, db, settings, app) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    results = await asyncio.gather(*(refresh(http, stack, app, first["refresh_token"]) for _ in range(6)))
    assert all(status == 200 for status, _, _ in results), results
    assert len({body["refresh_token"] for _, _, body in results}) == 1


async def test_a_refresh_waiting_on_the_row_lock_gets_the_winners_pair(stack: Stack, http, db, settings, app) -> None:
    """Deterministic version of the two-tab race: both requests queue on the row lock of the old
    token; whoever gets it first rotates, the other then finds it used and replays the response."""
    first = await obtain_tokens(http, stack.base, db, settings, app)
    async with db.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "SELECT 1 FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE", hashed(settings, first["refresh_token"])
        )
        tasks = [asyncio.create_task(refresh(http, stack, app, first["refresh_token"])) for _ in range(2)]
        for _ in range(100):  # until both UPDATEs are blocked behind our lock
            waiting = await db.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%UPDATE refresh_tokens%'"""
            )
            if waiting == 2:
                break
            await asyncio.sleep(0.02)
        assert waiting == 2
        await tx.rollback()
    (s1, _, a), (s2, _, b) = await asyncio.gather(*tasks)
    assert (s1, s2) == (200, 200), (a, b)
    assert a == b


async def test_grandparent_within_the_window_is_reuse(stack: Stack, http, db, settings, app, verifier) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    family = await family_of(verifier, first)
    status, _, second = await refresh(http, stack, app, first["refresh_token"])
    assert status == 200
    status, _, third = await refresh(http, stack, app, second["refresh_token"])
    assert status == 200
    # first is still within the window, but its child (second) was used: only the immediate
    # predecessor of the live token is covered.
    status, _, body = await refresh(http, stack, app, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    await assert_family_revoked(db, verifier, family, "refresh_reuse", third["access_token"])
    status, _, body = await refresh(http, stack, app, third["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")


# --- scope ---------------------------------------------------------------------------------------
async def test_scope_may_narrow_but_not_widen(stack: Stack, http, db, settings, app, verifier) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app, scope="profile balance")
    status, _, narrow = await refresh(http, stack, app, first["refresh_token"], scope="profile")
    assert status == 200, narrow
    assert narrow["scope"] == "profile"
    assert (await verifier.verify(narrow["access_token"])).scopes == {"profile"}
    # Omitted: the scope originally granted (RFC 6749 6), the refresh token kept it.
    status, _, full = await refresh(http, stack, app, narrow["refresh_token"])
    assert status == 200 and full["scope"] == "profile balance"

    for wider in ("profile balance email", "openid", "admin"):
        status, headers, body = await refresh(http, stack, app, full["refresh_token"], scope=wider)
        assert (status, body["error"]) == (400, "invalid_scope") and headers["Cache-Control"] == "no-store"
    # invalid_scope does not consume the token.
    status, _, body = await refresh(http, stack, app, full["refresh_token"], scope="balance profile")
    assert status == 200 and body["scope"] == "profile balance"


def test_narrowed_scope_rules() -> None:
    assert narrowed_scope("profile balance", None) == "profile balance"
    assert narrowed_scope("profile balance", "   ") == "profile balance"
    assert narrowed_scope("profile balance", "balance") == "balance"
    assert narrowed_scope("profile balance", "balance  profile profile") == "profile balance"
    with pytest.raises(OAuthError) as exc:
        narrowed_scope("profile", "profile balance")
    assert exc.value.error == "invalid_scope"


# --- invalid refresh tokens ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "token",
    ["refresh_" + "A" * 43, "not-a-refresh-token", "refresh_' OR 1=1 --", "refresh_🙂" * 10, "refresh_" + "x" * 1500],
)
async def test_unknown_refresh_token(stack: Stack, http, app, token) -> None:
    status, headers, body = await refresh(http, stack, app, token)
    assert (status, body["error"]) == (400, "invalid_grant") and headers["Cache-Control"] == "no-store"


async def test_missing_refresh_token(stack: Stack, http, app) -> None:
    status, _, body = await post_token(http, stack.base, refresh_form(app, ""))
    assert (status, body["error"]) == (400, "invalid_request")


async def test_refresh_token_of_another_client(stack: Stack, http, db, settings, app, verifier) -> None:
    other = await make_client(db, settings)
    first = await obtain_tokens(http, stack.base, db, settings, app)
    status, _, body = await refresh(http, stack, other, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    # Not consumed, nothing revoked: the rightful client still refreshes.
    await verifier.verify(first["access_token"])
    status, _, body = await refresh(http, stack, app, first["refresh_token"])
    assert status == 200, body


async def test_wrong_client_secret(stack: Stack, http, db, settings, app) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    form = refresh_form(app, first["refresh_token"]) | {"client_secret": "secret_wrong"}
    status, _, body = await post_token(http, stack.base, form)
    assert (status, body["error"]) == (401, "invalid_client")
    status, _, body = await refresh(http, stack, app, first["refresh_token"])
    assert status == 200, body


async def test_expired_refresh_token(stack: Stack, http, db, settings, app) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    await expire_refresh_token(db, settings, first["refresh_token"])
    status, _, body = await refresh(http, stack, app, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert "expired" in body["error_description"]


async def test_disabled_user_cannot_refresh(stack: Stack, http, db, settings, app) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    await account_store.set_user_status(db, app.user_id, UserStatus.DISABLED)
    status, _, body = await refresh(http, stack, app, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    # Re-enabled: the token was not consumed by the refused attempt.
    await account_store.set_user_status(db, app.user_id, UserStatus.ACTIVE)
    status, _, body = await refresh(http, stack, app, first["refresh_token"])
    assert status == 200, body


async def test_revoke_family_helper(stack: Stack, http, db, settings, app, verifier) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    family = await family_of(verifier, first)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        assert await revoke_family(db, redis, settings, family, "revoked_by_user") is True
        assert await revoke_family(db, redis, settings, family, "revoked_by_user") is False  # idempotent
        async with db.acquire() as conn, conn.transaction():  # also inside a caller's transaction
            assert await revoke_family(conn, redis, settings, family, "revoked_by_user") is False
    finally:
        await redis.aclose()
    await assert_family_revoked(db, verifier, family, "revoked_by_user", first["access_token"])
    status, _, body = await refresh(http, stack, app, first["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant")
    assert "revoked" in body["error_description"]


def test_grace_response_is_bound_to_token_and_row(settings: Settings) -> None:
    body = {"access_token": "a", "refresh_token": "r"}
    sealed = seal_response(settings.pepper_bytes, "refresh_old", 7, body)
    assert open_response(settings.pepper_bytes, "refresh_old", 7, sealed) == body
    assert open_response(settings.pepper_bytes, "refresh_other", 7, sealed) is None
    assert open_response(settings.pepper_bytes, "refresh_old", 8, sealed) is None
    assert open_response(b"another pepper" * 3, "refresh_old", 7, sealed) is None
    assert open_response(settings.pepper_bytes, "refresh_old", 7, sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
