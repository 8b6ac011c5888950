"""The integration guide's steps 1-4, end to end over HTTP, the way a browser and a third-party
backend see them: the real platform (all four services behind the gateway, on 127.0.0.1) and the
guide's example app (examples/third_party_app, on localhost) in one cookie jar, every redirect
followed hop by hop.

(a) one-click login through the example app (steps 1-4 + FAQ Q1), profile, userinfo, top-up;
(b) the consent path as a third-party backend does it (step 2 without auto_authorize, API
    sections 2-3: code exchange and refresh with the guide's exact parameters), grants, deny;
(c) the example app's token refresh (FAQ Q2) against the real platform: before expiry and after 401.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from yarl import URL

from libs.platform.config import Settings
from libs.platform.security import token_hash
from services.account import store as account_store
from services.account.topup import create_codes
from services.account.users import User
from tests.support.clock import age_refresh_token_use, expire_refresh_token
from tests.support.codes import post_token
from tests.support.e2e import (
    GUIDE_APP_NAME,
    GUIDE_TOKEN_FIELDS,
    GUIDE_USERINFO_FIELDS,
    ExampleApp,
    Page,
    browse,
    developer_token_over_http,
    example_app,
    find_form,
    new_browser,
    query_of,
    submit,
)
from tests.support.factories import make_user
from tests.support.oauth import login
from tests.support.stack import Stack

PASSWORD = "correct horse battery"
QUOTA, USED = 1_000_000, 250_000  # the guide's userinfo example: balance "750.00"
INT_FIELDS = ("id", "quota", "used_quota", "created_time", "status")


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
async def developer_token(stack: Stack, db: asyncpg.Pool) -> str:
    """Guide "1. 注册开发者账户": a platform user who got a developer token over HTTP."""
    dev = await make_user(db, PASSWORD)
    return await developer_token_over_http(stack.base, dev.username, PASSWORD)


@pytest.fixture
async def example(stack: Stack, developer_token: str, db: asyncpg.Pool) -> AsyncIterator[ExampleApp]:
    """Guide "2. 创建 OAuth 应用" + the example app serving it on http://localhost:<free port>,
    verified by the operator (as `make run` verifies its example app; docs/operations.md "App
    verification"). test_an_unverified_app_asks_once_then_one_click_skips covers a fresh app."""
    async with example_app(stack.base, developer_token, verify_with=db) as app:
        yield app


@pytest.fixture
async def user(db: asyncpg.Pool) -> User:
    """A platform user with a known password and the guide's example balance (750.00)."""
    u = await make_user(db, PASSWORD)
    await account_store.set_balance(db, u.id, QUOTA, USED)
    return u


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_browser() as http:
        yield http


@pytest.fixture
async def backend() -> AsyncIterator[aiohttp.ClientSession]:
    """The third-party app's server talking to the platform: no cookies at all."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        yield http


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(settings.redis_url)
    yield r
    await r.aclose()


# --- helpers --------------------------------------------------------------------------------------
def balance_of(html: str) -> str:
    start = html.find('id="balance">')
    assert start >= 0, f"no #balance on the page: {html[:800]}"
    start += len('id="balance">')
    return html[start : html.index("<", start)].strip()


def expected_userinfo(user: User, quota: int = QUOTA, used: int = USED) -> dict[str, object]:
    return {
        "id": user.id,
        "sub": str(user.id),
        "username": user.username,
        "email": user.email,
        "quota": quota,
        "used_quota": used,
        "balance_formatted": f"{(quota - used) // 1000}.{(quota - used) % 1000 // 10:02d}",
        "status": 1,
    }


def assert_guide_userinfo(info: dict, user: User, quota: int = QUOTA, used: int = USED) -> None:
    assert set(info) == GUIDE_USERINFO_FIELDS, f"userinfo fields differ from the guide's: {sorted(info)}"
    for name in INT_FIELDS:
        assert type(info[name]) is int, f"{name} must be an integer, got {info[name]!r}"
    assert {k: v for k, v in info.items() if k != "created_time"} == expected_userinfo(user, quota, used)
    assert abs(info["created_time"] - time.time()) < 600, info["created_time"]


async def example_userinfo(http: aiohttp.ClientSession, example: ExampleApp) -> tuple[int, dict]:
    async with http.get(f"{example.base}/api/user/info") as r:
        return r.status, await r.json(content_type=None)


async def platform_userinfo(http: aiohttp.ClientSession, base: str, access_token: str) -> tuple[int, dict]:
    async with http.get(f"{base}/api/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"}) as r:
        return r.status, await r.json(content_type=None)


async def one_click_login(http: aiohttp.ClientSession, stack: Stack, example: ExampleApp, user: User) -> Page:
    """Steps 1-3 in a browser that is not logged in anywhere yet: example /auth/oauth/start ->
    platform authorize -> login page -> POST login -> authorize again -> (auto_authorize) ->
    example /oauth/callback (server-side code exchange) -> /?login=success."""
    page = await browse(http, f"{example.base}/auth/oauth/start")
    assert page.status == 200 and page.url.startswith(f"{stack.base}/login?"), page.chain()
    authorize = query_of(page.hop_to(f"{stack.base}/api/oauth2/authorize?").url)
    # Step 2's parameters, plus PKCE (the example app's hardening), never the secret.
    assert authorize["client_id"] == example.client_id
    assert authorize["redirect_uri"] == example.redirect_uri
    assert authorize["response_type"] == "code" and authorize["scope"] == "profile balance"
    assert authorize["auto_authorize"] == "true" and len(authorize["state"]) >= 32
    assert authorize["code_challenge_method"] == "S256" and authorize["code_challenge"]
    assert example.client_secret not in page.chain()

    form = find_form(page.text, "/login")
    assert form.fields["next"].startswith("/api/oauth2/authorize?"), form.fields
    page = await submit(http, page, form, username=user.username, password=PASSWORD)
    assert page.url == f"{example.base}/?login=success", page.chain()
    methods_urls = [(h.method, h.url.split("?")[0]) for h in page.hops]
    assert methods_urls == [
        ("POST", f"{stack.base}/login"),
        ("GET", f"{stack.base}/api/oauth2/authorize"),
        ("GET", example.redirect_uri),
        ("GET", f"{example.base}/"),
    ], page.chain()  # one click: no consent page in between
    callback = query_of(page.hops[2].url)
    assert callback["state"] == authorize["state"] and callback["code"], callback
    assert callback["iss"] == stack.base, callback  # RFC 9207
    assert "error" not in callback
    return page


# --- (a) one-click login, profile, userinfo, top-up -----------------------------------------------
async def test_one_click_login_profile_userinfo_and_topup(
    stack: Stack, example: ExampleApp, user: User, browser: aiohttp.ClientSession, db, settings
) -> None:
    # Step 1: the logged-out page offers the one-click login.
    page = await browse(browser, f"{example.base}/")
    assert page.status == 200 and 'href="/auth/oauth/start"' in page.text and "一键登录" in page.text

    page = await one_click_login(browser, stack, example, user)
    assert page.status == 200 and "登录成功" in page.text
    assert f'id="username">{user.username}<' in page.text, page.text
    assert f'id="email">{user.email}<' in page.text
    assert balance_of(page.text) == "750.00"

    # The two sites' cookies stay apart; the browser holds no token, only the example's session id.
    example_cookies = browser.cookie_jar.filter_cookies(URL(f"{example.base}/"))
    platform_cookies = browser.cookie_jar.filter_cookies(URL(f"{stack.base}/"))
    assert set(example_cookies) == {"example_sid"}, set(example_cookies)
    assert "sid" in platform_cookies and "example_sid" not in platform_cookies, set(platform_cookies)
    session = example.session_of(browser)
    assert session.access_token and session.refresh_token and session.refresh_token.startswith("refresh_")
    assert session.oauth_state is None and session.code_verifier is None  # single use
    for secret in (example.client_secret, session.access_token, session.refresh_token):
        assert secret not in page.text and secret not in page.chain()

    # Step 4: the example's backend proxy returns exactly the guide's userinfo, integers for money.
    status, info = await example_userinfo(browser, example)
    assert status == 200, info
    assert_guide_userinfo(info, user)
    status, direct = await platform_userinfo(browser, stack.base, session.access_token)
    assert status == 200 and direct == info

    # 账户充值: the example app sends the browser to the platform's top-up page (already logged in).
    page = await browse(browser, f"{example.base}/topup")
    topup_url = page.hops[0].location or ""
    assert topup_url.startswith(f"{settings.public_base_url}/user/topup?"), page.chain()
    assert query_of(topup_url) == {"from": example.client_id}
    assert page.status == 200 and page.url == topup_url, page.chain()
    assert balance_of(page.text) == "$750.00"

    code = (await create_codes(db, settings.pepper_bytes, 50_000))[0]
    form = find_form(page.text, "/user/topup")
    assert form.fields.get("csrf_token"), form.fields
    page = await submit(browser, page, form, code=code)
    assert page.status == 200 and 'id="success"' in page.text, page.text[:1500]
    assert balance_of(page.text) == "$800.00"

    # The new balance, through the example app (JSON proxy and the page's 刷新余额).
    status, info = await example_userinfo(browser, example)
    assert status == 200, info
    assert_guide_userinfo(info, user, quota=QUOTA + 50_000)
    assert info["balance_formatted"] == "800.00"
    page = await browse(browser, f"{example.base}/?refresh=1")
    assert page.status == 200 and balance_of(page.text) == "800.00" and "余额已更新" in page.text

    # 退出登录 (POST with the page's CSRF token): back to the login button, the proxy says 401.
    page = await submit(browser, page, find_form(page.text, "/logout"))
    assert page.url == f"{example.base}/?logout=1" and "已退出登录" in page.text and "一键登录" in page.text
    status, body = await example_userinfo(browser, example)
    assert status == 401 and body == {"error": "Not authenticated"}

    # 一键登录 again: still logged in at the platform, so no login page and no consent, just back.
    page = await browse(browser, f"{example.base}/auth/oauth/start")
    assert page.url == f"{example.base}/?login=success", page.chain()
    assert [h.url.split("?")[0] for h in page.hops] == [
        f"{example.base}/auth/oauth/start",
        f"{stack.base}/api/oauth2/authorize",
        example.redirect_uri,
        f"{example.base}/",
    ], page.chain()
    assert balance_of(page.text) == "800.00"


async def test_logout_revokes_the_refresh_token_at_the_platform(
    stack: Stack, example: ExampleApp, user: User, browser: aiohttp.ClientSession, backend
) -> None:
    """The example app's logout revokes its refresh token with RFC 7009 (a standard beyond
    the guide); afterwards the platform must refuse that refresh token."""
    page = await one_click_login(browser, stack, example, user)
    refresh_token = example.session_of(browser).refresh_token
    assert refresh_token
    page = await submit(browser, page, find_form(page.text, "/logout"))
    assert page.url == f"{example.base}/?logout=1", page.chain()

    status, _, body = await post_token(backend, stack.base, guide_refresh_form(example, refresh_token))
    if status != 400:
        # Why: ask the revocation endpoint the example app called (RFC 7009 2.2: 200 even for unknown tokens).
        probe = {"token": "refresh_unknown", "client_id": example.client_id, "client_secret": example.client_secret}
        async with backend.post(f"{stack.base}/api/oauth2/revoke", data=probe) as r:
            revoke = f"POST /api/oauth2/revoke answers {r.status} {(await r.text())[:120]}"
        pytest.fail(f"the refresh token still works after the example app's logout ({status}); {revoke}")
    assert body.get("error") == "invalid_grant", body


# --- (b) the consent path, as a third-party backend does it ----------------------------------------
def guide_authorize_url(stack: Stack, example: ExampleApp, state: str) -> str:
    """Guide step 2's authorize URL without auto_authorize."""
    params = {
        "client_id": example.client_id,
        "redirect_uri": example.redirect_uri,
        "response_type": "code",
        "scope": "profile balance",
        "state": state,
    }
    return f"{stack.base}/api/oauth2/authorize?{urlencode(params)}"


