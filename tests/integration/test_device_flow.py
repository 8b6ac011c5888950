"""The device authorization grant (RFC 8628; docs/device.md) through the gateway, against the real
stack: the device authorization endpoint (client authentication as at the token endpoint, the
app's permission, scopes), every poll answer (authorization_pending, slow_down with the interval
kept server-side, expired_token, access_denied, single use, another client's code), the /device
page (login with return, zh/en, case- and dash-insensitive codes, CSRF, guess limits per session
and per IP), the consent page shared with the browser flow, and the tokens as ordinary families
(refresh rotation, reuse detection, revocation from the user center). Authlib completes the flow
as a client library we did not write."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from libs.contracts.authz import delete_user_consents
from libs.oauth.user_codes import ALPHABET, normalize
from libs.oauth.vocabulary import DEVICE_CODE_GRANT, UserStatus
from libs.platform.config import Settings
from libs.platform.redis import key
from libs.platform.security import token_hash
from services.account import store as account_store
from services.authz.store import consent_records
from tests.support.codes import ClientApp, refresh_form, refresh_status, userinfo_status
from tests.support.device import (
    DEVICE_GRANT_TYPES,
    answer,
    client_form,
    device_app,
    device_authorization,
    enter_code,
    poll,
)
from tests.support.factories import make_developer, make_user
from tests.support.oauth import REQUEST_RE, csrf_from, form_value, login
from tests.support.stack import Stack

PASSWORD = "correct horse battery"
USER_CODE_RE = re.compile(f"^[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}$")


@pytest.fixture
async def public_app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await device_app(db, settings, method="none")


@pytest.fixture
async def browser(http: aiohttp.ClientSession, stack: Stack, db: asyncpg.Pool) -> aiohttp.ClientSession:
    """A user's browser, signed in on the platform."""
    user = await make_user(db, PASSWORD)
    await login(http, stack.base, user.username, PASSWORD)
    return http


@pytest.fixture
async def clean_guess_limits(settings: Settings) -> AsyncIterator[None]:
    """The whole suite comes from 127.0.0.1: drop the guess counts this test leaves behind."""
    yield
    client = aioredis.Redis.from_url(settings.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=key(settings, "devicefail", "*"))]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def start(http: aiohttp.ClientSession, stack: Stack, app: ClientApp, **extra: str) -> dict:
    status, headers, body = await device_authorization(http, stack.base, client_form(app, **extra))
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    return body


def assert_oauth_error(status: int, body: dict, want_status: int, error: str) -> None:
    assert (status, body.get("error")) == (want_status, error), body
    assert "access_token" not in body


# --- discovery ---------------------------------------------------------------------------------------
async def test_discovery_lists_the_endpoint_and_the_grant(stack: Stack, http, settings: Settings) -> None:
    async with http.get(f"{stack.base}/.well-known/openid-configuration") as r:
        doc = await r.json()
    assert doc["device_authorization_endpoint"] == settings.public_base_url + "/api/oauth2/device_authorization"
    assert DEVICE_CODE_GRANT in doc["grant_types_supported"]


# --- the device authorization endpoint ----------------------------------------------------------------
async def test_public_client_gets_codes(stack: Stack, http, db, settings: Settings, public_app) -> None:
    body = await start(http, stack, public_app, scope="openid profile")
    assert set(body) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert USER_CODE_RE.match(body["user_code"]), body["user_code"]
    assert body["verification_uri"] == settings.public_base_url + "/device"
    assert body["verification_uri_complete"] == f"{settings.public_base_url}/device?user_code={body['user_code']}"
    assert body["expires_in"] == settings.device_code_ttl_seconds
    assert body["interval"] == settings.device_poll_interval_seconds
    # Stored only as keyed hashes: neither code appears in the row.
    row = await db.fetchrow(
        "SELECT * FROM device_codes WHERE device_code_hash = $1",
        token_hash(settings.pepper_bytes, body["device_code"]),
    )
    assert row is not None and row["status"] == "pending" and row["scope"] == "openid profile"
    normal = normalize(body["user_code"])
    assert normal is not None and row["user_code_hash"] == token_hash(settings.pepper_bytes, normal)
    stored = " ".join(str(v) for v in dict(row).values())
    assert body["device_code"] not in stored and normal not in stored and body["user_code"] not in stored


