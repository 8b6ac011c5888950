"""`oauthctl purge` (docs/operations.md "Retention"): dead rows of every purged table go, live ones
stay (used refresh tokens of a live family included: RFC 9700 4.14.2 reuse detection needs them),
--dry-run deletes nothing, batches are --batch-size rows, and the token flow (with reuse detection)
still works after a purge. Against the session's real PostgreSQL; rows are aged with
tests/support/clock.py."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from libs.contracts.account import rotate_refresh_token
from libs.contracts.authz import insert_device_code
from libs.oauth.events.consumer import process_once
from libs.oauth.revocation import revoke_access_token
from libs.platform.config import Settings
from libs.platform.security import token_hash
from oauthctl import purge as purge_cli
from oauthctl.__main__ import build_parser
from services.account import store as account_store
from services.token import store as token_store
from tests.support.clock import (
    age_code,
    age_device_code,
    age_family,
    age_processed_event,
    age_refresh_token_use,
    age_reset_tokens,
)
from tests.support.codes import ClientApp, issue_code, make_client, obtain_tokens, post_token, refresh_form
from tests.support.factories import make_user
from tests.support.stack import Stack

DAY = 24 * 3600
REUSE = "refresh_reuse"  # token_families.revoked_reason of a detected reuse (services/token/grants/refresh_token.py)


@pytest.fixture
async def app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)


async def purge(settings: Settings, *argv: str) -> int:
    args = build_parser().parse_args(["purge", *argv])
    rc: int = await args.fn(settings, args)
    return rc


def long_dead(settings: Settings) -> float:
    """Old enough that a family whose newest token was created then is dead past every window."""
    return float(
        settings.refresh_token_ttl_seconds
        + settings.purge_token_retention_seconds
        + settings.access_token_ttl_seconds
        + DAY
    )


async def new_family(
    db: asyncpg.Pool, settings: Settings, app: ClientApp, used: int = 0
) -> tuple[uuid.UUID, list[int]]:
    """A family through the token service's own statements: a first refresh token, rotated
    ``used`` times (so ``used`` used tokens and one live one); its id and its tokens' ids, oldest first."""
    family_id = uuid.uuid4()
    ttl = float(settings.refresh_token_ttl_seconds)
    async with db.acquire() as conn:
        await token_store.insert_family(
            conn, family_id, client_id=app.client_id, user_id=app.user_id, scope="profile", auth_time=None
        )
        ids = [await token_store.insert_refresh_token(conn, family_id, os.urandom(32), None, ttl)]
        for _ in range(used):
            child = await rotate_refresh_token(conn, ids[-1], family_id, app.client_id, os.urandom(32), ttl, b"sealed")
            assert child is not None
            ids.append(child)
    return family_id, ids


async def family_without_refresh_tokens(db: asyncpg.Pool, app: ClientApp) -> uuid.UUID:
    family_id = uuid.uuid4()
    async with db.acquire() as conn:
        await token_store.insert_family(
            conn, family_id, client_id=app.client_id, user_id=None, scope="quota:read", auth_time=None
        )
    return family_id


async def revoke(db: asyncpg.Pool, family_id: uuid.UUID) -> None:
    async with db.acquire() as conn, conn.transaction():
        assert await token_store.revoke_family_row(conn, family_id, "test") is not None
        await token_store.expire_family_refresh_tokens(conn, family_id)


async def device_code(db: asyncpg.Pool, settings: Settings, app: ClientApp) -> int:
    async with db.acquire() as conn:
        device_id = await insert_device_code(
            conn,
            device_code_hash=os.urandom(32),
            user_code_hash=os.urandom(32),
            client_id=app.client_id,
            scope="profile",
            device_agent="test",
            device_ip="127.0.0.1",
            interval_seconds=5,
            ttl_seconds=settings.device_code_ttl_seconds,
        )
    assert device_id is not None
    return device_id


async def reset_tokens(db: asyncpg.Pool, settings: Settings, count: int) -> int:
    """A fresh user with ``count`` reset links; the user's id."""
    user = await make_user(db)
    for _ in range(count):
        await account_store.insert_reset_token(db, user.id, os.urandom(32), settings.password_reset_ttl_seconds)
    return user.id


