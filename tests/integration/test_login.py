"""Login and logout pages through the gateway, against real Postgres and Redis."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from libs.oauth.vocabulary import UserStatus
from libs.platform import security
from libs.platform.config import Settings
from libs.platform.redis import key
from services.account import store as account_store
from services.authz import ratelimit
from tests.support.factories import make_user
from tests.support.gauge import Gauge
from tests.support.oauth import SHARED_SCRIPT, csrf_from, login, login_response
from tests.support.stack import Stack

PASSWORD = "correct horse battery"


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def _reset_ip_limit(settings: Settings, redis: aioredis.Redis) -> AsyncIterator[None]:
    """Every test here logs in from 127.0.0.1 through the gateway; do not let failures pile up
    into the per-IP limit for later tests (of this file or others)."""
    yield
    await redis.delete(ratelimit.ip_key(settings, "127.0.0.1"))


def session_key(settings: Settings, sid: str) -> str:
    return key(settings, "session", hashlib.sha256(sid.encode()).hexdigest())


def cookie(http: aiohttp.ClientSession, name: str) -> str | None:
    for c in http.cookie_jar:
        if c.key == name:
            return c.value
    return None


# --- the page --------------------------------------------------------------------------------------
async def test_login_page_has_the_form(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/login", params={"next": "/user/topup"}) as r:
        body = await r.text()
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"
        assert "csrf=" in r.headers.get("Set-Cookie", "")
        assert "HttpOnly" in r.headers["Set-Cookie"]
    assert 'name="csrf_token"' in body
    assert 'name="username"' in body and 'type="password"' in body
    assert 'name="next" value="/user/topup"' in body
    assert 'href="/register' in body
    # works without JavaScript: site.js only adds comfort
    assert body.count("<script") == body.count(SHARED_SCRIPT) == 1


async def test_login_page_in_english(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/login", headers={"Accept-Language": "en-US,en;q=0.9"}) as r:
        body = await r.text()
    assert "Username or email" in body and "Sign up" in body


# --- success -----------------------------------------------------------------------------------------
async def test_login_success_starts_a_session(stack: Stack, http, db, settings, redis) -> None:
    user = await make_user(db)
    status, location, _ = await login_response(http, stack.base, user.username, PASSWORD)
    assert (status, location) == (302, "/user")
    sid = cookie(http, "sid")
    assert sid and len(sid) >= 40
    stored = await redis.get(session_key(settings, sid))
    assert stored is not None and f'"user_id":{user.id}'.encode() in stored
    # Redis holds only the hash of the session id
    assert await redis.get(key(settings, "session", sid)) is None


async def test_login_by_email_any_case(stack: Stack, http, db) -> None:
    user = await make_user(db)
    status, location, _ = await login_response(http, stack.base, user.email.upper(), PASSWORD)
    assert (status, location) == (302, "/user")


async def test_each_login_issues_a_new_session_id(stack: Stack, http, db, settings, redis) -> None:
    user = await make_user(db)
    await login(http, stack.base, user.username, PASSWORD)
    first = cookie(http, "sid")
    await login(http, stack.base, user.username, PASSWORD)
    second = cookie(http, "sid")
    assert first and second and first != second
    assert await redis.get(session_key(settings, first)) is None  # the old session is gone
    assert await redis.get(session_key(settings, second)) is not None


async def test_session_cookie_flags(stack: Stack, http, db) -> None:
    user = await make_user(db)
    token = await csrf_from(http, f"{stack.base}/login")
    data = {"csrf_token": token, "username": user.username, "password": PASSWORD}
    async with http.post(f"{stack.base}/login", data=data, allow_redirects=False) as r:
        set_cookie = ";".join(r.headers.getall("Set-Cookie"))
        assert r.headers["Cache-Control"] == "no-store"
    assert "sid=" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie


@pytest.mark.parametrize("next_url", ["/user/topup", "/api/oauth2/authorize?client_id=x&state=a%20b", "/developer"])
async def test_next_local_path_is_followed(stack: Stack, http, db, next_url) -> None:
    user = await make_user(db)
    status, location, _ = await login_response(http, stack.base, user.username, PASSWORD, next_url)
    assert (status, location) == (302, next_url)


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example/",
        "/\\evil.example/",
        "/\\/evil.example",
        "https://evil.example/",
        "http:evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/\n/evil.example",
        " /user",
        "evil.example",
        "",
        "/" + "a" * 5000,
    ],
)
async def test_next_open_redirect_is_refused(stack: Stack, http, db, next_url) -> None:
    user = await make_user(db)
    status, location, _ = await login_response(http, stack.base, user.username, PASSWORD, next_url)
    assert (status, location) == (302, "/user")


async def test_next_on_the_page_is_sanitised(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/login", params={"next": "//evil.example"}) as r:
        body = await r.text()
    assert 'name="next" value="/user"' in body
    assert 'value="//evil.example"' not in body and "/register?next" not in body


async def test_a_burst_of_logins_runs_at_most_the_pool_of_argon2_at_once(
    stack: Stack, db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each argon2 verify holds 64 MiB: a burst of logins queues for the bounded pool
    (security.PASSWORD_THREADS) instead of running one verify per login at once (docs/operations.md
    "Password hashing"). Straight to authz, each login from its own address and browser."""
    user = await make_user(db)
    gauge = Gauge()
    monkeypatch.setattr(security, "verify_password_sync", gauge.wrap(security.verify_password_sync))
    authz = stack.url_of("authz")

    async def one(i: int, username: str) -> int:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            status, _, _ = await post_login_from(browser, authz, f"198.51.100.{i + 1}", username, PASSWORD)
            return status

    burst = security.PASSWORD_THREADS * 3 + 1
    statuses = await asyncio.gather(*(one(i, user.username) for i in range(burst)), one(burst, "nobody_at_all"))
    assert statuses == [302] * burst + [401]
    assert 1 <= gauge.peak <= security.PASSWORD_THREADS