@pytest.mark.parametrize("how", ["post", "basic"])
async def test_confidential_client_authenticates(stack: Stack, http, db, settings: Settings, how: str) -> None:
    app = await device_app(db, settings, method="client_secret_post")
    assert app.client_secret
    if how == "post":
        status, _, body = await device_authorization(http, stack.base, client_form(app))
    else:
        basic = base64.b64encode(f"{app.client_id}:{app.client_secret}".encode()).decode()
        status, _, body = await device_authorization(http, stack.base, {}, headers={"Authorization": f"Basic {basic}"})
    assert status == 200, body
    assert "device_code" in body
    # Polling authenticates the same way; without the secret it is invalid_client.
    status, answer_ = await poll(http, stack.base, app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "authorization_pending")
    no_secret = ClientApp(app.client_id, None, app.redirect_uri, app.user_id)
    status, answer_ = await poll(http, stack.base, no_secret, body["device_code"])
    assert_oauth_error(status, answer_, 401, "invalid_client")


async def test_endpoint_errors(stack: Stack, http, db, settings: Settings, public_app) -> None:
    confidential = await device_app(db, settings, method="client_secret_post")
    not_allowed = await device_app(db, settings, device=False)
    cases = [
        ({}, 401, "invalid_client"),
        ({"client_id": "client_nope"}, 401, "invalid_client"),
        ({"client_id": confidential.client_id}, 401, "invalid_client"),  # secret missing
        ({"client_id": confidential.client_id, "client_secret": "secret_wrong"}, 401, "invalid_client"),
        ({"client_id": public_app.client_id, "client_secret": "x"}, 401, "invalid_client"),
        ({"client_id": not_allowed.client_id}, 400, "unauthorized_client"),
        ({"client_id": public_app.client_id, "scope": "admin"}, 400, "invalid_scope"),
    ]
    for form, want_status, error in cases:
        status, headers, body = await device_authorization(http, stack.base, form)
        assert (status, body.get("error")) == (want_status, error), (form, body)
        assert body.get("error_description") and "device_code" not in body
    status, _, body = await device_authorization(
        http, stack.base, "client_id=x", headers={"Content-Type": "application/json"}
    )
    assert (status, body["error"]) == (400, "invalid_request")


# --- polling -------------------------------------------------------------------------------------------
async def test_pending_then_slow_down_adds_five_seconds_kept_server_side(
    stack: Stack, http, db, settings: Settings, public_app
) -> None:
    body = await start(http, stack, public_app)
    code_hash = token_hash(settings.pepper_bytes, body["device_code"])
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "authorization_pending")
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "slow_down")
    interval = await db.fetchval("SELECT interval_seconds FROM device_codes WHERE device_code_hash = $1", code_hash)
    assert interval == settings.device_poll_interval_seconds + 5
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "slow_down")
    interval = await db.fetchval("SELECT interval_seconds FROM device_codes WHERE device_code_hash = $1", code_hash)
    assert interval == settings.device_poll_interval_seconds + 10
    # A poll after the (new) interval is pending again, not slow_down.
    await db.execute(
        "UPDATE device_codes SET last_polled_at = now() - interval '1 hour' WHERE device_code_hash = $1", code_hash
    )
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "authorization_pending")


async def test_poll_errors(stack: Stack, http, db, settings: Settings, public_app) -> None:
    other = await device_app(db, settings)
    body = await start(http, stack, public_app)
    status, answer_ = await poll(http, stack.base, public_app, "device_not-a-code")
    assert_oauth_error(status, answer_, 400, "invalid_grant")
    status, answer_ = await poll(http, stack.base, other, body["device_code"])  # another client's code
    assert_oauth_error(status, answer_, 400, "invalid_grant")
    form = client_form(public_app, grant_type=DEVICE_CODE_GRANT)  # no device_code
    async with http.post(f"{stack.base}/api/oauth2/token", data=form) as r:
        assert_oauth_error(r.status, await r.json(), 400, "invalid_request")
    # The app loses the grant (developer API): unauthorized_client, for both endpoints.
    await db.execute(
        "UPDATE oauth_apps SET grant_types = $2 WHERE client_id = $1",
        public_app.client_id,
        ["authorization_code", "refresh_token"],
    )
    from libs.oauth.caches import CLIENTS  # the stack runs in-process: drop its cached copy too

    CLIENTS.clear()
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "unauthorized_client")


