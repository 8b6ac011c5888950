"""The guide's browser SDK page in headless Chromium (Playwright), and CORS as a real browser enforces it.

The SDK page (examples/third_party_app serves the guide's HTML verbatim at /sdk/, with authServer,
clientId and clientSecret filled in) runs on http://localhost:<port>, an origin registered through
the developer API as the app's redirect URI (/oauth/callback.html). The platform is another origin
(http://127.0.0.1:<gateway port>), so every call the page makes is cross-origin: 一键登录 opens the
authorize endpoint in a popup, the user logs in there, callback.html hands the code to the opener,
and the page's own JavaScript exchanges it at the token endpoint and reads userinfo with a Bearer
header (a preflighted request) before showing the balance. The same fetches from an origin that is
not registered fail in the browser, and the authorize endpoint is never readable cross-origin.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from examples.third_party_app.app import Config, build_app
from libs.platform.config import Settings
from oauthctl.deps import chromium_path
from services.account import store as account_store
from services.account.apps import set_verified
from tests.support.factories import make_developer, make_user
from tests.support.stack import Stack, free_port

CHROMIUM = chromium_path()  # tests/browser/conftest.py skips or fails the tests without it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 15_000
PASSWORD = "correct horse battery"

FETCH_JS = """async ([url, headers]) => {
    try {
        const r = await fetch(url, {headers});
        return 'status ' + r.status;
    } catch (e) {
        return e.name;  // TypeError: the browser refused to expose the response (CORS)
    }
}"""


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture(scope="module")
async def sdk_site(stack: Stack, db: asyncpg.Pool, settings: Settings) -> AsyncIterator[dict[str, str]]:
    """An app registered through the developer API for http://localhost:<port>/oauth/callback.html,
    and the guide's example app serving the SDK page on that port."""
    _, developer_token = await make_developer(db, settings)
    port = free_port()
    base = f"http://localhost:{port}"
    callback = f"{base}/oauth/callback.html"
    body = {"name": "我的第三方应用", "description": "应用描述信息", "redirect_uri": callback}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{stack.base}/api/oauth_apps", json=body, headers={"Authorization": f"Bearer {developer_token}"}
        ) as r,
    ):
        created = (await r.json())["data"]
        assert r.status == 200, created
    async with db.acquire() as conn:  # verified by the operator, so one-click login skips consent
        await set_verified(conn, created["client_id"], True)
    config = Config(
        oauth_server=stack.base,
        client_id=created["client_id"],
        client_secret=created["client_secret"],
        redirect_uri=callback,
        port=port,
        host="127.0.0.1",
    )
    runner = web.AppRunner(build_app(config), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield {"base": base, "other_origin": f"http://127.0.0.1:{port}", "client_id": created["client_id"]}
    finally:
        await runner.cleanup()


async def test_sdk_popup_one_click_login_shows_the_balance(
    chromium: Any, stack: Stack, db: asyncpg.Pool, sdk_site: dict[str, str]
) -> None:
    from playwright.async_api import expect

    user = await make_user(db, PASSWORD)
    await account_store.set_balance(db, user.id, 1000000, 250000)
    context = await chromium.new_context(locale="zh-CN")
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    platform_responses: list[Any] = []
    page.on("response", lambda r: platform_responses.append(r) if r.url.startswith(stack.base) else None)
    try:
        await page.goto(f"{sdk_site['base']}/sdk/")
        await expect(page.locator("#login-section")).to_be_visible()

        async with page.expect_popup() as popup_info:
            await page.get_by_role("button", name=re.compile("一键登录")).click()
        popup = await popup_info.value
        # The popup is on the platform's origin: its login page, then back through authorize.
        await expect(popup).to_have_url(re.compile(f"^{re.escape(stack.base)}/login\\?"))
        await popup.fill("#username", user.username)
        await popup.fill("#password", PASSWORD)
        await popup.click('form[action="/login"] button[type="submit"]')

        # callback.html sent the opener to /sdk/?code=...; the page exchanged the code itself.
        await expect(page.locator("#balance")).to_have_text("750.00")
        await expect(page.locator("#username")).to_have_text(user.username)
        await expect(page.locator("#email")).to_have_text(user.email)
        await expect(page).to_have_url(f"{sdk_site['base']}/sdk/")  # the SDK cleaned the code from the URL
        assert popup.is_closed()
        stored = await page.evaluate("() => localStorage.getItem('oauth_refresh_token')")
        assert stored and stored.startswith("refresh_")

        # The page really called the platform cross-origin, and the platform allowed exactly this origin.
        seen = {}
        for response in platform_responses:
            path = response.url.removeprefix(stack.base).split("?")[0]
            seen[(response.request.method, path)] = (response.status, await response.all_headers())
        for key in (("POST", "/api/oauth2/token"), ("GET", "/api/oauth2/userinfo")):
            assert key in seen, list(seen)
            status, headers = seen[key]
            assert status == 200, (key, status)
            assert headers.get("access-control-allow-origin") == sdk_site["base"], (key, headers)
            assert "access-control-allow-credentials" not in headers
        assert not errors, errors
    finally:
        await context.close()


async def test_the_browser_enforces_cors(chromium: Any, stack: Stack, sdk_site: dict[str, str]) -> None:
    context = await chromium.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        registered = await context.new_page()
        await registered.goto(f"{sdk_site['base']}/sdk/")
        unregistered = await context.new_page()
        await unregistered.goto(f"{sdk_site['other_origin']}/sdk/")  # same server, another origin

        userinfo = [f"{stack.base}/api/oauth2/userinfo", {"Authorization": "Bearer not-a-token"}]
        # Registered origin: the preflight passes and the 401 is readable by the page.
        assert await registered.evaluate(FETCH_JS, userinfo) == "status 401"
        # Not registered: the browser refuses (preflight answered 403 without CORS headers).
        assert await unregistered.evaluate(FETCH_JS, userinfo) == "TypeError"
        # A simple request (no preflight) still cannot be read without Access-Control-Allow-Origin.
        jwks = [f"{stack.base}/api/oauth2/jwks", {}]
        assert await registered.evaluate(FETCH_JS, jwks) == "status 200"
        assert await unregistered.evaluate(FETCH_JS, jwks) == "TypeError"
        # The authorize endpoint never answers CORS, whoever asks.
        authorize = [
            f"{stack.base}/api/oauth2/authorize?client_id={sdk_site['client_id']}&response_type=code&state=s"
            f"&redirect_uri={sdk_site['base']}/oauth/callback.html&prompt=none",
            {},
        ]
        assert await registered.evaluate(FETCH_JS, authorize) == "TypeError"
    finally:
        await context.close()
