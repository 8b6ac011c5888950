"""Introspection's per-token cache of its PostgreSQL checks (services/token/introspect.py): used
while the instance's event consumer is live, and still never stale after a revocation or a user
disable done through the real paths, on another token-service instance than the one that revoked."""

from __future__ import annotations

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from libs.oauth.events.bus import EVENTS
from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from services.account import store as account_store
from services.account.user_status import disable_user_everywhere
from services.token.introspect import INTROSPECTED
from tests.support.codes import ClientApp, make_client, obtain_tokens, post_token, refresh_form
from tests.support.events import TcpProxy
from tests.support.stack import Stack, extra_instance, until


@pytest.fixture
async def app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)  # a fresh user per test


def token_instance(stack: Stack, settings: Settings, **overrides: object):  # type: ignore[no-untyped-def]
    """A second token-service instance next to the stack's."""
    return extra_instance(stack, "token", settings, **overrides)


async def introspect(http: aiohttp.ClientSession, base: str, app: ClientApp, token: str) -> dict:
    form = {"token": token, "client_id": app.client_id, "client_secret": app.client_secret or ""}
    async with http.post(f"{base}/api/oauth2/introspect", data=form) as r:
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]


async def revoke(http: aiohttp.ClientSession, stack: Stack, app: ClientApp, token: str) -> None:
    form = {"token": token, "client_id": app.client_id, "client_secret": app.client_secret or ""}
    async with http.post(f"{stack.base}/api/oauth2/revoke", data=form) as r:  # the gateway's instance
        assert r.status == 200


async def cached_second_instance(
    http: aiohttp.ClientSession, base: str, instance: web.Application, app: ClientApp, token: str
) -> None:
    """Introspect ``token`` on ``instance`` until its answer comes from the cache."""
    cache = instance[INTROSPECTED]
    first = await introspect(http, base, app, token)
    assert first["active"] is True and first["username"]
    hits = cache.hits
    again = await introspect(http, base, app, token)
    assert again == first
    assert cache.hits == hits + 1  # no PostgreSQL round trip this time


async def test_revoked_family_is_inactive_at_once_on_another_instance(stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    async with token_instance(stack, settings) as (base, instance):
        await until(lambda: instance[EVENTS].live)
        await cached_second_instance(http, base, instance, app, tokens["access_token"])
        await revoke(http, stack, app, tokens["refresh_token"])  # RFC 7009: the whole family
        assert await introspect(http, base, app, tokens["access_token"]) == {"active": False}
        assert await introspect(http, base, app, tokens["refresh_token"]) == {"active": False}


async def test_revoked_access_token_is_inactive_at_once_on_another_instance(stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    async with token_instance(stack, settings) as (base, instance):
        await until(lambda: instance[EVENTS].live)
        await cached_second_instance(http, base, instance, app, tokens["access_token"])
        await revoke(http, stack, app, tokens["access_token"])  # that jti only
        assert await introspect(http, base, app, tokens["access_token"]) == {"active": False}
        assert (await introspect(http, base, app, tokens["refresh_token"]))["active"] is True


async def test_disabled_user_is_inactive_at_once_on_every_instance(stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    async with token_instance(stack, settings) as (base, instance):
        await until(lambda: instance[EVENTS].live)
        await cached_second_instance(http, base, instance, app, tokens["access_token"])
        await cached_second_instance(http, stack.base, stack.runners["token"].app, app, tokens["access_token"])
        async with db.acquire() as conn:  # as `oauthctl user disable` does (user.disabled event)
            await disable_user_everywhere(conn, settings, app.user_id)
        assert await introspect(http, base, app, tokens["access_token"]) == {"active": False}
        assert await introspect(http, stack.base, app, tokens["access_token"]) == {"active": False}


async def test_a_user_event_drops_the_cache(stack, http, db, settings, app) -> None:
    """A user.* event (here user.updated, after a status change) is enough on its own."""
    from libs.oauth.events import outbox
    from libs.oauth.events.bus import EventWaiter
    from libs.oauth.events.types import UserUpdated

    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    async with token_instance(stack, settings) as (base, instance):
        await until(lambda: instance[EVENTS].live)
        await cached_second_instance(http, base, instance, app, tokens["access_token"])
        async with EventWaiter(settings, ["user.updated"]), db.acquire() as conn, conn.transaction():
            await account_store.set_user_status(conn, app.user_id, UserStatus.DISABLED)
            await outbox.enqueue(conn, UserUpdated(user_id=app.user_id, fields=("status",)))
        await until(lambda: len(instance[INTROSPECTED]) == 0, within=5)
        assert await introspect(http, base, app, tokens["access_token"]) == {"active": False}


async def test_refresh_rotation_keeps_the_new_access_token_active(stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    status, _, new = await post_token(http, stack.base, refresh_form(app, tokens["refresh_token"]))
    assert status == 200, new
    assert (await introspect(http, stack.base, app, new["access_token"]))["active"] is True
    assert (await introspect(http, stack.base, app, new["access_token"]))["active"] is True


async def test_without_events_every_call_reads_postgres(stack, http, db, settings, app) -> None:
    tokens = await obtain_tokens(http, stack.base, db, settings, app)
    proxy = TcpProxy.for_url(settings.amqp_url)
    await proxy.open()
    try:
        async with token_instance(stack, settings, amqp_url=proxy.url(settings.amqp_url)) as (base, instance):
            await until(lambda: instance[EVENTS].live)
            await proxy.close()  # the instance's broker connection drops
            await until(lambda: not instance[EVENTS].live)
            cache = instance[INTROSPECTED]
            for _ in range(2):
                assert (await introspect(http, base, app, tokens["access_token"]))["active"] is True
            assert cache.hits == 0 and len(cache) == 0
            # Disabled behind the services' back, no event anywhere: seen at once all the same.
            await account_store.set_user_status(db, app.user_id, UserStatus.DISABLED)
            assert await introspect(http, base, app, tokens["access_token"]) == {"active": False}
    finally:
        await proxy.close()