async def test_expired_code(stack: Stack, http, db, settings: Settings, public_app, browser) -> None:
    body = await start(http, stack, public_app)
    await db.execute(
        "UPDATE device_codes SET expires_at = now() - interval '1 second' WHERE device_code_hash = $1",
        token_hash(settings.pepper_bytes, body["device_code"]),
    )
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "expired_token")
    status, page = await enter_code(browser, stack.base, body["user_code"])  # no longer shown to anyone
    assert status == 400 and 'data-step="enter"' in page


async def test_denied(stack: Stack, http, browser, public_app) -> None:
    body = await start(http, stack, public_app)
    page = await answer(browser, stack.base, body["user_code"], decision="deny")
    assert 'data-step="denied"' in page
    for _ in range(2):
        status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
        assert_oauth_error(status, answer_, 400, "access_denied")


async def test_public_client_without_pkce_gets_ordinary_tokens(
    stack: Stack, http, db, settings: Settings, public_app, browser
) -> None:
    body = await start(http, stack, public_app, scope="openid profile balance")
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "authorization_pending")
    page = await answer(browser, stack.base, body["user_code"])
    assert 'data-step="approved"' in page
    status, tokens = await poll(http, stack.base, public_app, body["device_code"])  # right away: not slow_down
    assert status == 200, tokens
    assert {"access_token", "refresh_token", "id_token"} <= set(tokens)
    assert tokens["scope"] == "openid profile balance" and tokens["token_type"] == "Bearer"
    assert await userinfo_status(http, stack.base, tokens["access_token"]) == 200
    # Single use: the next poll with the same device_code gets nothing.
    status, again = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, again, 400, "invalid_grant")
    # An ordinary family: refresh rotation ...
    async with http.post(f"{stack.base}/api/oauth2/token", data=refresh_form(public_app, tokens["refresh_token"])) as r:
        rotated = await r.json()
        assert r.status == 200, rotated
    assert rotated["refresh_token"] != tokens["refresh_token"]
    # ... the user's authorizations list the app (consent recorded) ...
    async with browser.get(f"{stack.base}/api/user/authorizations") as r:
        listed = await r.json()
    assert public_app.client_id in [a["client_id"] for a in listed["data"]]
    # ... and revoking it there ends the family (refresh and access tokens).
    token = await csrf_from(browser, f"{stack.base}/user/authorizations")
    async with browser.post(
        f"{stack.base}/user/authorizations/{public_app.client_id}/revoke", data={"csrf_token": token, "confirm": "1"}
    ) as r:
        assert r.status == 200
    assert await refresh_status(http, stack.base, public_app, rotated["refresh_token"]) == 400
    assert await userinfo_status(http, stack.base, rotated["access_token"]) == 401


async def refresh(http: aiohttp.ClientSession, stack: Stack, app: ClientApp, token: str) -> tuple[int, dict]:
    async with http.post(f"{stack.base}/api/oauth2/token", data=refresh_form(app, token)) as r:
        return r.status, await r.json()


async def test_refresh_reuse_revokes_the_family(stack: Stack, http, public_app, browser) -> None:
    body = await start(http, stack, public_app)
    await answer(browser, stack.base, body["user_code"].lower().replace("-", ""))  # case- and dash-insensitive
    status, first = await poll(http, stack.base, public_app, body["device_code"])
    assert status == 200, first
    status, second = await refresh(http, stack, public_app, first["refresh_token"])
    assert status == 200, second
    status, third = await refresh(http, stack, public_app, second["refresh_token"])
    assert status == 200, third
    # The grandparent again (RFC 9700 4.14.2): reuse, so the whole family is revoked.
    status, reused = await refresh(http, stack, public_app, first["refresh_token"])
    assert_oauth_error(status, reused, 400, "invalid_grant")
    assert await refresh_status(http, stack.base, public_app, third["refresh_token"]) == 400
    assert await userinfo_status(http, stack.base, third["access_token"]) == 401


async def test_revoking_before_the_poll_expires_an_approved_code(
    stack: Stack, http, db, settings: Settings, public_app, browser
) -> None:
    body = await start(http, stack, public_app)
    await answer(browser, stack.base, body["user_code"])
    token = await csrf_from(browser, f"{stack.base}/user/authorizations")
    async with browser.post(
        f"{stack.base}/user/authorizations/{public_app.client_id}/revoke", data={"csrf_token": token, "confirm": "1"}
    ) as r:
        assert r.status == 200
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "expired_token")


