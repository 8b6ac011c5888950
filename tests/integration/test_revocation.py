"""RFC 7009 revocation (POST /api/oauth2/revoke) and how every instance's access-token check sees
revocations: from memory while its event consumer is connected, from Redis on every request while
it is not, from PostgreSQL when Redis is down too."""

from __future__ import annotations

import base64

import aiohttp
import asyncpg
import pytest

from libs.oauth.access_tokens import REVOCATIONS, VERIFIER
from libs.oauth.events.bus import EVENTS
from libs.platform.config import Settings
from tests.support.codes import ClientApp, make_client, obtain_tokens, refresh_form, refresh_status, userinfo_status
from tests.support.events import TcpProxy
from tests.support.stack import Stack, extra_instance, free_port, until


@pytest.fixture
async def app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)


async def revoke(
    http: aiohttp.ClientSession,
    stack: Stack,
    app: ClientApp,
    token: str,
    hint: str | None = None,
    *,
    basic: bool = False,
    secret: str | None = None,
) -> tuple[int, str, dict[str, str]]:
    form = {"token": token}
    if hint:
        form["token_type_hint"] = hint
    headers = {}
    if basic:
        raw = f"{app.client_id}:{secret or app.client_secret}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    else:
        form["client_id"] = app.client_id
        if app.client_secret:
            form["client_secret"] = secret or app.client_secret
    async with http.post(f"{stack.base}/api/oauth2/revoke", data=form, headers=headers) as r:
        return r.status, await r.text(), dict(r.headers)


async def event_count(db: asyncpg.Pool, **match: str) -> int:
    where = " AND ".join(f"data->>'{k}' = ${i + 1}" for i, k in enumerate(match))
    return await db.fetchval(
        f"SELECT count(*) FROM event_outbox WHERE type = 'token.revoked' AND {where}", *match.values()
    )