async def families_left(db: asyncpg.Pool, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    return {r["id"] for r in await db.fetch("SELECT id FROM token_families WHERE id = ANY($1::uuid[])", ids)}


async def tokens_left(db: asyncpg.Pool, ids: list[int]) -> set[int]:
    return {r["id"] for r in await db.fetch("SELECT id FROM refresh_tokens WHERE id = ANY($1::bigint[])", ids)}


@dataclass
class Seeded:
    dead_families: list[uuid.UUID]
    dead_tokens: list[int]
    live_families: list[uuid.UUID]
    live_tokens: list[int]


async def seed_families(db: asyncpg.Pool, settings: Settings, app: ClientApp) -> Seeded:
    old = long_dead(settings)
    retention = settings.purge_token_retention_seconds
    s = Seeded([], [], [], [])
    # Dead: rotated once, then everything expired long ago.
    fam, ids = await new_family(db, settings, app, used=1)
    await age_family(db, fam, old)
    s.dead_families.append(fam)
    s.dead_tokens += ids
    # Dead: revoked long ago.
    fam, ids = await new_family(db, settings, app, used=2)
    await revoke(db, fam)
    await age_family(db, fam, old)
    s.dead_families.append(fam)
    s.dead_tokens += ids
    # Dead: a family without refresh tokens (none is made today) whose access token expired long ago.
    fam = await family_without_refresh_tokens(db, app)
    await age_family(db, fam, old)
    s.dead_families.append(fam)
    # Live: a long-lived family whose first token was used two months ago (and expired since):
    # presented again, it must still be detected as reuse.
    fam, ids = await new_family(db, settings, app, used=2)
    await age_family(db, fam, old, refresh_ids=ids[:1])
    s.live_families.append(fam)
    s.live_tokens += ids
    # Live: revoked just now (its access tokens may still be presented).
    fam, ids = await new_family(db, settings, app, used=1)
    await revoke(db, fam)
    s.live_families.append(fam)
    s.live_tokens += ids
    # Live: its last refresh token expired a day ago, within the retention.
    fam, ids = await new_family(db, settings, app, used=1)
    await age_family(db, fam, settings.refresh_token_ttl_seconds + DAY)
    assert DAY < retention
    s.live_families.append(fam)
    s.live_tokens += ids
    # Live: a fresh family without refresh tokens.
    s.live_families.append(await family_without_refresh_tokens(db, app))
    return s


async def test_purge_deletes_exactly_the_dead_rows(db, settings, app, capsys) -> None:
    families = await seed_families(db, settings, app)
    code_age = settings.purge_code_retention_seconds + 3600
    old_code = await issue_code(
        db, settings, client_id=app.client_id, user_id=app.user_id, redirect_uri=app.redirect_uri
    )
    await age_code(db, settings, old_code, code_age)
    recent_code = await issue_code(
        db, settings, client_id=app.client_id, user_id=app.user_id, redirect_uri=app.redirect_uri
    )
    await age_code(db, settings, recent_code, 3600)  # expired, but within the retention
    old_device, live_device = await device_code(db, settings, app), await device_code(db, settings, app)
    await age_device_code(db, old_device, code_age)
    old_resets, live_resets = await reset_tokens(db, settings, 2), await reset_tokens(db, settings, 1)
    await age_reset_tokens(db, old_resets, code_age)

    assert await purge(settings, "--batch-size", "3") == 0

    assert await families_left(db, families.dead_families) == set()
    assert await tokens_left(db, families.dead_tokens) == set()
    assert await families_left(db, families.live_families) == set(families.live_families)
    assert await tokens_left(db, families.live_tokens) == set(families.live_tokens)
    codes = await db.fetchval("SELECT count(*) FROM authorization_codes WHERE client_id = $1", app.client_id)
    assert codes == 1  # the recent one
    devices = {r["id"] for r in await db.fetch("SELECT id FROM device_codes WHERE client_id = $1", app.client_id)}
    assert devices == {live_device}
    resets = await db.fetch(
        "SELECT user_id FROM password_reset_tokens WHERE user_id = ANY($1::bigint[])", [old_resets, live_resets]
    )
    assert [r["user_id"] for r in resets] == [live_resets]
    out = capsys.readouterr().out
    assert "purge: refresh_tokens:" in out and "purge: done," in out


async def test_dry_run_counts_and_deletes_nothing(db, settings, app, capsys) -> None:
    assert await purge(settings) == 0  # start from nothing dead
    families = await seed_families(db, settings, app)
    user_id = await reset_tokens(db, settings, 3)
    await age_reset_tokens(db, user_id, settings.purge_code_retention_seconds + 3600)
    capsys.readouterr()

    assert await purge(settings, "--dry-run") == 0

    out = capsys.readouterr().out
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:]}
    assert counts["token_families"] == len(families.dead_families)
    assert counts["refresh_tokens"] == len(families.dead_tokens)
    assert counts["password_reset_tokens"] == 3
    assert await families_left(db, families.dead_families) == set(families.dead_families)
    assert await db.fetchval("SELECT count(*) FROM password_reset_tokens WHERE user_id = $1", user_id) == 3