async def test_a_user_disabled_after_approving_gets_no_tokens(
    stack: Stack, http, db, settings: Settings, public_app
) -> None:
    user = await make_user(db, PASSWORD)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b:
        await login(b, stack.base, user.username, PASSWORD)
        body = await start(http, stack, public_app)
        await answer(b, stack.base, body["user_code"])
    await db.execute("UPDATE users SET status = 2 WHERE id = $1", user.id)
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "invalid_grant")


@pytest.mark.parametrize("recorded", [True, False], ids=["a-record-to-widen", "a-first-consent"])
async def test_an_approval_waits_for_a_user_being_disabled(
    stack: Stack, http, db, settings: Settings, public_app, recorded: bool
) -> None:
    """The approval locks the user's row first (then the device code, then the consent record), as
    authorize does: an Allow arriving while the user is being disabled waits for it (before, it
    approved the code and re-created a consent record for the disabled user), then records nothing:
    the expired-login page, and the device is still waiting."""
    user = await make_user(db, PASSWORD)
    if recorded:
        await consent_records.upsert(db, user.id, public_app.client_id, ["openid"])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b:
        await login(b, stack.base, user.username, PASSWORD)
        body = await start(http, stack, public_app)
        status, page = await enter_code(b, stack.base, body["user_code"])
        assert status == 200, page[:300]
        form = {"csrf_token": form_value(page), "request": form_value(page, REQUEST_RE), "decision": "allow"}
        async with db.acquire() as conn, conn.transaction():
            await account_store.lock_user_status(conn, user.id)
            pending = asyncio.ensure_future(b.post(f"{stack.base}/device/consent", data=form))
            done, _ = await asyncio.wait([pending], timeout=0.5)
            assert not done  # waiting for the user's row
            await account_store.set_user_status(conn, user.id, UserStatus.DISABLED)
            await delete_user_consents(conn, user.id)
        async with await pending as r:
            assert r.status == 401, (await r.text())[:300]
            assert "你的登录已过期" in await r.text()
    assert await db.fetchval("SELECT count(*) FROM grants WHERE user_id = $1", user.id) == 0
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert_oauth_error(status, answer_, 400, "authorization_pending")