# --- failures ----------------------------------------------------------------------------------------
async def test_wrong_password_and_unknown_user_look_the_same(stack: Stack, http, db) -> None:
    user = await make_user(db)
    status1, loc1, body1 = await login_response(http, stack.base, user.username, "wrong password!")
    status2, loc2, body2 = await login_response(http, stack.base, f"nobody_{secrets.token_hex(4)}", PASSWORD)
    assert status1 == status2 == 401
    assert loc1 == loc2 == ""
    message = "用户名(或邮箱)与密码不匹配"
    assert message in body1 and message in body2
    assert cookie(http, "sid") is None
    # the username typed is kept in the form, escaped
    assert f'value="{user.username}"' in body1


async def test_failure_message_in_english(stack: Stack, http, db) -> None:
    user = await make_user(db)
    token = await csrf_from(http, f"{stack.base}/login")
    data = {"csrf_token": token, "username": user.username, "password": "nope nope"}
    async with http.post(
        f"{stack.base}/login", data=data, headers={"Accept-Language": "en"}, allow_redirects=False
    ) as r:
        body = await r.text()
    assert r.status == 401
    assert "The username (or email) and password do not match" in body


async def test_missing_fields(stack: Stack, http) -> None:
    token = await csrf_from(http, f"{stack.base}/login")
    async with http.post(f"{stack.base}/login", data={"csrf_token": token}, allow_redirects=False) as r:
        assert r.status == 400
        assert "请输入用户名" in await r.text()


async def test_disabled_user_is_refused(stack: Stack, http, db: asyncpg.Pool) -> None:
    user = await make_user(db)
    await account_store.set_user_status(db, user.id, UserStatus.DISABLED)
    status, location, body = await login_response(http, stack.base, user.username, PASSWORD)
    assert status == 403 and location == ""
    assert "此账户已被停用" in body
    assert cookie(http, "sid") is None
    # and with a wrong password it is the ordinary failure (nothing revealed)
    status, _, body = await login_response(http, stack.base, user.username, "wrong password!")
    assert status == 401 and "此账户已被停用" not in body


async def test_csrf_missing_or_wrong_is_403(stack: Stack, http, db) -> None:
    user = await make_user(db)
    base = {"username": user.username, "password": PASSWORD}
    # no csrf cookie, no token
    async with http.post(f"{stack.base}/login", data=base, allow_redirects=False) as r:
        assert r.status == 403
    token = await csrf_from(http, f"{stack.base}/login")
    async with http.post(f"{stack.base}/login", data=base, allow_redirects=False) as r:  # cookie, no token
        assert r.status == 403
    async with http.post(
        f"{stack.base}/login", data={**base, "csrf_token": token[:-2] + "xx"}, allow_redirects=False
    ) as r:
        assert r.status == 403
    # a token from another browser (another csrf cookie) does not work here
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        other_token = await csrf_from(other, f"{stack.base}/login")
    async with http.post(f"{stack.base}/login", data={**base, "csrf_token": other_token}, allow_redirects=False) as r:
        assert r.status == 403
    assert cookie(http, "sid") is None
    async with http.post(f"{stack.base}/login", data={**base, "csrf_token": token}, allow_redirects=False) as r:
        assert r.status == 302


