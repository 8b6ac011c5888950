"""Destructive actions confirm first (a form, no JavaScript needed), secret rotation keeps the old
secret for the chosen grace period, and the new secret is shown once by post/redirect/get
(issue 13 part B; docs/api.md "Rotate the secret")."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from libs.oauth.events import outbox
from libs.oauth.events.types import ClientUpdated
from libs.platform.config import Settings
from tests.integration.test_account_pages import (
    SECRET_RE,
    browser,  # noqa: F401 - the fixture
    create_app_via_console,
    csrf_in,
    page_csrf,
    user_id,
)
from tests.support.clock import end_previous_secret_in
from tests.support.factories import make_developer, make_user
from tests.support.oauth import authorize, login, make_app
from tests.support.stack import Stack

CONFIRM_RE = re.compile(r'name="confirm" value="1"')
CB = "https://grace.example/cb"


async def client_auth_status(http: aiohttp.ClientSession, base: str, client_id: str, secret: str) -> int:
    """Does the token service accept these client credentials? (RFC 7662 introspection: 200 when
    the client authenticates, whatever the token; 401 invalid_client when it does not.)"""
    form = {"token": "not-a-token", "client_id": client_id, "client_secret": secret}
    async with http.post(f"{base}/api/oauth2/introspect", data=form) as r:
        await r.read()
        return r.status


async def revoke_status(http: aiohttp.ClientSession, base: str, client_id: str, secret: str) -> int:
    form = {"token": "not-a-token", "client_id": client_id, "client_secret": secret}
    async with http.post(f"{base}/api/oauth2/revoke", data=form) as r:
        await r.read()
        return r.status


async def until_status(check, want: int, seconds: float = 5.0) -> int:  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it gives ``want`` (client caches drop on the client.* event)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        got = await check()
        if got == want or asyncio.get_running_loop().time() > deadline:
            return int(got)
        await asyncio.sleep(0.1)


async def test_every_destructive_action_asks_first_without_javascript(stack: Stack, browser, db) -> None:  # noqa: F811
    http, name = browser
    _, html = await create_app_via_console(http, stack.base)
    token = csrf_in(html)
    uid = await user_id(db, name)
    app_id = await db.fetchval("SELECT max(id) FROM oauth_apps WHERE owner_id = $1", uid)
    async with http.post(f"{stack.base}/developer/tokens", data={"csrf_token": token, "name": "ci"}) as r:
        assert r.status == 200
    token_id = await db.fetchval("SELECT id FROM developer_tokens WHERE user_id = $1", uid)
    secret_before = await db.fetchval("SELECT client_secret_hash FROM oauth_apps WHERE id = $1", app_id)
    for path in (
        f"/developer/apps/{app_id}/secret",
        f"/developer/apps/{app_id}/delete",
        f"/developer/tokens/{token_id}/revoke",
    ):
        # The console's button posts without confirm=1: the answer is the confirm page, nothing done.
        async with http.post(f"{stack.base}{path}", data={"csrf_token": token}, headers={"Accept-Language": "en"}) as r:
            page = await r.text()
        assert r.status == 200 and CONFIRM_RE.search(page) and f'action="{path}"' in page, path
        assert (
            'name="csrf_token"' in page
            and 'href="/developer"' in page
            and "<script>" not in page
            and "onclick" not in page
        )
        async with http.get(f"{stack.base}{path}?lang=zh") as r:  # the same page by a link
            assert r.status == 200 and CONFIRM_RE.search(await r.text()) and "取消" in await r.text()
    confirm_rotate = await (await http.get(f"{stack.base}/developer/apps/{app_id}/secret?lang=en")).text()
    for value, label in (("0", "No grace period"), ("3600", "1 hour"), ("86400", "24 hours")):
        assert f'value="{value}"' in confirm_rotate and label in confirm_rotate
    assert await db.fetchval("SELECT client_secret_hash FROM oauth_apps WHERE id = $1", app_id) == secret_before
    assert await db.fetchval("SELECT revoked_at FROM developer_tokens WHERE id = $1", token_id) is None
    # CSRF is still checked on the confirmed post.
    async with http.post(f"{stack.base}/developer/apps/{app_id}/delete", data={"csrf_token": "x", "confirm": "1"}) as r:
        assert r.status == 403
    assert await db.fetchval("SELECT count(*) FROM oauth_apps WHERE id = $1", app_id) == 1
    async with http.get(f"{stack.base}/developer/apps/999999999/delete") as r:
        assert r.status == 404


async def test_revoking_an_authorization_asks_first(stack: Stack, db: asyncpg.Pool, settings: Settings) -> None:
    owner, _ = await make_developer(db, settings)
    client_id, _ = await make_app(db, settings, owner.id, [CB], name="Confirm me")
    user = await make_user(db, "correct horse battery")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await login(http, stack.base, user.username, "correct horse battery")
        await authorize(http, stack.base, client_id, CB)
        url = f"{stack.base}/user/authorizations/{client_id}/revoke"
        token = await page_csrf(http, f"{stack.base}/user/authorizations")
        async with http.post(url, data={"csrf_token": token}, headers={"Accept-Language": "en"}) as r:
            page = await r.text()
        assert (
            r.status == 200
            and CONFIRM_RE.search(page)
            and "Confirm me" in page
            and "<script>" not in page
            and "onclick" not in page
        )
        async with http.get(url + "?lang=zh") as r:
            assert r.status == 200 and "撤销对“Confirm me”的授权" in await r.text()
        assert await db.fetchval("SELECT count(*) FROM grants WHERE client_id = $1", client_id) == 1
        async with http.post(url, data={"csrf_token": token, "confirm": "1"}, allow_redirects=False) as r:
            assert r.status == 303
        assert await db.fetchval("SELECT count(*) FROM grants WHERE client_id = $1", client_id) == 0


async def _rotate(
    http: aiohttp.ClientSession, base: str, app_id: int, token: str, grace: str
) -> aiohttp.ClientResponse:
    form = {"csrf_token": token, "confirm": "1", "grace_seconds": grace}
    return await http.post(
        f"{base}/developer/apps/{app_id}/secret", data=form, allow_redirects=False, headers={"Accept-Language": "en"}
    )


async def test_rotation_is_post_redirect_get_and_the_secret_shows_once(stack: Stack, browser, db, settings) -> None:  # noqa: F811
    http, name = browser
    _, html = await create_app_via_console(http, stack.base)
    app_id = await db.fetchval("SELECT max(id) FROM oauth_apps WHERE owner_id = $1", await user_id(db, name))
    r = await _rotate(http, stack.base, app_id, csrf_in(html), "3600")
    body = await r.text()
    assert r.status == 303 and r.headers["Location"] == "/developer" and "secret_" not in body
    assert r.headers["Cache-Control"] == "no-store"
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:  # the waiting flash, as a Redis dump would show it
        [flash_key] = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}flash:*")]
        sealed = await redis.get(flash_key)
    finally:
        await redis.aclose()
    async with http.get(f"{stack.base}/developer?lang=en") as got:
        page = await got.text()
    secret = SECRET_RE.search(page).group(1)
    assert secret not in str(got.url) and "keeps working until" in page and f'id="previous-secret-{app_id}"' in page
    assert sealed and secret.encode() not in sealed and b"secret_" not in sealed  # sealed with the cookie's key
    async with http.get(f"{stack.base}/developer") as again:  # a reload: shown once only
        assert secret not in await again.text()


async def test_console_grace_values_other_than_the_three_mean_none(stack: Stack, browser, db) -> None:  # noqa: F811
    http, name = browser
    _, html = await create_app_via_console(http, stack.base)
    app_id = await db.fetchval("SELECT max(id) FROM oauth_apps WHERE owner_id = $1", await user_id(db, name))
    for value in ("²", "3600.0", "-1", "99999999999999999999", "\x00", ""):
        r = await _rotate(http, stack.base, app_id, csrf_in(html), value)
        assert r.status == 303, value
        r.release()
        assert await db.fetchval("SELECT previous_secret_hash FROM oauth_apps WHERE id = $1", app_id) is None, value


async def test_grace_period_old_secret_works_until_expiry(stack: Stack, http, db, settings) -> None:
    owner, _ = await make_developer(db, settings)
    client_id, old = await make_app(db, settings, owner.id, [CB])
    assert old
    assert await client_auth_status(http, stack.base, client_id, old) == 200  # cached in the token service
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser_http:
        await login(browser_http, stack.base, owner.username, "correct horse battery")
        token = await page_csrf(browser_http, f"{stack.base}/developer")
        app_id = await db.fetchval("SELECT id FROM oauth_apps WHERE client_id = $1", client_id)
        (await _rotate(browser_http, stack.base, app_id, token, "3600")).release()
        async with browser_http.get(f"{stack.base}/developer") as r:
            new = SECRET_RE.search(await r.text()).group(1)
    row = await db.fetchrow(
        "SELECT previous_secret_hash, previous_secret_expires_at - now() AS left FROM oauth_apps WHERE id = $1", app_id
    )
    assert row["previous_secret_hash"] is not None and 3500 < row["left"].total_seconds() <= 3600
    assert await until_status(lambda: client_auth_status(http, stack.base, client_id, new), 200) == 200
    assert await client_auth_status(http, stack.base, client_id, old) == 200
    assert await revoke_status(http, stack.base, client_id, old) == 200
    # Near the end of the grace period (moved closer in the table: waiting an hour is no test).
    await end_previous_secret_in(db, app_id, 2)
    async with db.acquire() as conn:  # as an edit would: the instances drop their cached copy
        await outbox.enqueue(conn, ClientUpdated(app_id=app_id, client_id=client_id, change="updated"))
    assert await client_auth_status(http, stack.base, client_id, old) == 200
    await asyncio.sleep(2.2)
    assert await client_auth_status(http, stack.base, client_id, old) == 401
    assert await revoke_status(http, stack.base, client_id, old) == 401
    assert await client_auth_status(http, stack.base, client_id, new) == 200


async def test_no_grace_period_stops_the_old_secret_at_once(stack: Stack, http, db, settings) -> None:
    owner, dev_token = await make_developer(db, settings)
    client_id, old = await make_app(db, settings, owner.id, [CB])
    assert old and await client_auth_status(http, stack.base, client_id, old) == 200
    app_id = await db.fetchval("SELECT id FROM oauth_apps WHERE client_id = $1", client_id)
    headers = {"Authorization": f"Bearer {dev_token}"}
    async with http.post(
        f"{stack.base}/api/oauth_apps/{app_id}/secret", json={"grace_seconds": 0}, headers=headers
    ) as r:
        body = await r.json()
    assert r.status == 200 and body["data"]["previous_secret_expires_time"] is None
    new = body["data"]["client_secret"]
    assert await until_status(lambda: client_auth_status(http, stack.base, client_id, old), 401) == 401
    assert await client_auth_status(http, stack.base, client_id, new) == 200
    assert await db.fetchval("SELECT previous_secret_hash FROM oauth_apps WHERE id = $1", app_id) is None


async def test_api_rotation_with_grace_and_bad_values(stack: Stack, http, db, settings) -> None:
    owner, dev_token = await make_developer(db, settings)
    client_id, old = await make_app(db, settings, owner.id, [CB])
    app_id = await db.fetchval("SELECT id FROM oauth_apps WHERE client_id = $1", client_id)
    headers = {"Authorization": f"Bearer {dev_token}"}
    url = f"{stack.base}/api/oauth_apps/{app_id}/secret"
    for bad in (5, "3600", True, None, -1, 10**20):
        async with http.post(url, json={"grace_seconds": bad}, headers=headers) as r:
            assert (r.status, (await r.json())["success"]) == ((400, False) if bad is not None else (200, True)), bad
    async with http.post(url, json={"grace": 3600}, headers=headers) as r:
        assert r.status == 400
    async with http.post(url, json={"grace_seconds": 86400}, headers=headers) as r:
        data = (await r.json())["data"]
    assert r.status == 200 and data["previous_secret_expires_time"] is not None
    async with http.get(f"{stack.base}/api/oauth_apps/{app_id}", headers=headers) as r:
        shown = (await r.json())["data"]
    assert abs(shown["previous_secret_expires_time"] - data["previous_secret_expires_time"]) <= 1
    assert "client_secret" not in shown
    assert (
        await until_status(lambda: client_auth_status(http, stack.base, client_id, data["client_secret"]), 200) == 200
    )