def guide_code_form(example: ExampleApp, code: str) -> dict[str, str]:
    """API section 2, 授权码模式参数, exactly."""
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": example.redirect_uri,
        "client_id": example.client_id,
        "client_secret": example.client_secret,
    }


def guide_refresh_form(example: ExampleApp, refresh_token: str) -> dict[str, str]:
    """API section 2, 刷新令牌参数, exactly."""
    return {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": example.client_id,
        "client_secret": example.client_secret,
    }


def assert_guide_token_response(status: int, headers: dict[str, str], body: dict) -> None:
    assert status == 200, (status, body)
    assert set(body) == GUIDE_TOKEN_FIELDS, f"token response fields differ from the guide's: {sorted(body)}"
    assert body["token_type"] == "Bearer"
    assert type(body["expires_in"]) is int and body["expires_in"] == 7200
    assert body["refresh_token"].startswith("refresh_")
    assert body["scope"] == "profile balance"
    assert body["access_token"].count(".") == 2  # a JWT
    assert "no-store" in headers.get("Cache-Control", ""), headers


def to_example(example: ExampleApp) -> Callable[[str], bool]:
    """A ``browse(stop=...)`` predicate: do not follow the redirect into the example app."""
    return lambda url: url.startswith(example.base)


async def consent_page(http: aiohttp.ClientSession, stack: Stack, example: ExampleApp, state: str) -> Page:
    page = await browse(http, guide_authorize_url(stack, example, state), stop=to_example(example))
    assert page.stopped_at is None and page.status == 200, f"expected the consent page: {page.chain()}"
    assert page.url.startswith(f"{stack.base}/api/oauth2/authorize?")
    return page


