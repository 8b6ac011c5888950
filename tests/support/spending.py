"""A spending grant made the way a user makes one (docs/spending.md): log in, authorize an app for
``profile spend`` (the consent page is shown even with auto_authorize=true), choose a limit on the
page, exchange the code. Used by tests/integration/test_spending.py and the browser test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
from aiohttp import web

from examples.resource_server.app import Config as ResourceServerConfig
from examples.resource_server.app import build_app as build_resource_server
from libs.platform.config import Settings
from services.account import store as account_store
from tests.support.codes import post_token
from tests.support.factories import make_user
from tests.support.oauth import REQUEST_RE, form_value, login, make_app, query_of
from tests.support.stack import Stack, free_port

CB = "https://spend.example/cb"


@dataclass
class SpendGrant:
    user_id: int
    username: str
    client_id: str
    client_secret: str
    access_token: str
    refresh_token: str


async def consent_with_limit(
    http: aiohttp.ClientSession,
    stack: Stack,
    client_id: str,
    amount: str,
    period: str,
    scope: str = "profile spend",
    **extra: str,
) -> str:
    """Authorize (auto_authorize=true), answer the consent page with the chosen limit; the code."""
    params = {
        "client_id": client_id,
        "redirect_uri": CB,
        "response_type": "code",
        "scope": scope,
        "state": "st",
        "auto_authorize": "true",
        **extra,
    }
    async with http.get(f"{stack.base}/api/oauth2/authorize", params=params, allow_redirects=False) as r:
        body = await r.text()
        assert r.status == 200, (r.status, r.headers.get("Location"), body[:300])
    data = {
        "csrf_token": form_value(body),
        "request": form_value(body, REQUEST_RE),
        "decision": "allow",
        "spend_amount": amount,
        "spend_period": period,
    }
    async with http.post(f"{stack.base}/consent", data=data, allow_redirects=False) as r:
        assert r.status == 302, (r.status, (await r.text())[:300])
        location = r.headers["Location"]
    return query_of(location)["code"]


async def make_spend_grant(
    http: aiohttp.ClientSession,
    stack: Stack,
    db: asyncpg.Pool,
    settings: Settings,
    *,
    amount: str = "1.00",
    period: str = "daily",
    quota: int = 1_000_000,
) -> SpendGrant:
    user = await make_user(db)
    async with db.acquire() as conn:
        await account_store.set_balance(conn, user.id, quota, 0)
    owner = await make_user(db)
    client_id, secret = await make_app(db, settings, owner.id, [CB], name="Spender")
    assert secret is not None
    await login(http, stack.base, user.username, "correct horse battery")
    code = await consent_with_limit(http, stack, client_id, amount, period)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CB,
        "client_id": client_id,
        "client_secret": secret,
    }
    status, _, body = await post_token(http, stack.base, form)
    assert status == 200, body
    return SpendGrant(user.id, user.username, client_id, secret, body["access_token"], body["refresh_token"])


@contextlib.asynccontextmanager
async def resource_server(stack: Stack, settings: Settings, price: int = 300) -> AsyncIterator[str]:
    """The example resource server (examples/resource_server) on a free port against ``stack``,
    charging ``price`` minor units per call; its base URL while the block runs."""
    port = free_port()
    config = ResourceServerConfig(
        oauth_server=stack.base,
        account_internal_url=stack.url_of("account"),
        internal_token=settings.internal_service_token,
        price=price,
        port=port,
    )
    runner = web.AppRunner(build_resource_server(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
