"""Authorized apps in the user center (/user/authorizations and its API), and what revoking does on
every instance: the grant goes, refresh tokens fail, access tokens fail on two separately started
account-service instances within 100 ms (measured and printed). Deleting an app and disabling a
user do the same for theirs."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from libs.oauth.events.bus import EVENTS
from libs.platform.config import Settings
from services.account.user_status import disable_user_everywhere
from tests.support.factories import make_developer, make_user
from tests.support.oauth import SHARED_SCRIPT, authorize, csrf_from, login, make_app
from tests.support.stack import Stack, free_port

PASSWORD = "correct horse battery"
CB = "https://app.example/cb"


@dataclass
class Signed:
    http: aiohttp.ClientSession
    user_id: int
    username: str


@dataclass
class Tokens:
    client_id: str
    client_secret: str
    access_token: str
    refresh_token: str


@pytest.fixture
async def signed(stack: Stack, db: asyncpg.Pool) -> AsyncIterator[Signed]:
    user = await make_user(db, PASSWORD)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await login(http, stack.base, user.username, PASSWORD)
        yield Signed(http, user.id, user.username)


@pytest.fixture(scope="module")
async def owner_id(db: asyncpg.Pool, settings: Settings) -> int:
    user, _ = await make_developer(db, settings)
    return user.id


async def authorize_app(
    stack: Stack,
    db: asyncpg.Pool,
    settings: Settings,
    who: Signed,
    owner: int,
    *,
    name: str = "报表助手",
    scope: str = "profile balance",
) -> Tokens:
    """A new app the user authorizes with one click, and the token pair it gets."""
    client_id, secret = await make_app(db, settings, owner, [CB], name=name)
    assert secret
    params = await authorize(who.http, stack.base, client_id, CB, scope=scope)
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": CB,
        "client_id": client_id,
        "client_secret": secret,
    }
    async with who.http.post(f"{stack.base}/api/oauth2/token", data=form) as r:
        body = await r.json()
    assert r.status == 200, body
    return Tokens(client_id, secret, body["access_token"], body["refresh_token"])


async def userinfo_status(http: aiohttp.ClientSession, base: str, access_token: str) -> int:
    async with http.get(f"{base}/api/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"}) as r:
        await r.read()
        return r.status


async def refresh(http: aiohttp.ClientSession, base: str, t: Tokens) -> tuple[int, dict]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": t.refresh_token,
        "client_id": t.client_id,
        "client_secret": t.client_secret,
    }
    async with http.post(f"{base}/api/oauth2/token", data=form) as r:
        return r.status, await r.json()


async def api_csrf(who: Signed, base: str) -> str:
    return await csrf_from(who.http, f"{base}/user/authorizations")


@pytest.fixture(scope="module")
async def two_accounts(stack: Stack) -> AsyncIterator[list[str]]:
    """Two more account-service instances, started separately (own consumer queue, own caches)."""
    runners: list[web.AppRunner] = []
    urls = []
    for _ in range(2):
        port = free_port()
        runners.append(await stack.start("account", port=port))
        urls.append(f"http://127.0.0.1:{port}")
    for runner in runners:  # their queues are bound before the tests begin
        bus = runner.app[EVENTS]
        for _ in range(200):
            if bus.live:
                break
            await asyncio.sleep(0.025)
        assert bus.live
    yield urls
    for runner in runners:
        await runner.cleanup()


# --- the page ------------------------------------------------------------------------------------
async def test_page_needs_login(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/user/authorizations", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/login?next=/user/authorizations"


async def test_page_lists_apps_in_both_languages(stack: Stack, db, settings, signed, owner_id) -> None:
    async with signed.http.get(f"{stack.base}/user/authorizations?lang=zh") as r:
        empty = await r.text()
    assert r.status == 200 and "你还没有授权任何应用" in empty
    t = await authorize_app(stack, db, settings, signed, owner_id, name="报表<助手>")
    async with signed.http.get(f"{stack.base}/user/authorizations?lang=zh") as r:
        page = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert "已授权的应用" in page and "报表&lt;助手&gt;" in page and "<助手>" not in page
    assert "你的用户名" in page and "你的账户余额" in page  # scopes in plain words
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", page)
    assert f'action="/user/authorizations/{t.client_id}/revoke"' in page
    assert (
        'name="csrf_token"' in page and page.count("<script") == page.count(SHARED_SCRIPT) == 1
    )  # a form: works without JavaScript
    async with signed.http.get(f"{stack.base}/user/authorizations?lang=en") as r:
        english = await r.text()
    assert "Authorized apps" in english and "your account balance" in english and "Revoke" in english


async def test_form_revoke_without_javascript(stack: Stack, db, settings, signed, owner_id) -> None:
    t = await authorize_app(stack, db, settings, signed, owner_id, name="Form App")
    csrf = await api_csrf(signed, stack.base)
    url = f"{stack.base}/user/authorizations/{t.client_id}/revoke"
    async with signed.http.post(url, data={"csrf_token": "forged"}, allow_redirects=False) as r:
        assert r.status == 403
    assert await userinfo_status(signed.http, stack.base, t.access_token) == 200
    async with signed.http.post(url, data={"csrf_token": csrf, "confirm": "1"}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == f"/user/authorizations?revoked={t.client_id}"
    async with signed.http.get(f"{stack.base}{r.headers['Location']}&lang=en") as r:
        page = await r.text()
    assert "Access for “Form App” was revoked." in page and "You have not authorized any app yet." in page
    assert await userinfo_status(signed.http, stack.base, t.access_token) == 401
    assert (await refresh(signed.http, stack.base, t))[0] == 400
    # Again: nothing left to revoke.
    async with signed.http.post(url, data={"csrf_token": csrf, "confirm": "1"}, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/user/authorizations?nothing=1"


# --- the API -------------------------------------------------------------------------------------
async def test_api_lists_and_revokes(stack: Stack, db, settings, signed, owner_id) -> None:
    a = await authorize_app(stack, db, settings, signed, owner_id, name="App A", scope="profile")
    b = await authorize_app(stack, db, settings, signed, owner_id, name="App B", scope="profile balance")
    async with signed.http.get(f"{stack.base}/api/user/authorizations") as r:
        body = await r.json()
        csrf = r.headers["X-CSRF-Token"]
    assert r.status == 200 and body["success"] is True
    listed = {x["client_id"]: x for x in body["data"]}
    assert set(listed) == {a.client_id, b.client_id}
    assert listed[a.client_id]["name"] == "App A" and listed[a.client_id]["scopes"] == ["profile"]
    assert listed[b.client_id]["scopes"] == ["profile", "balance"]
    for x in listed.values():
        assert isinstance(x["first_authorized_time"], int) and abs(x["first_authorized_time"] - time.time()) < 300
        assert x["last_authorized_time"] >= x["first_authorized_time"]

    # CSRF: the header is required and must match this browser's cookie.
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        async with signed.http.delete(f"{stack.base}/api/user/authorizations/{a.client_id}", headers=headers) as r:
            refused = await r.json()
        assert r.status == 403 and refused["success"] is False and "CSRF" in refused["message"]
    async with signed.http.delete(
        f"{stack.base}/api/user/authorizations/{a.client_id}", headers={"X-CSRF-Token": csrf}
    ) as r:
        done = await r.json()
    assert r.status == 200 and done["success"] is True
    assert done["data"] == {"client_id": a.client_id, "revoked_token_families": 1}

    assert await userinfo_status(signed.http, stack.base, a.access_token) == 401
    status, err = await refresh(signed.http, stack.base, a)
    assert status == 400 and err["error"] == "invalid_grant"
    # The other app is untouched.
    assert await userinfo_status(signed.http, stack.base, b.access_token) == 200
    assert (await refresh(signed.http, stack.base, b))[0] == 200
    async with signed.http.get(f"{stack.base}/api/user/authorizations") as r:
        assert [x["client_id"] for x in (await r.json())["data"]] == [b.client_id]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM grants WHERE user_id = $1 AND client_id = $2", signed.user_id, a.client_id
        )
        == 0
    )
    event = await db.fetchrow(
        "SELECT data FROM event_outbox WHERE type = 'authorization.revoked' AND data->>'client_id' = $1", a.client_id
    )
    assert event is not None
    data = event["data"] if isinstance(event["data"], dict) else __import__("json").loads(event["data"])
    assert data["user_id"] == signed.user_id and len(data["family_ids"]) == 1 and data["reason"] == "user_revoked"

    async with signed.http.delete(
        f"{stack.base}/api/user/authorizations/{a.client_id}", headers={"X-CSRF-Token": csrf}
    ) as r:
        assert r.status == 404 and (await r.json())["success"] is False


async def test_api_needs_a_session(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/api/user/authorizations") as r:
        body = await r.json()
    assert r.status == 401 and body["success"] is False and body["data"] is None


async def test_revoking_stops_an_unused_code_too(stack: Stack, db, settings, signed, owner_id) -> None:
    client_id, secret = await make_app(db, settings, owner_id, [CB], name="Code App")
    code = (await authorize(signed.http, stack.base, client_id, CB))["code"]
    csrf = await api_csrf(signed, stack.base)
    async with signed.http.delete(
        f"{stack.base}/api/user/authorizations/{client_id}", headers={"X-CSRF-Token": csrf}
    ) as r:
        assert r.status == 200
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CB,
        "client_id": client_id,
        "client_secret": secret,
    }
    async with signed.http.post(f"{stack.base}/api/oauth2/token", data=form) as r:
        body = await r.json()
    assert r.status == 400 and body["error"] == "invalid_grant"


# --- every instance, at once ---------------------------------------------------------------------
async def test_revoke_is_rejected_by_two_instances_within_100ms(
    stack: Stack, db, settings, signed, owner_id, two_accounts
) -> None:
    t = await authorize_app(stack, db, settings, signed, owner_id, name="Fast revoke")
    http = signed.http
    for base in two_accounts:  # both instances have the token checked and the user cached
        for _ in range(3):
            assert await userinfo_status(http, base, t.access_token) == 200
    csrf = await api_csrf(signed, stack.base)

    async with http.delete(f"{stack.base}/api/user/authorizations/{t.client_id}", headers={"X-CSRF-Token": csrf}) as r:
        assert r.status == 200
    returned = time.perf_counter()

    async def first_401(base: str) -> float:
        while True:
            if await userinfo_status(http, base, t.access_token) == 401:
                return time.perf_counter() - returned
            assert time.perf_counter() - returned < 2, "still accepted after 2 s"

    latencies = await asyncio.gather(*(first_401(b) for b in two_accounts))
    print(f"\nrevoke -> 401 latency per instance: {[f'{x * 1000:.1f} ms' for x in latencies]}")
    assert max(latencies) < 0.1, latencies
    status, err = await refresh(http, stack.base, t)
    assert status == 400 and err["error"] == "invalid_grant"
    for base in two_accounts:  # and it stays rejected
        assert await userinfo_status(http, base, t.access_token) == 401


async def test_deleting_an_app_revokes_its_users_tokens(stack: Stack, db, settings, signed, two_accounts) -> None:
    owner, dev_token = await make_developer(db, settings)
    t = await authorize_app(stack, db, settings, signed, owner.id, name="Doomed")
    other = await make_user(db, PASSWORD)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http2:
        await login(http2, stack.base, other.username, PASSWORD)
        t2_params = await authorize(http2, stack.base, t.client_id, CB)
        assert "code" in t2_params
    for base in two_accounts:
        assert await userinfo_status(signed.http, base, t.access_token) == 200
    app_id = await db.fetchval("SELECT id FROM oauth_apps WHERE client_id = $1", t.client_id)
    async with signed.http.delete(
        f"{stack.base}/api/oauth_apps/{app_id}", headers={"Authorization": f"Bearer {dev_token}"}
    ) as r:
        assert r.status == 200
    for base in two_accounts:
        assert await userinfo_status(signed.http, base, t.access_token) == 401
    assert (await refresh(signed.http, stack.base, t))[0] in (400, 401)  # the client is gone too
    assert await db.fetchval("SELECT count(*) FROM grants WHERE client_id = $1", t.client_id) == 0
    revoked = await db.fetchval(
        "SELECT count(*) FROM token_families WHERE client_id = $1 AND revoked_reason = 'client_deleted'", t.client_id
    )
    assert revoked == 1
    types = [
        r["type"] for r in await db.fetch("SELECT type FROM event_outbox WHERE data->>'client_id' = $1", t.client_id)
    ]
    assert "authorization.revoked" in types and "client.deleted" in types


async def test_disabling_a_user_revokes_everything(stack: Stack, db, settings, signed, owner_id, two_accounts) -> None:
    a = await authorize_app(stack, db, settings, signed, owner_id, name="One")
    b = await authorize_app(stack, db, settings, signed, owner_id, name="Two")
    for base in two_accounts:
        assert await userinfo_status(signed.http, base, a.access_token) == 200
    async with db.acquire() as conn:
        families = await disable_user_everywhere(conn, settings, signed.user_id)
    assert families is not None and len(families) == 2
    for base in two_accounts:
        for t in (a, b):
            assert await userinfo_status(signed.http, base, t.access_token) == 401
    for t in (a, b):
        assert (await refresh(signed.http, stack.base, t))[0] == 400
    assert await db.fetchval("SELECT count(*) FROM grants WHERE user_id = $1", signed.user_id) == 0
    data = await db.fetchval(
        "SELECT data::text FROM event_outbox WHERE type = 'user.disabled' AND (data->>'user_id')::bigint = $1",
        signed.user_id,
    )
    assert data and all(f in data for f in families)