async def test_consent_token_exchange_userinfo_and_refresh_with_the_guides_parameters(
    stack: Stack, example: ExampleApp, user: User, browser, backend, db, settings
) -> None:
    await login(browser, stack.base, user.username, PASSWORD)

    # No auto_authorize and no grant yet: the consent page, with the app's name and the scopes in words.
    page = await consent_page(browser, stack, example, "state-1")
    assert GUIDE_APP_NAME in page.text and user.username in page.text
    assert "你的用户名" in page.text and "你的账户余额" in page.text, page.text[:2000]
    form = find_form(page.text, "/consent")
    assert ("decision", "allow") in form.buttons and ("decision", "deny") in form.buttons, form.buttons
    page = await submit(browser, page, form, button=("decision", "allow"), stop=to_example(example))
    callback = page.stopped_at or ""
    assert callback.startswith(f"{example.redirect_uri}?"), page.chain()
    q = query_of(callback)
    assert q["state"] == "state-1" and q["iss"] == stack.base and q["code"], q

    # Step 3 on the backend: the guide's exact form.
    status, headers, first = await post_token(backend, stack.base, guide_code_form(example, q["code"]))
    assert_guide_token_response(status, headers, first)
    status, info = await platform_userinfo(backend, stack.base, first["access_token"])
    assert status == 200, info
    assert_guide_userinfo(info, user)

    # A second authorize for the same scopes: the grant is remembered, no consent page.
    page = await browse(browser, guide_authorize_url(stack, example, "state-2"), stop=to_example(example))
    assert page.stopped_at and page.stopped_at.startswith(f"{example.redirect_uri}?"), page.chain()
    q2 = query_of(page.stopped_at)
    assert q2["state"] == "state-2" and q2["code"] and q2["code"] != q["code"], q2
    status, headers, other = await post_token(backend, stack.base, guide_code_form(example, q2["code"]))
    assert_guide_token_response(status, headers, other)

    # Refresh with the guide's refresh parameters: a new pair.
    status, headers, second = await post_token(backend, stack.base, guide_refresh_form(example, first["refresh_token"]))
    assert_guide_token_response(status, headers, second)
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    status, info = await platform_userinfo(backend, stack.base, second["access_token"])
    assert status == 200 and info["id"] == user.id, info

    # Within the grace window a retry of the old refresh token gets the same pair (two tabs).
    status, _, again = await post_token(backend, stack.base, guide_refresh_form(example, first["refresh_token"]))
    assert status == 200 and again == second, (status, again)

    # After the grace window the old refresh token fails, and the reuse revokes its family.
    assert await age_refresh_token_use(db, settings, first["refresh_token"], 3600) == "UPDATE 1"
    status, _, body = await post_token(backend, stack.base, guide_refresh_form(example, first["refresh_token"]))
    assert status == 400 and body["error"] == "invalid_grant", (status, body)
    status, body = await platform_userinfo(backend, stack.base, second["access_token"])
    assert status == 401 and body["error"] == "invalid_token", (status, body)
    status, _, body = await post_token(backend, stack.base, guide_refresh_form(example, second["refresh_token"]))
    assert status == 400 and body["error"] == "invalid_grant", (status, body)

    # Tokens from the other code (another family) are untouched.
    status, info = await platform_userinfo(backend, stack.base, other["access_token"])
    assert status == 200 and info["id"] == user.id, info
    status, headers, third = await post_token(backend, stack.base, guide_refresh_form(example, other["refresh_token"]))
    assert_guide_token_response(status, headers, third)

    # A code is single use.
    status, _, body = await post_token(backend, stack.base, guide_code_form(example, q2["code"]))
    assert status == 400 and body["error"] == "invalid_grant", (status, body)