@pytest.mark.parametrize(
    "username",
    [
        "a" * 10_000,
        "x\x00y",
        "' OR '1'='1",
        "<script>alert(1)</script>",
        "用户名😀",
        "\u202etxt.exe",
        "%00",
    ],
)
async def test_hostile_usernames_fail_cleanly(stack: Stack, http, username) -> None:
    status, _, body = await login_response(http, stack.base, username, "some password")
    assert status == 401
    assert "<script>alert(1)</script>" not in body


async def test_hostile_password_fails_cleanly(stack: Stack, http, db) -> None:
    user = await make_user(db)
    for password in ("p" * 100_000, "\x00", PASSWORD + "\x00"):
        status, _, _ = await login_response(http, stack.base, user.username, password)
        assert status == 401


# --- rate limits -------------------------------------------------------------------------------------
async def post_login_from(
    http: aiohttp.ClientSession, authz: str, ip: str, username: str, password: str
) -> tuple[int, dict[str, str], str]:
    """POST /login straight to authz as if the gateway had seen the browser at ``ip``."""
    token = await csrf_from(http, f"{authz}/login")
    data = {"csrf_token": token, "username": username, "password": password}
    headers = {"X-Forwarded-For": ip}
    async with http.post(f"{authz}/login", data=data, headers=headers, allow_redirects=False) as r:
        return r.status, dict(r.headers), await r.text()


def test_backoff_doubles_after_the_free_failures(settings) -> None:
    free, base = settings.login_backoff_free_failures, settings.login_backoff_base_seconds
    assert [ratelimit.backoff_seconds(settings, free + i) for i in range(-1, 3)] == [0, base, 2 * base, 4 * base]
    assert ratelimit.backoff_seconds(settings, 10_000) == settings.login_backoff_max_seconds


async def test_backoff_per_account_and_ip(stack: Stack, http, db, settings) -> None:
    user = await make_user(db)
    authz = stack.url_of("authz")
    attacker = f"203.0.113.{secrets.randbelow(250) + 1}"
    for _ in range(settings.login_backoff_free_failures):
        status, _, _ = await post_login_from(http, authz, attacker, user.username, "wrong password!")
        assert status == 401
    # from that address, on that account: wait first, even with the right password, by name or email
    for identifier in (user.username, user.email):
        status, headers, body = await post_login_from(http, authz, attacker, identifier, PASSWORD)
        assert status == 429
        assert 0 < int(headers["Retry-After"]) <= settings.login_backoff_base_seconds + 1
        assert "秒" in body and "锁定" not in body
    assert cookie(http, "sid") is None
    # the same account from another address, and another account from the attacker's address: fine
    status, _, _ = await post_login_from(http, authz, "198.51.100.77", user.username, PASSWORD)
    assert status == 302
    other = await make_user(db)
    status, _, _ = await post_login_from(http, authz, attacker, other.username, PASSWORD)
    assert status == 302


async def test_an_attacker_cannot_lock_the_owner_out(stack: Stack, http, db, settings) -> None:
    """Regression (issue 10, finding 8): five wrong passwords from anywhere used to lock the
    account for 15 minutes. Now many attackers' addresses hammer it, and the owner still logs in
    from their own address (after the per-account slowdown)."""
    user = await make_user(db)
    authz = stack.url_of("authz")
    failures, n = 0, 0
    while failures < settings.login_slowdown_after_failures:
        n += 1
        for _ in range(settings.login_backoff_free_failures + 2):
            status, _, _ = await post_login_from(http, authz, f"192.0.2.{n}", user.username, "guess guess")
            assert status in (401, 429)
            failures += status == 401
    started = asyncio.get_running_loop().time()
    status, headers, _ = await post_login_from(http, authz, "198.51.100.20", user.username, PASSWORD)
    assert status == 302 and headers["Location"] == "/user"
    assert asyncio.get_running_loop().time() - started >= settings.login_slowdown_seconds  # slowed, not refused
    # and through the gateway too
    await login(http, stack.base, user.username, PASSWORD)