async def test_batches_of_batch_size(db, settings, capsys, monkeypatch) -> None:
    monkeypatch.setattr(purge_cli, "PROGRESS_EVERY_SECONDS", 0.0)  # a progress line per batch
    assert await purge(settings, "--table", "password_reset_tokens") == 0
    user_id = await reset_tokens(db, settings, 5)
    await age_reset_tokens(db, user_id, settings.purge_code_retention_seconds + 3600)
    capsys.readouterr()

    assert await purge(settings, "--table", "password_reset_tokens", "--batch-size", "2") == 0

    out = capsys.readouterr().out
    assert "purge: password_reset_tokens: 5 deleted (3 batches" in out, out
    assert "purge: password_reset_tokens: 4 deleted so far (2 batches" in out, out
    assert "refresh_tokens" not in out  # --table: only that table
    assert await db.fetchval("SELECT count(*) FROM password_reset_tokens WHERE user_id = $1", user_id) == 0


async def test_libs_oauth_tables(db, settings) -> None:
    """Revoked access tokens an hour past their expiry, and applied-event records past
    EVENTS_OUTBOX_RETENTION_SECONDS, go; younger ones stay."""
    now = datetime.now(UTC)
    old_jti, recent_jti = uuid.uuid4().hex, uuid.uuid4().hex
    old_event, recent_event = uuid.uuid4(), uuid.uuid4()
    async with db.acquire() as conn, conn.transaction():
        for jti, expired_ago in ((old_jti, 7200), (recent_jti, 600)):
            await revoke_access_token(
                conn,
                jti=jti,
                family_id=None,
                client_id="purge-test",
                user_id=None,
                expires_at=now - timedelta(seconds=expired_ago),
                reason="test",
            )
        for event_id in (old_event, recent_event):
            assert await process_once(conn, "purge-test", str(event_id))
    await age_processed_event(db, "purge-test", old_event, settings.events_outbox_retention_seconds + 3600)

    assert await purge(settings, "--table", "revoked_access_tokens", "--table", "processed_events") == 0

    jtis = await db.fetch("SELECT jti FROM revoked_access_tokens WHERE jti = ANY($1::text[])", [old_jti, recent_jti])
    assert [r["jti"] for r in jtis] == [recent_jti]
    events = await db.fetch("SELECT event_id FROM processed_events WHERE consumer = 'purge-test'")
    assert [r["event_id"] for r in events] == [recent_event]


@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--batch-size", "x"], ["--table", "spend_charges"]])
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["purge", *argv])


async def test_token_flow_and_reuse_detection_after_a_purge(stack: Stack, http, db, settings, app) -> None:
    first = await obtain_tokens(http, stack.base, db, settings, app)
    status, _, second = await post_token(http, stack.base, refresh_form(app, first["refresh_token"]))
    assert status == 200, second
    assert await age_refresh_token_use(db, settings, first["refresh_token"], 3600) == "UPDATE 1"
    await seed_families(db, settings, app)  # something dead to purge beside it

    assert await purge(settings, "--batch-size", "2") == 0

    status, _, third = await post_token(http, stack.base, refresh_form(app, second["refresh_token"]))
    assert status == 200, third  # the live family still rotates
    status, _, body = await post_token(http, stack.base, refresh_form(app, first["refresh_token"]))
    assert status == 400 and body["error"] == "invalid_grant", body  # the used token is still known: reuse
    status, _, body = await post_token(http, stack.base, refresh_form(app, third["refresh_token"]))
    assert status == 400 and body["error"] == "invalid_grant", body  # so the family was revoked
    reason = await db.fetchval(
        """SELECT f.revoked_reason FROM token_families f JOIN refresh_tokens r ON r.family_id = f.id
           WHERE r.token_hash = $1""",
        token_hash(settings.pepper_bytes, third["refresh_token"]),
    )
    assert reason == REUSE