async def test_deny_reaches_the_example_app_as_access_denied(
    stack: Stack, example: ExampleApp, user: User, browser
) -> None:
    await login(browser, stack.base, user.username, PASSWORD)
    page = await consent_page(browser, stack, example, "deny-state")
    page = await submit(browser, page, find_form(page.text, "/consent"), button=("decision", "deny"))
    callback = page.hop_to(example.redirect_uri)
    q = query_of(callback.url)
    assert q["error"] == "access_denied" and q["state"] == "deny-state" and "code" not in q, q
    assert page.url == f"{example.base}/?error=access_denied", page.chain()
    assert page.status == 200 and "您拒绝了授权" in page.text and "一键登录" in page.text


async def test_consent_then_deny_through_the_example_app_when_auto_authorize_is_off(
    stack: Stack, example: ExampleApp, user: User, browser, db
) -> None:
    """The operator's per-app switch turns one-click login off: the example's own flow (its state,
    PKCE) meets the consent page; 拒绝 comes back to its callback as access_denied."""
    await account_store.set_app_auto_authorize(db, example.client_id, False)
    page = await browse(browser, f"{example.base}/auth/oauth/start")
    form = find_form(page.text, "/login")
    page = await submit(browser, page, form, username=user.username, password=PASSWORD)
    assert page.status == 200 and page.url.startswith(f"{stack.base}/api/oauth2/authorize?"), page.chain()
    assert GUIDE_APP_NAME in page.text and "账户余额" in page.text
    state = query_of(page.url)["state"]

    page = await submit(browser, page, find_form(page.text, "/consent"), button=("decision", "deny"))
    q = query_of(page.hop_to(example.redirect_uri).url)
    assert q["error"] == "access_denied" and q["state"] == state, q
    assert page.url == f"{example.base}/?error=access_denied" and "您拒绝了授权" in page.text, page.chain()
    status, body = await example_userinfo(browser, example)
    assert status == 401 and body == {"error": "Not authenticated"}


