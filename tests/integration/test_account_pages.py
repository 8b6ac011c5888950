"""Account pages through the gateway with a real browser-like client (cookies, CSRF, no JavaScript):
/register, /user, /developer and POST /api/user/developer_token."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest

from libs.oauth.vocabulary import UserStatus
from services.account import store as account_store
from tests.support.stack import Stack

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery"
EN = {"Accept-Language": "en"}


def csrf_in(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no csrf field in the page"
    return m.group(1)


async def page_csrf(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url, headers=EN) as r:
        assert r.status == 200, (url, r.status)
        return csrf_in(await r.text())


async def register_browser(
    http: aiohttp.ClientSession, base: str, *, username: str | None = None, next_path: str | None = None
) -> str:
    """Sign a new user up through /register (which logs this client in); return the username."""
    username = username or f"p_{secrets.token_hex(5)}"
    token = await page_csrf(http, f"{base}/register")
    form = {
        "csrf_token": token,
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }
    if next_path is not None:
        form["next"] = next_path
    async with http.post(f"{base}/register", data=form, allow_redirects=False) as r:
        assert r.status == 302, await r.text()
    return username


def new_browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest.fixture
async def browser(stack: Stack) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    """A logged-in browser (a freshly registered user) and its username."""
    async with new_browser() as http:
        yield http, await register_browser(http, stack.base)


async def user_id(db: asyncpg.Pool, username: str) -> int:
    return int(await db.fetchval("SELECT id FROM users WHERE username = $1", username))


# --- /register -------------------------------------------------------------------------------------
async def test_register_logs_in_and_goes_to_the_user_center(stack: Stack, http, db) -> None:
    async with http.get(f"{stack.base}/register") as r:
        assert r.status == 200
        html = await r.text()
        assert r.headers["Content-Type"].startswith("text/html")
        assert r.headers["Cache-Control"] == "no-store"
    assert 'action="/register"' in html and 'href="/login' in html
    name = f"r_{secrets.token_hex(4)}"
    form = {
        "csrf_token": csrf_in(html),
        "username": name,
        "email": f"{name}@Example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }
    async with http.post(f"{stack.base}/register", data=form, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/user"
        cookie = r.cookies["sid"]
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    row = await db.fetchrow("SELECT email, password_hash, status, quota FROM users WHERE username = $1", name)
    # stored normalised: the domain lower-cased (docs/operations.md "Accounts")
    assert row["email"] == f"{name}@example.com" and row["status"] == 1 and row["quota"] == 0
    assert row["password_hash"].startswith("$argon2") and PASSWORD not in row["password_hash"]
    async with http.get(f"{stack.base}/user", headers=EN, allow_redirects=False) as r:
        assert r.status == 200
        page = await r.text()
    assert name in page and f"{name}@example.com" in page and "Your account" in page
    assert 'id="balance">$0.00<' in page
    assert 'href="/user/topup"' in page and 'href="/user/authorizations"' in page


async def test_register_goes_to_a_local_next(stack: Stack) -> None:
    async with new_browser() as b:
        token = await page_csrf(b, f"{stack.base}/register?next=/developer")
        name = f"n_{secrets.token_hex(4)}"
        form = {
            "csrf_token": token,
            "username": name,
            "email": f"{name}@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "next": "/user/topup?from=client_x",
        }
        async with b.post(f"{stack.base}/register", data=form, allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/user/topup?from=client_x"


async def test_register_page_keeps_next_in_the_form(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/register?next=/developer") as r:
        html = await r.text()
    assert 'name="next" value="/developer"' in html
    assert "next=%2Fdeveloper" in html  # the language switch keeps it too
    async with http.get(f"{stack.base}/register?next=//evil.example") as r:
        html = await r.text()
    assert 'name="next" value="/user"' in html and "evil" not in html


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example/",
        "/\\evil.example",
        "/\\/evil.example",
        "https://evil.example/",
        "http:evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\n/evil.example",
        " //evil.example",
        "evil.example",
        "/" + "a" * 5000,  # longer than pages.MAX_NEXT
    ],
)
async def test_register_refuses_open_redirects(stack: Stack, next_path) -> None:
    async with new_browser() as b:
        token = await page_csrf(b, f"{stack.base}/register")
        name = f"o_{secrets.token_hex(4)}"
        form = {
            "csrf_token": token,
            "username": name,
            "email": f"{name}@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
            "next": next_path,
        }
        async with b.post(f"{stack.base}/register", data=form, allow_redirects=False) as r:
            assert r.status == 302
            assert r.headers["Location"] == "/user"


async def test_logged_in_register_page_redirects(stack: Stack, browser) -> None:
    http, _ = browser
    async with http.get(f"{stack.base}/register?next=/developer", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/developer"


@pytest.mark.parametrize(
    ("change", "field", "en", "zh"),
    [
        ({"username": "ab"}, "username", "username: 3-32 characters", "用户名需为"),
        ({"username": "has space"}, "username", "username: 3-32 characters", "用户名需为"),
        ({"username": "<script>"}, "username", "username: 3-32 characters", "用户名需为"),
        ({"email": "not-an-email"}, "email", "email: a valid address", "有效的邮箱"),
        ({"email": ""}, "email", "email: a valid address", "有效的邮箱"),
        ({"password": "short", "password_confirm": "short"}, "password", "password: 8-128 characters", "8-128"),
        ({"password": "p" * 129, "password_confirm": "p" * 129}, "password", "password: 8-128", "8-128"),
        ({"password_confirm": "something else"}, "password_confirm", "do not match", "不一致"),
    ],
)
async def test_register_validation(stack: Stack, http, db, change, field, en, zh) -> None:
    name = f"v_{secrets.token_hex(4)}"
    form = {
        "username": name,
        "email": f"{name}@example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    } | change
    for lang, fragment in (("en", en), ("zh", zh)):
        token = await page_csrf(http, f"{stack.base}/register")
        async with http.post(
            f"{stack.base}/register?lang={lang}", data=form | {"csrf_token": token}, allow_redirects=False
        ) as r:
            assert r.status == 400
            html = await r.text()
            assert "sid" not in r.cookies
        assert fragment in html, (lang, html)
        assert 'id="error"' in html and "Traceback" not in html
        if field in ("username", "email") and form[field]:
            assert f'value="{form[field]}"' in html or "&lt;script&gt;" in html
        assert PASSWORD not in html  # passwords are never echoed back
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = $1", form["username"]) == 0


async def test_register_taken_username_and_email(stack: Stack, http, db) -> None:
    taken = await register_browser(http, stack.base)
    async with new_browser() as b:
        for form, fragment in (
            ({"username": taken.upper(), "email": f"x{taken}@example.com"}, "username is already taken"),
            ({"username": f"x{taken}", "email": f"{taken}@EXAMPLE.com"}, "email is already taken"),
        ):
            token = await page_csrf(b, f"{stack.base}/register")
            data = form | {"csrf_token": token, "password": PASSWORD, "password_confirm": PASSWORD}
            async with b.post(f"{stack.base}/register", data=data, headers=EN, allow_redirects=False) as r:
                assert r.status == 400
                assert fragment in await r.text()
    assert await db.fetchval("SELECT count(*) FROM users WHERE lower(username) = lower($1)", taken) == 1


@pytest.mark.parametrize("token", [None, "", "forged-token", "A" * 43])
async def test_register_needs_csrf(stack: Stack, http, db, token) -> None:
    await page_csrf(http, f"{stack.base}/register")  # the browser has a csrf cookie
    name = f"c_{secrets.token_hex(4)}"
    form = {"username": name, "email": f"{name}@example.com", "password": PASSWORD, "password_confirm": PASSWORD}
    if token is not None:
        form["csrf_token"] = token
    async with http.post(f"{stack.base}/register", data=form, allow_redirects=False) as r:
        assert r.status == 403
        assert r.headers["Content-Type"].startswith("text/html")
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = $1", name) == 0


async def test_csrf_token_of_another_browser_is_refused(stack: Stack, http, db) -> None:
    async with new_browser() as other:
        foreign = await page_csrf(other, f"{stack.base}/register")
    await page_csrf(http, f"{stack.base}/register")
    name = f"c_{secrets.token_hex(4)}"
    form = {
        "csrf_token": foreign,
        "username": name,
        "email": f"{name}@example.com",
        "password": PASSWORD,
        "password_confirm": PASSWORD,
    }
    async with http.post(f"{stack.base}/register", data=form, allow_redirects=False) as r:
        assert r.status == 403


# --- /user ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/user", "/user/topup", "/developer"])
async def test_pages_need_login(stack: Stack, http, path) -> None:
    async with http.get(f"{stack.base}{path}", allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == f"/login?next={path}"


async def test_login_redirect_keeps_the_query(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/user/topup?from=client_x", allow_redirects=False) as r:
        assert r.status == 302
        location = urlsplit(r.headers["Location"])
    assert location.path == "/login" and parse_qs(location.query) == {"next": ["/user/topup?from=client_x"]}


async def test_user_center_shows_balance(stack: Stack, browser, db) -> None:
    http, name = browser
    await account_store.set_balance(db, await user_id(db, name), 1000000, 250000)
    async with http.get(f"{stack.base}/user") as r:
        assert r.status == 200
        html = await r.text()
    uid = await user_id(db, name)
    assert 'id="balance">$750.00<' in html
    assert 'id="quota">$1,000.00<' in html and 'id="used-quota">$250.00<' in html
    assert f'id="user-id">{uid}<' in html
    assert "用户中心" in html  # Chinese by default


async def test_disabled_users_session_is_sent_to_login(stack: Stack, browser, db) -> None:
    http, name = browser
    await account_store.set_user_status(db, await user_id(db, name), UserStatus.DISABLED)
    async with http.get(f"{stack.base}/user", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"].startswith("/login")
    # the session is over: re-enabling the account does not log this browser back in
    await account_store.set_user_status(db, await user_id(db, name), UserStatus.ACTIVE)
    async with http.get(f"{stack.base}/user", allow_redirects=False) as r:
        assert r.status == 302


# --- /developer ----------------------------------------------------------------------------------
async def create_app_via_console(http, base: str, **fields: str):
    token = await page_csrf(http, f"{base}/developer")
    form = {"name": "Console app", "description": "made in the console", "redirect_uris": "https://c.example/cb"}
    form |= fields
    async with http.post(f"{base}/developer/apps", data=form | {"csrf_token": token}, headers=EN) as r:
        return r.status, await r.text()


SECRET_RE = re.compile(r'id="client-secret">(secret_[A-Za-z0-9_-]+)<')
TOKEN_RE = re.compile(r'id="developer-token">(devtoken_[A-Za-z0-9_-]+)<')


async def test_console_creates_an_app_and_shows_the_secret_once(stack: Stack, browser, db, settings) -> None:
    http, name = browser
    status, html = await create_app_via_console(
        http, stack.base, redirect_uris="https://c.example/cb\r\n\r\nhttp://localhost:3000/cb\n"
    )
    assert status == 200, html
    secret = SECRET_RE.search(html).group(1)
    row = await db.fetchrow(
        "SELECT * FROM oauth_apps WHERE owner_id = $1 ORDER BY id DESC LIMIT 1", await user_id(db, name)
    )
    assert row["name"] == "Console app" and row["redirect_uris"] == ["https://c.example/cb", "http://localhost:3000/cb"]
    assert row["client_id"] in html
    assert bytes(row["client_secret_hash"]) == hmac.new(settings.pepper_bytes, secret.encode(), hashlib.sha256).digest()
    async with http.get(f"{stack.base}/developer") as r:
        again = await r.text()
    assert secret not in again and row["client_id"] in again and "https://c.example/cb" in again


async def test_console_validation_errors(stack: Stack, browser) -> None:
    http, _ = browser
    for fields, fragment in (
        ({"redirect_uris": "http://evil.example/cb"}, "https"),
        ({"redirect_uris": ""}, "redirect_uri is required"),
        ({"name": "   "}, "name must not be empty"),
        ({"redirect_uris": "https://c.example/cb#x"}, "fragment"),
        ({"token_endpoint_auth_method": "magic"}, "one of"),
    ):
        status, html = await create_app_via_console(http, stack.base, **fields)
        assert status == 400, (fields, html)
        assert fragment in html and 'id="error"' in html
        assert not SECRET_RE.search(html)


async def test_console_escapes_names(stack: Stack, browser) -> None:
    http, _ = browser
    status, html = await create_app_via_console(http, stack.base, name="<script>alert(1)</script>")
    assert status == 200
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_console_public_client_has_no_secret(stack: Stack, browser) -> None:
    http, _ = browser
    status, html = await create_app_via_console(http, stack.base, token_endpoint_auth_method="none")
    assert status == 200 and not SECRET_RE.search(html)


async def test_console_rotate_edit_delete(stack: Stack, browser, db, settings) -> None:
    http, name = browser
    _, html = await create_app_via_console(http, stack.base)
    old = SECRET_RE.search(html).group(1)
    app_id = await db.fetchval("SELECT max(id) FROM oauth_apps WHERE owner_id = $1", await user_id(db, name))
    token = csrf_in(html)

    rotate = {"csrf_token": token, "confirm": "1", "grace_seconds": "0"}
    async with http.post(f"{stack.base}/developer/apps/{app_id}/secret", data=rotate) as r:
        assert r.status == 200
        new = SECRET_RE.search(await r.text()).group(1)
    assert new != old
    stored = await db.fetchval("SELECT client_secret_hash FROM oauth_apps WHERE id = $1", app_id)
    assert bytes(stored) == hmac.new(settings.pepper_bytes, new.encode(), hashlib.sha256).digest()

    edit = {"csrf_token": token, "name": "Renamed", "description": "d", "redirect_uris": "https://d.example/cb"}
    async with http.post(f"{stack.base}/developer/apps/{app_id}", data=edit) as r:
        assert r.status == 200 and "Renamed" in await r.text()
    row = await db.fetchrow("SELECT name, redirect_uris FROM oauth_apps WHERE id = $1", app_id)
    assert row["name"] == "Renamed" and row["redirect_uris"] == ["https://d.example/cb"]
    async with http.post(f"{stack.base}/developer/apps/{app_id}", data=edit | {"redirect_uris": "ftp://x/cb"}) as r:
        assert r.status == 400

    async with http.post(
        f"{stack.base}/developer/apps/{app_id}/delete",
        data={"csrf_token": token, "confirm": "1"},
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/developer?notice=app_deleted"
    assert await db.fetchval("SELECT count(*) FROM oauth_apps WHERE id = $1", app_id) == 0
    types = await db.fetch("SELECT type FROM event_outbox WHERE data->>'app_id' = $1 ORDER BY occurred_at", str(app_id))
    assert [t["type"] for t in types] == ["client.updated", "client.secret_rotated", "client.updated", "client.deleted"]


async def test_console_cannot_touch_another_users_app(stack: Stack, browser, db) -> None:
    http, _ = browser
    async with new_browser() as other:
        owner = await register_browser(other, stack.base)
        await create_app_via_console(other, stack.base)
    app_id = await db.fetchval("SELECT max(id) FROM oauth_apps WHERE owner_id = $1", await user_id(db, owner))
    token = await page_csrf(http, f"{stack.base}/developer")
    for path in (f"/developer/apps/{app_id}/delete", f"/developer/apps/{app_id}/secret", f"/developer/apps/{app_id}"):
        data = {"csrf_token": token, "name": "x", "redirect_uris": "https://x.example/cb", "confirm": "1"}
        async with http.post(f"{stack.base}{path}", data=data, allow_redirects=False) as r:
            assert r.status == 404, path
    row = await db.fetchrow("SELECT name, secret_rotated_at FROM oauth_apps WHERE id = $1", app_id)
    assert row["name"] == "Console app" and row["secret_rotated_at"] is None


async def test_console_forms_need_csrf(stack: Stack, browser, db) -> None:
    http, name = browser
    await page_csrf(http, f"{stack.base}/developer")
    form = {"name": "x", "redirect_uris": "https://c.example/cb"}
    for path in ("/developer/apps", "/developer/tokens"):
        async with http.post(f"{stack.base}{path}", data=form | {"csrf_token": "wrong"}) as r:
            assert r.status == 403
    uid = await user_id(db, name)
    assert await db.fetchval("SELECT count(*) FROM oauth_apps WHERE owner_id = $1", uid) == 0
    assert await db.fetchval("SELECT count(*) FROM developer_tokens WHERE user_id = $1", uid) == 0


async def test_console_developer_token_create_use_revoke(stack: Stack, browser, db) -> None:
    http, name = browser
    await create_app_via_console(http, stack.base)
    token = await page_csrf(http, f"{stack.base}/developer")
    async with http.post(f"{stack.base}/developer/tokens", data={"csrf_token": token, "name": "laptop"}) as r:
        assert r.status == 200
        html = await r.text()
    dev_token = TOKEN_RE.search(html).group(1)
    assert "laptop" in html
    async with http.get(f"{stack.base}/developer") as r:
        assert dev_token not in await r.text()
    h = {"Authorization": f"Bearer {dev_token}"}
    async with http.get(f"{stack.base}/api/oauth_apps", headers=h) as r:
        body = await r.json()
    assert r.status == 200 and [a["name"] for a in body["data"]] == ["Console app"]

    token_id = await db.fetchval("SELECT id FROM developer_tokens WHERE user_id = $1", await user_id(db, name))
    confirm = {"csrf_token": token, "confirm": "1"}
    async with http.post(f"{stack.base}/developer/tokens/{token_id}/revoke", data=confirm, allow_redirects=False) as r:
        assert r.status == 303
    async with http.get(f"{stack.base}/api/oauth_apps", headers=h) as r:
        assert r.status == 401
    async with http.post(f"{stack.base}/developer/tokens/{token_id}/revoke", data=confirm) as r:
        assert r.status == 404


# --- POST /api/user/developer_token ----------------------------------------------------------------
async def test_api_developer_token_with_session_and_csrf_header(stack: Stack, browser, db) -> None:
    http, name = browser
    await create_app_via_console(http, stack.base)
    csrf = await page_csrf(http, f"{stack.base}/developer")
    async with http.post(
        f"{stack.base}/api/user/developer_token", json={"name": "ci"}, headers={"X-CSRF-Token": csrf}
    ) as r:
        body = await r.json()
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert body["success"] is True
    data = body["data"]
    assert data["token"].startswith("devtoken_") and data["name"] == "ci" and isinstance(data["created_time"], int)
    stored = await db.fetchrow("SELECT * FROM developer_tokens WHERE id = $1", data["id"])
    assert stored["user_id"] == await user_id(db, name)
    assert data["token"] not in str(dict(stored))
    async with http.get(f"{stack.base}/api/oauth_apps", headers={"Authorization": f"Bearer {data['token']}"}) as r:
        listed = await r.json()
    assert r.status == 200 and [a["name"] for a in listed["data"]] == ["Console app"]


async def test_api_developer_token_with_form_field(stack: Stack, browser) -> None:
    http, _ = browser
    csrf = await page_csrf(http, f"{stack.base}/developer")
    async with http.post(f"{stack.base}/api/user/developer_token", data={"csrf_token": csrf}) as r:
        body = await r.json()
    assert r.status == 200 and body["data"]["token"].startswith("devtoken_") and body["data"]["name"] == "api"


async def test_api_developer_token_needs_csrf(stack: Stack, browser, db) -> None:
    http, name = browser
    await page_csrf(http, f"{stack.base}/developer")
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        async with http.post(f"{stack.base}/api/user/developer_token", json={}, headers=headers) as r:
            body = await r.json()
        assert r.status == 403 and body["success"] is False and "CSRF" in body["message"]
    assert await db.fetchval("SELECT count(*) FROM developer_tokens WHERE user_id = $1", await user_id(db, name)) == 0


async def test_api_developer_token_needs_a_session(stack: Stack, http) -> None:
    csrf = await page_csrf(http, f"{stack.base}/register")
    async with http.post(f"{stack.base}/api/user/developer_token", headers={"X-CSRF-Token": csrf}) as r:
        body = await r.json()
    assert r.status == 401 and body == {"success": False, "message": body["message"], "data": None}
    assert "/login" in body["message"]


async def test_api_developer_token_rejects_bad_bodies(stack: Stack, browser) -> None:
    http, _ = browser
    csrf = await page_csrf(http, f"{stack.base}/developer")
    h = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    for raw in (b"{", b"[1]", b'{"admin": true}', b'{"name": 5}', b'{"name": "a\\u0000b"}'):
        async with http.post(f"{stack.base}/api/user/developer_token", data=raw, headers=h) as r:
            body = await r.json()
        assert r.status == 400 and body["success"] is False, raw


async def test_developer_token_limit(stack: Stack, browser, db, settings) -> None:
    from services.account.developer_tokens import MAX_ACTIVE_TOKENS, create_developer_token

    http, name = browser
    uid = await user_id(db, name)
    for _ in range(MAX_ACTIVE_TOKENS):
        await create_developer_token(db, settings.pepper_bytes, uid, "bulk")
    csrf = await page_csrf(http, f"{stack.base}/developer")
    async with http.post(f"{stack.base}/api/user/developer_token", headers={"X-CSRF-Token": csrf}) as r:
        body = await r.json()
    assert r.status == 400 and "revoke one" in body["message"]