# --- the /device page ----------------------------------------------------------------------------------
async def test_device_page_sends_to_login_and_back(stack: Stack, http, db, public_app) -> None:
    body = await start(http, stack, public_app)
    user_code = body["user_code"]
    async with http.get(body["verification_uri_complete"], allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
    assert urlsplit(location).path == "/login"
    next_url = parse_qs(urlsplit(location).query)["next"][0]
    assert next_url == f"/device?user_code={quote(user_code)}"
    user = await make_user(db, PASSWORD)
    token = await csrf_from(http, f"{stack.base}/login")
    data = {"csrf_token": token, "username": user.username, "password": PASSWORD, "next": next_url}
    async with http.post(f"{stack.base}/login", data=data, allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == next_url
    for lang, words in (("zh", "设备登录"), ("en", "Device login")):
        async with http.get(f"{stack.base}{next_url}&lang={lang}") as r:
            page = await r.text()
        assert r.status == 200 and words in page
        assert f'value="{user_code}"' in page  # prefilled, still to be confirmed by the user
        assert 'name="viewport"' in page


async def test_consent_page_is_the_browser_flows_with_the_device(
    stack: Stack, http, db, settings: Settings, browser
) -> None:
    app = await device_app(db, settings)
    async with http.post(
        f"{stack.base}/api/oauth2/device_authorization",
        data=client_form(app, scope="profile balance"),
        headers={"User-Agent": "my-cli/1.2 (linux)"},
    ) as r:
        body = await r.json()
    status, page = await enter_code(browser, stack.base, body["user_code"])
    assert status == 200
    assert "Device CLI" in page and body["user_code"] in page and "my-cli/1.2 (linux)" in page
    assert 'action="/device/consent"' in page and 'name="decision" value="allow"' in page
    # the browser flow's consent words, from the same template (consent.html)
    for words in ("授权确认", "Device CLI 请求访问你的账户", "你的账户余额"):
        assert words in page


async def test_forms_need_csrf(stack: Stack, browser, public_app, http) -> None:
    body = await start(http, stack, public_app)
    async with browser.post(f"{stack.base}/device", data={"user_code": body["user_code"]}) as r:
        assert r.status == 403
    async with browser.post(f"{stack.base}/device/consent", data={"request": "x", "decision": "allow"}) as r:
        assert r.status == 403


async def test_a_browser_consent_id_is_not_a_device_approval(stack: Stack, browser, public_app, http) -> None:
    body = await start(http, stack, public_app)
    status, page = await enter_code(browser, stack.base, body["user_code"])
    request_id = form_value(page, re.compile(r'name="request" value="([^"]+)"'))
    data = {"csrf_token": form_value(page), "request": request_id, "decision": "allow"}
    async with browser.post(f"{stack.base}/consent", data=data) as r:  # the browser flow's endpoint
        assert r.status == 400
    async with browser.post(f"{stack.base}/device/consent", data=data) as r:  # taken once: gone
        assert r.status == 400
    status, answer_ = await poll(http, stack.base, public_app, body["device_code"])
    assert answer_["error"] == "authorization_pending"


async def test_guessing_is_limited_per_session(
    stack: Stack, http, settings: Settings, browser, public_app, clean_guess_limits
) -> None:
    for _ in range(settings.device_max_failures_per_session):
        status, page = await enter_code(browser, stack.base, "BCDF-GHJK")
        assert status == 400 and "device.bad_code" not in page
    body = await start(http, stack, public_app)
    async with browser.get(f"{stack.base}/device") as r:
        token = form_value(await r.text())
    async with browser.post(f"{stack.base}/device", data={"csrf_token": token, "user_code": body["user_code"]}) as r:
        assert r.status == 429  # even the right code, once the session is over its limit
        assert int(r.headers["Retry-After"]) > 0


async def test_guessing_is_limited_per_ip(
    stack: Stack, db, settings: Settings, http, public_app, clean_guess_limits
) -> None:
    per_session, per_ip = settings.device_max_failures_per_session, settings.device_max_failures_per_ip
    tried = 0
    while tried < per_ip:  # fresh login sessions, one IP: each stays under its own limit
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b:
            user = await make_user(db, PASSWORD)
            await login(b, stack.base, user.username, PASSWORD)
            for _ in range(min(per_session, per_ip - tried)):
                status, _ = await enter_code(b, stack.base, "zzzz-zzzz")
                assert status == 400
                tried += 1
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as fresh:
        user = await make_user(db, PASSWORD)
        await login(fresh, stack.base, user.username, PASSWORD)
        status, page = await enter_code(fresh, stack.base, "zzzz-zzzz")
    assert status == 429 and ("Too many wrong codes" in page or "次数过多" in page)


# --- the developer API and console ----------------------------------------------------------------------
async def test_developer_api_sets_the_grant(stack: Stack, http, db, settings: Settings) -> None:
    _, dev_token = await make_developer(db, settings)
    auth = {"Authorization": f"Bearer {dev_token}"}
    new = {"name": "cli", "redirect_uri": "http://127.0.0.1/cb", "token_endpoint_auth_method": "none"}
    async with http.post(f"{stack.base}/api/oauth_apps", json=new, headers=auth) as r:
        created = (await r.json())["data"]
    assert created["grant_types"] == ["authorization_code", "refresh_token"]
    app = ClientApp(created["client_id"], None, "http://127.0.0.1/cb", 0)
    status, _, body = await device_authorization(http, stack.base, client_form(app))
    assert (status, body["error"]) == (400, "unauthorized_client")
    async with http.put(
        f"{stack.base}/api/oauth_apps/{created['id']}", json={"grant_types": [DEVICE_CODE_GRANT]}, headers=auth
    ) as r:
        updated = await r.json()
    assert updated["data"]["grant_types"] == DEVICE_GRANT_TYPES
    status, _, body = await device_authorization(http, stack.base, client_form(app))
    assert status == 200, body  # the client.updated event dropped every instance's cached copy
    async with http.put(
        f"{stack.base}/api/oauth_apps/{created['id']}", json={"grant_types": ["implicit"]}, headers=auth
    ) as r:
        refused = await r.json()
    assert r.status == 400 and refused["success"] is False


async def test_console_checkbox(stack: Stack, http, db) -> None:
    user = await make_user(db, PASSWORD)
    await login(http, stack.base, user.username, PASSWORD)
    token = await csrf_from(http, f"{stack.base}/developer")
    form = {
        "csrf_token": token,
        "name": "my cli",
        "redirect_uris": "http://127.0.0.1/cb",
        "token_endpoint_auth_method": "none",
        "device_grant": "1",
    }
    async with http.post(f"{stack.base}/developer/apps", data=form) as r:
        page = await r.text()
        assert r.status == 200, page[:300]
    assert 'data-device-grant="true"' in page
    grant_types = await db.fetchval(
        "SELECT grant_types FROM oauth_apps a JOIN users u ON u.id = a.owner_id WHERE u.id = $1", user.id
    )
    assert list(grant_types) == DEVICE_GRANT_TYPES


# --- Authlib, a client library we did not write ---------------------------------------------------------
async def test_authlib_completes_the_device_flow(stack: Stack, http, browser, public_app) -> None:
    from authlib.integrations.base_client.errors import OAuthError as AuthlibError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    async with httpx.AsyncClient() as plain:
        meta = (await plain.get(f"{stack.base}/.well-known/oauth-authorization-server")).json()
    async with AsyncOAuth2Client(
        client_id=public_app.client_id, token_endpoint_auth_method="none", scope="openid profile"
    ) as client:
        resp = await client.request(
            "POST",
            meta["device_authorization_endpoint"],
            data={"client_id": public_app.client_id, "scope": "openid profile"},
            withhold_token=True,  # no token yet: Authlib would otherwise refuse to send
        )
        assert resp.status_code == 200, resp.text
        started = resp.json()
        with pytest.raises(AuthlibError) as pending:
            await client.fetch_token(
                meta["token_endpoint"], grant_type=DEVICE_CODE_GRANT, device_code=started["device_code"]
            )
        assert pending.value.error == "authorization_pending"
        await answer(browser, stack.base, started["user_code"])
        token = await client.fetch_token(
            meta["token_endpoint"], grant_type=DEVICE_CODE_GRANT, device_code=started["device_code"]
        )
        assert token["token_type"] == "Bearer" and token["refresh_token"]
        userinfo = await client.get(meta["userinfo_endpoint"])
        assert userinfo.status_code == 200 and "username" in userinfo.json()
        refreshed = await client.refresh_token(meta["token_endpoint"])
        assert refreshed["refresh_token"] != token["refresh_token"]


# --- spending (docs/spending.md): the same limit block as the browser flow -------------------------
async def test_spend_asked_by_a_device_gets_the_limit_the_user_chose(stack: Stack, db, settings: Settings) -> None:
    from services.account import store as account_store

    app = await device_app(db, settings)
    user = await make_user(db, PASSWORD)
    async with db.acquire() as conn:
        await account_store.set_balance(conn, user.id, 1_000_000, 0)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await login(http, stack.base, user.username, PASSWORD)
        body = await start(http, stack, app, scope="profile spend")
        status, page = await enter_code(http, stack.base, body["user_code"])
        assert status == 200 and 'name="spend_amount"' in page
        base = {"csrf_token": form_value(page), "request": form_value(page, REQUEST_RE), "decision": "allow"}
        # Allow without the limit block: refused, and the device is still waiting.
        async with http.post(f"{stack.base}/device/consent", data=base) as r:
            assert r.status == 400
        status, answer_ = await poll(http, stack.base, app, body["device_code"])
        assert_oauth_error(status, answer_, 400, "authorization_pending")
        # Allow with 0.50 a day (quota_per_unit 1000: 500 minor units).
        status, page = await enter_code(http, stack.base, body["user_code"])
        chosen = {"csrf_token": form_value(page), "request": form_value(page, REQUEST_RE), "decision": "allow"}
        async with http.post(
            f"{stack.base}/device/consent", data=chosen | {"spend_amount": "0.50", "spend_period": "daily"}
        ) as r:
            assert r.status == 200 and 'data-step="approved"' in await r.text()
        status, tokens = await poll(http, stack.base, app, body["device_code"])
        assert status == 200 and tokens["scope"] == "profile spend", tokens
        row = await db.fetchrow(
            "SELECT spend_limit, spend_period FROM grants WHERE user_id = $1 AND client_id = $2", user.id, app.client_id
        )
        assert (row["spend_limit"], row["spend_period"]) == (500, "daily")
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        for amount, want in ((400, 200), (200, 402)):
            charge = {"amount": amount, "idempotency_key": f"device-{amount}"}
            async with http.post(f"{stack.base}/api/oauth2/spend", json=charge, headers=headers) as r:
                assert r.status == want, await r.text()