async def test_an_unverified_app_asks_once_then_one_click_skips(
    stack: Stack, developer_token: str, user: User, browser
) -> None:
    """A freshly self-registered app (not verified by the operator): its first one-click login shows
    the consent page with the "not verified" note; 允许 comes back to the example app logged in;
    from then on its one-click logins skip the page, as the guide promises."""
    async with example_app(stack.base, developer_token) as fresh:
        page = await browse(browser, f"{fresh.base}/auth/oauth/start")
        page = await submit(browser, page, find_form(page.text, "/login"), username=user.username, password=PASSWORD)
        assert page.status == 200 and page.url.startswith(f"{stack.base}/api/oauth2/authorize?"), page.chain()
        assert "平台尚未核实该应用的开发者" in page.text and GUIDE_APP_NAME in page.text
        page = await submit(browser, page, find_form(page.text, "/consent"), button=("decision", "allow"))
        assert page.url == f"{fresh.base}/?login=success", page.chain()
        # a new session at the example app: one click now goes straight back, no page in between
        browser.cookie_jar.clear(lambda c: c.key == "example_sid")
        page = await browse(browser, f"{fresh.base}/auth/oauth/start")
        assert page.url == f"{fresh.base}/?login=success", page.chain()
        urls = [h.url.split("?")[0] for h in page.hops]
        authorize_at = urls.index(f"{stack.base}/api/oauth2/authorize")
        assert urls[authorize_at + 1] == fresh.redirect_uri, page.chain()