# --- RFC 7009 ------------------------------------------------------------------------------------
async def test_refresh_token_revokes_its_family(stack: Stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    status, body, headers = await revoke(http, stack, app, tokens["refresh_token"], "refresh_token")
    assert status == 200 and body == "" and headers["Cache-Control"] == "no-store"
    assert await refresh_status(http, stack.base, app, tokens["refresh_token"]) == 400
    assert await userinfo_status(http, stack.base, tokens["access_token"]) == 401  # same grant's access token
    family = await db.fetchval("SELECT family_id FROM refresh_tokens ORDER BY id DESC LIMIT 1")
    row = await db.fetchrow("SELECT revoked_reason FROM token_families WHERE id = $1", family)
    assert row["revoked_reason"] == "revoked_by_client"
    assert await event_count(db, family_id=str(family), reason="revoked_by_client") == 1
    # Revoking again is fine and writes nothing more.
    assert (await revoke(http, stack, app, tokens["refresh_token"]))[0] == 200
    assert await event_count(db, family_id=str(family)) == 1


async def test_access_token_revokes_that_token_only(stack: Stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    assert await userinfo_status(http, stack.base, tokens["access_token"]) == 200
    status, body, _ = await revoke(http, stack, app, tokens["access_token"], "access_token", basic=True)
    assert status == 200 and body == ""
    assert await userinfo_status(http, stack.base, tokens["access_token"]) == 401
    jti = await db.fetchval("SELECT jti FROM revoked_access_tokens WHERE client_id = $1", app.client_id)
    assert jti and await event_count(db, jti=jti, token_type="access_token") == 1
    # The refresh token still works, and its new access token too.
    async with http.post(f"{stack.base}/api/oauth2/token", data=refresh_form(app, tokens["refresh_token"])) as r:
        fresh = await r.json()
    assert r.status == 200
    assert await userinfo_status(http, stack.base, fresh["access_token"]) == 200


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token", "id_token", "unknown"])
async def test_hints_are_only_hints(stack: Stack, http, db, settings, app, hint) -> None:
    """A wrong or unknown hint still finds the token (RFC 7009 2.1 "extend its search")."""
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    assert (await revoke(http, stack, app, tokens["refresh_token"], hint))[0] == 200
    assert await refresh_status(http, stack.base, app, tokens["refresh_token"]) == 400
    other = await obtain_tokens(http, stack.base, db, settings, app)
    assert (await revoke(http, stack, app, other["access_token"], hint))[0] == 200
    assert await userinfo_status(http, stack.base, other["access_token"]) == 401
    assert await refresh_status(http, stack.base, app, other["refresh_token"]) == 200  # access token alone


@pytest.mark.parametrize(
    "token", ["refresh_unknown", "refresh_" + "A" * 43, "not-a-token", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "令牌"]
)
async def test_unknown_tokens_are_200(stack: Stack, http, app, token) -> None:
    status, body, _ = await revoke(http, stack, app, token)
    assert status == 200 and body == ""


async def test_expired_access_token_is_200(stack: Stack, http, db, settings, app) -> None:
    from libs.oauth.access_tokens import KEYS, mint

    keys = stack.runners["token"].app[KEYS]
    token, _ = await mint(
        keys, settings, sub=str(app.user_id), client_id=app.client_id, scope="profile", family=None, ttl=-60
    )  # expired a minute ago
    assert (await revoke(http, stack, app, token))[0] == 200
    assert await db.fetchval("SELECT count(*) FROM revoked_access_tokens WHERE client_id = $1", app.client_id) == 0


async def test_another_clients_token_is_not_revoked(stack: Stack, http, db, settings, app) -> None:
    victim = await obtain_tokens(http, stack.base, db, settings, app)
    thief = await make_client(db, settings)
    for token, hint in (
        (victim["refresh_token"], "refresh_token"),
        (victim["access_token"], "access_token"),
        (victim["access_token"], None),
    ):
        status, body, _ = await revoke(http, stack, thief, token, hint)
        assert status == 200 and body == ""  # nothing to tell the caller
    assert await userinfo_status(http, stack.base, victim["access_token"]) == 200
    assert await refresh_status(http, stack.base, app, victim["refresh_token"]) == 200
    assert await db.fetchval("SELECT count(*) FROM revoked_access_tokens WHERE client_id = $1", thief.client_id) == 0


async def test_client_authentication_is_the_token_endpoints(stack: Stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    status, body, headers = await revoke(http, stack, app, tokens["refresh_token"], secret="secret_wrong")
    assert status == 401 and '"invalid_client"' in body
    status, body, headers = await revoke(http, stack, app, tokens["refresh_token"], basic=True, secret="secret_wrong")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    async with http.post(f"{stack.base}/api/oauth2/revoke", data={"token": tokens["refresh_token"]}) as r:
        assert r.status == 401 and (await r.json())["error"] == "invalid_client"
    async with http.post(
        f"{stack.base}/api/oauth2/revoke", data={"client_id": app.client_id, "client_secret": app.client_secret}
    ) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_request"
    async with http.post(f"{stack.base}/api/oauth2/revoke", json={"token": "x"}) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_request"
    async with http.get(f"{stack.base}/api/oauth2/revoke") as r:
        assert r.status == 405
    assert await refresh_status(http, stack.base, app, tokens["refresh_token"]) == 200  # nothing was revoked


async def test_public_client_revokes_with_its_client_id(stack: Stack, http, db, settings) -> None:
    public = await make_client(db, settings, method="none", redirect_uri="http://127.0.0.1:3000/cb")
    tokens = await obtain_tokens(http, stack.base, db, settings, public)
    assert (await revoke(http, stack, public, tokens["refresh_token"]))[0] == 200
    assert await refresh_status(http, stack.base, public, tokens["refresh_token"]) == 400


# --- every instance, whatever is down ------------------------------------------------------------
def account_instance(stack: Stack, settings: Settings, **overrides: object):  # type: ignore[no-untyped-def]
    """A second account-service instance next to the stack's."""
    return extra_instance(stack, "account", settings, **overrides)


async def test_checked_tokens_are_remembered_while_events_flow(stack: Stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    async with account_instance(stack, settings) as (base, instance):
        await until(lambda: instance[EVENTS].live)
        cache = instance[REVOCATIONS]
        assert await userinfo_status(http, base, tokens["access_token"]) == 200
        before = cache.shared_checks
        for _ in range(5):
            assert await userinfo_status(http, base, tokens["access_token"]) == 200
        assert cache.shared_checks == before  # from memory
        assert (await revoke(http, stack, app, tokens["access_token"]))[0] == 200
        assert await userinfo_status(http, base, tokens["access_token"]) == 401  # the event dropped it


async def test_while_rabbitmq_is_unreachable_every_request_reads_redis(stack: Stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    proxy = TcpProxy.for_url(settings.amqp_url)
    await proxy.open()
    try:
        async with account_instance(stack, settings, amqp_url=proxy.url(settings.amqp_url)) as (base, instance):
            bus = instance[EVENTS]
            await until(lambda: bus.live)
            for _ in range(3):
                assert await userinfo_status(http, base, tokens["access_token"]) == 200  # remembered
            await proxy.close()  # the instance's broker connection drops
            await until(lambda: not bus.live, within=2)
            cache = instance[REVOCATIONS]
            before = cache.shared_checks
            assert await userinfo_status(http, base, tokens["access_token"]) == 200
            assert cache.shared_checks == before + 1  # asked Redis, not its memory
            # Revoked elsewhere; this instance hears nothing, and still refuses at once.
            assert (await revoke(http, stack, app, tokens["refresh_token"]))[0] == 200
            assert await userinfo_status(http, base, tokens["access_token"]) == 401
            # The broker comes back: the instance trusts events again, and still refuses.
            await proxy.open()
            await until(lambda: bus.live)
            assert await userinfo_status(http, base, tokens["access_token"]) == 401
    finally:
        await proxy.close()


async def test_with_redis_and_rabbitmq_down_postgres_decides(stack: Stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    dead_amqp = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with account_instance(stack, settings, amqp_url=dead_amqp, redis_url=dead_redis) as (base, instance):
        assert not instance[EVENTS].live
        assert await userinfo_status(http, base, tokens["access_token"]) == 200
        assert (await revoke(http, stack, app, tokens["access_token"]))[0] == 200
        assert await userinfo_status(http, base, tokens["access_token"]) == 401  # revoked_access_tokens
        other = await obtain_tokens(http, stack.base, db, settings, app)
        assert await userinfo_status(http, base, other["access_token"]) == 200
        assert (await revoke(http, stack, app, other["refresh_token"]))[0] == 200
        assert await userinfo_status(http, base, other["access_token"]) == 401  # token_families.revoked_at


async def test_verifier_without_cache_still_reads_redis(stack: Stack, http, db, settings, app) -> None:
    """The token service's own verifier (introspection) sees revocations too."""
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    verifier = stack.runners["token"].app[VERIFIER]
    await verifier.verify(tokens["access_token"])
    assert (await revoke(http, stack, app, tokens["access_token"]))[0] == 200
    with pytest.raises(Exception, match="revoked"):
        await verifier.verify(tokens["access_token"])