async def test_success_clears_the_backoff(stack: Stack, http, db, settings) -> None:
    user = await make_user(db)
    authz = stack.url_of("authz")
    ip = f"198.51.100.{secrets.randbelow(250) + 1}"
    for _ in range(2):
        for _ in range(settings.login_backoff_free_failures):
            status, _, _ = await post_login_from(http, authz, ip, user.username, "wrong password!")
            assert status == 401
        status, _, _ = await post_login_from(http, authz, ip, user.username, PASSWORD)
        assert status == 429  # the backoff first ...
        await asyncio.sleep(settings.login_backoff_base_seconds + 0.1)
        status, _, _ = await post_login_from(http, authz, ip, user.username, PASSWORD)
        assert status == 302  # ... then the right password, which clears it


async def test_unknown_accounts_are_throttled_too(stack: Stack, http, settings) -> None:
    name = f"ghost_{secrets.token_hex(4)}"
    authz = stack.url_of("authz")
    for _ in range(settings.login_backoff_free_failures):
        status, _, _ = await post_login_from(http, authz, "198.51.100.3", name, "whatever1")
        assert status == 401
    status, _, _ = await post_login_from(http, authz, "198.51.100.3", name.upper(), "whatever1")
    assert status == 429


async def test_rate_limit_per_ip(stack: Stack, http, db, settings, redis) -> None:
    """The client IP is the last X-Forwarded-For entry (set by the gateway). Straight to authz here,
    with an address of our own, so 127.0.0.1 stays usable for the other tests."""
    authz = stack.url_of("authz")
    ip = f"198.51.100.{secrets.randbelow(250) + 1}"
    headers = {"X-Forwarded-For": f"203.0.113.9, {ip}"}
    await redis.delete(ratelimit.ip_key(settings, ip))
    try:
        await redis.set(ratelimit.ip_key(settings, ip), settings.login_max_failures_per_ip - 1, ex=600)
        token = await csrf_from(http, f"{authz}/login")
        post = {"csrf_token": token, "username": f"someone_{secrets.token_hex(4)}", "password": "guess guess"}
        async with http.post(f"{authz}/login", data=post, headers=headers, allow_redirects=False) as r:
            assert r.status == 401  # the 30th failure
        user = await make_user(db)
        post = {"csrf_token": token, "username": user.username, "password": PASSWORD}
        async with http.post(f"{authz}/login", data=post, headers=headers, allow_redirects=False) as r:
            assert r.status == 429
            assert "Retry-After" in r.headers
        # the same account from another address logs in
        other = {"X-Forwarded-For": "203.0.113.9, 198.51.100.251"}
        await redis.delete(ratelimit.ip_key(settings, "198.51.100.251"))
        async with http.post(f"{authz}/login", data=post, headers=other, allow_redirects=False) as r:
            assert r.status == 302
    finally:
        await redis.delete(ratelimit.ip_key(settings, ip))


# --- logout ------------------------------------------------------------------------------------------
async def test_logout(stack: Stack, http, db, settings, redis) -> None:
    user = await make_user(db)
    await login(http, stack.base, user.username, PASSWORD)
    sid = cookie(http, "sid")
    assert sid
    async with http.get(f"{stack.base}/logout") as r:
        body = await r.text()
        assert r.status == 200
    assert 'action="/logout"' in body and 'name="csrf_token"' in body
    # without the CSRF token: refused, still logged in
    async with http.post(f"{stack.base}/logout", allow_redirects=False) as r:
        assert r.status == 403
    assert await redis.get(session_key(settings, sid)) is not None
    token = await csrf_from(http, f"{stack.base}/logout")
    async with http.post(f"{stack.base}/logout", data={"csrf_token": token}, allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == "/login"
    assert await redis.get(session_key(settings, sid)) is None
    assert cookie(http, "sid") in (None, "")
    async with http.get(f"{stack.base}/logout") as r:
        assert "你当前没有登录" in await r.text()


async def test_language_link_keeps_next(stack: Stack, http) -> None:
    async with http.get(f"{stack.base}/login", params={"next": "/user/topup"}) as r:
        body = await r.text()
    assert 'href="/login?next=%2Fuser%2Ftopup&amp;lang=en"' in body