# --- (c) the example app's refresh against the real platform (guide FAQ Q2) ------------------------
async def test_example_app_refreshes_before_expiry_and_after_401(
    stack: Stack, example: ExampleApp, user: User, browser, backend, db, settings, redis
) -> None:
    await one_click_login(browser, stack, example, user)
    session = example.session_of(browser)
    first_at, first_rt = session.access_token, session.refresh_token
    assert first_at and first_rt and session.token_expires_at
    assert 7100 < session.token_expires_at - time.time() <= 7200

    async def used_at(refresh_token: str) -> object:
        return await db.fetchval(
            "SELECT used_at FROM refresh_tokens WHERE token_hash = $1", token_hash(settings.pepper_bytes, refresh_token)
        )

    # 1. Less than 5 minutes left: /api/user/info refreshes first, then answers.
    session.token_expires_at = time.time() + 60
    status, info = await example_userinfo(browser, example)
    assert status == 200, info
    assert_guide_userinfo(info, user)
    second_at, second_rt = session.access_token, session.refresh_token
    assert second_at and second_at != first_at and second_rt and second_rt != first_rt
    assert await used_at(first_rt) is not None and await used_at(second_rt) is None  # rotated at the platform
    assert session.token_expires_at and session.token_expires_at - time.time() > 7100

    async def revoke_access_token(token: str) -> None:  # RFC 7009, as the app's backend would
        form = {
            "token": token,
            "token_type_hint": "access_token",
            "client_id": example.client_id,
            "client_secret": example.client_secret,
        }
        async with backend.post(f"{stack.base}/api/oauth2/revoke", data=form) as r:
            assert r.status == 200, await r.text()

    # 2. The platform rejects the access token (revoked): a 401, one transparent refresh, still 200.
    await revoke_access_token(second_at)
    status, body = await platform_userinfo(backend, stack.base, second_at)
    assert status == 401 and body["error"] == "invalid_token", body
    status, info = await example_userinfo(browser, example)
    assert status == 200, info
    assert_guide_userinfo(info, user)
    third_at, third_rt = session.access_token, session.refresh_token
    assert third_at and third_at != second_at and third_rt and third_rt != second_rt
    assert await used_at(second_rt) is not None
    page = await browse(browser, f"{example.base}/")
    assert f'id="username">{user.username}<' in page.text and balance_of(page.text) == "750.00"

    # 3. The refresh token has expired too (FAQ Q2: only then log in again): 401, tokens dropped.
    await revoke_access_token(third_at)
    await expire_refresh_token(db, settings, third_rt)
    status, body = await example_userinfo(browser, example)
    assert status == 401 and body == {"error": "Not authenticated"}, (status, body)
    assert session.access_token is None and session.refresh_token is None
    page = await browse(browser, f"{example.base}/")
    assert "一键登录" in page.text and 'id="balance"' not in page.text
