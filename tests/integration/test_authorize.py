"""GET /api/oauth2/authorize and the consent step, through the gateway, against real Postgres/Redis
(RFC 6749 4.1.1-4.1.2.1, RFC 7636, RFC 9207, OIDC prompt/max_age; the guide's one-click login)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from html import unescape
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from yarl import URL

from libs.contracts.authz import delete_user_consents
from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from libs.platform.redis import key
from libs.platform.security import token_hash
from services.account import store as account_store
from services.authz.store import consent_records
from tests.support.clock import age_consent
from tests.support.factories import make_developer, make_user
from tests.support.oauth import (
    REQUEST_RE,
    SHARED_SCRIPT,
    authorize,
    csrf_from,
    form_value,
    login,
    make_app,
    pkce_pair,
    query_of,
)
from tests.support.stack import Stack, free_port

PASSWORD = "correct horse battery"
CB = "https://app.example/oauth/callback"
CB_Q = "https://app.example/cb?tenant=7"
CB_LOCAL = "http://localhost:3000/callback"


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def owner(db: asyncpg.Pool, settings: Settings):
    user, _ = await make_developer(db, settings)
    return user


@pytest.fixture(scope="module")
async def client(db, settings, owner) -> tuple[str, str | None]:
    return await make_app(db, settings, owner.id, [CB, CB_Q, CB_LOCAL], name="Acme 报表")


@pytest.fixture
async def user(db):
    return await make_user(db)


@pytest.fixture
async def browser(http: aiohttp.ClientSession, stack: Stack, user) -> aiohttp.ClientSession:
    await login(http, stack.base, user.username, PASSWORD)
    return http


def params(client_id: str, redirect_uri: str = CB, /, **extra: str | None) -> dict[str, str]:
    p: dict[str, str | None] = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": "profile balance",
        "state": "st-123",
        **extra,
    }
    return {k: v for k, v in p.items() if v is not None}


async def get(http: aiohttp.ClientSession, stack: Stack, query: dict[str, str] | str, **kw):
    """GET the authorize endpoint (no redirects followed): (status, headers, body)."""
    if isinstance(query, str):
        url = URL(f"{stack.base}/api/oauth2/authorize?{query}", encoded=True)
        async with http.get(url, allow_redirects=False, **kw) as r:
            return r.status, r.headers, await r.text()
    async with http.get(f"{stack.base}/api/oauth2/authorize", params=query, allow_redirects=False, **kw) as r:
        return r.status, r.headers, await r.text()


def assert_error_page(status: int, headers, body: str) -> None:
    assert status == 400
    assert "Location" not in headers
    assert headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-store"
    assert "授权请求无效" in body


def assert_redirect_error(
    status, headers, settings: Settings, error: str, redirect_uri: str = CB, state: str | None = "st-123"
) -> dict[str, str]:
    assert status == 302, status
    location = headers["Location"]
    assert location.startswith(redirect_uri + ("&" if "?" in redirect_uri else "?")), location
    assert headers["Cache-Control"] == "no-store"
    q = query_of(location)
    assert q["error"] == error, q
    assert q.get("error_description")
    assert q["iss"] == settings.issuer
    if state is None:
        assert "state" not in q
    else:
        assert q["state"] == state
    assert "code" not in q
    return q


def session_key(settings: Settings, http: aiohttp.ClientSession) -> str:
    sid = next(c.value for c in http.cookie_jar if c.key == "sid")
    return key(settings, "session", hashlib.sha256(sid.encode()).hexdigest())


async def age_session(redis: aioredis.Redis, settings: Settings, http: aiohttp.ClientSession, seconds: int) -> None:
    """Pretend the user entered their password ``seconds`` ago."""
    skey = session_key(settings, http)
    data = orjson.loads(await redis.get(skey))
    data["auth_time"] -= seconds
    await redis.set(skey, orjson.dumps(data), keepttl=True)


# --- client and redirect_uri: an error page, never a redirect ----------------------------------------
@pytest.mark.parametrize(
    "client_id",
    [None, "", "client_doesnotexist", "x" * 5000, "client_\x00", "' OR 1=1 --", "<script>alert(1)</script>", "客户端"],
)
async def test_unknown_client_is_an_error_page(stack, http, client_id) -> None:
    status, headers, body = await get(http, stack, params("unused", client_id=client_id))
    assert_error_page(status, headers, body)
    assert "<script>alert(1)</script>" not in body
    assert "未找到该应用" in body


@pytest.mark.parametrize(
    "redirect_uri",
    [
        None,
        "",
        "https://app.example/oauth/callback/",  # trailing slash
        "https://APP.example/oauth/callback",  # different case
        "https://app.example/oauth/Callback",
        "https://app.example/oauth/callback?x=1",  # extra query
        "https://app.example/oauth/callback#frag",
        "http://app.example/oauth/callback",  # other scheme
        "https://app.example:443/oauth/callback",  # explicit port
        "https://app.example/oauth/callback/../callback",
        "https://app.example.evil.example/oauth/callback",
        "https://evil.example/?https://app.example/oauth/callback",
        "https://app.example/cb",  # prefix of a registered one (CB_Q)
        "https://app.example/cb?tenant=7&x=1",
        "https://app.example/oauth/callback%20",
        "https://app.example/oauth/callback\x00",
        "javascript:alert(1)//<b>",
        "h" * 5000,
    ],
)
async def test_unregistered_redirect_uri_is_an_error_page(stack, http, client, redirect_uri) -> None:
    status, headers, body = await get(http, stack, params(client[0], CB, redirect_uri=redirect_uri))
    assert_error_page(status, headers, body)
    assert "redirect_uri" in body
    assert "<b>" not in body


async def test_duplicate_client_or_redirect_uri_is_an_error_page(stack, http, client) -> None:
    base = urlencode(params(client[0]))
    for extra in (f"client_id={client[0]}", f"redirect_uri={CB}", "client_id=other"):
        status, headers, body = await get(http, stack, f"{base}&{extra}")
        assert_error_page(status, headers, body)
        assert "重复" in body


async def test_error_page_in_english(stack, http) -> None:
    status, _, body = await get(http, stack, params("nope"), headers={"Accept-Language": "en"})
    assert status == 400
    assert "Invalid authorization request" in body and "client_id" in body


# --- errors sent back to the redirect_uri ------------------------------------------------------------
async def test_missing_response_type(stack, http, settings, client) -> None:
    r = await get(http, stack, params(client[0], response_type=None))
    assert_redirect_error(*r[:2], settings, "invalid_request")


@pytest.mark.parametrize("response_type", ["token", "id_token", "code token", "CODE", "code "])
async def test_unsupported_response_type(stack, http, settings, client, response_type) -> None:
    r = await get(http, stack, params(client[0], response_type=response_type))
    assert_redirect_error(*r[:2], settings, "unsupported_response_type")


async def test_missing_state(stack, http, settings, client) -> None:
    r = await get(http, stack, params(client[0], state=None))
    q = assert_redirect_error(*r[:2], settings, "invalid_request", state=None)
    assert "state" in q["error_description"]
    r = await get(http, stack, params(client[0], state=""))
    assert_redirect_error(*r[:2], settings, "invalid_request", state=None)


@pytest.mark.parametrize("scope", ["admin", "profile admin", "profile,balance", "PROFILE", "openid' OR 1=1", "余额"])
async def test_invalid_scope(stack, http, settings, client, scope) -> None:
    r = await get(http, stack, params(client[0], scope=scope))
    assert_redirect_error(*r[:2], settings, "invalid_scope")


async def test_repeated_parameter(stack, http, settings, client) -> None:
    base = urlencode(params(client[0]))
    for extra in ("scope=profile", "response_type=code", "nonce=a&nonce=b", "auto_authorize=true&auto_authorize=true"):
        r = await get(http, stack, f"{base}&{extra}")
        q = assert_redirect_error(*r[:2], settings, "invalid_request")
        assert "repeated" in q["error_description"]
    r = await get(http, stack, f"{base}&state=again")
    assert_redirect_error(*r[:2], settings, "invalid_request", state=None)


@pytest.mark.parametrize(
    "extra",
    [
        {"code_challenge": "a" * 43, "code_challenge_method": "plain"},
        {"code_challenge": "a" * 43, "code_challenge_method": "s256"},
        {"code_challenge": "a" * 43},  # no method means plain (RFC 7636 4.3): refused
        {"code_challenge_method": "S256"},  # method without challenge
        {"code_challenge": "a" * 42, "code_challenge_method": "S256"},
        {"code_challenge": "a" * 129, "code_challenge_method": "S256"},
        {"code_challenge": "a" * 42 + "+", "code_challenge_method": "S256"},
        {"code_challenge": "a" * 42 + "=", "code_challenge_method": "S256"},
        {"code_challenge": "a" * 42 + "é", "code_challenge_method": "S256"},
    ],
)
async def test_bad_pkce(stack, http, settings, client, extra) -> None:
    r = await get(http, stack, params(client[0], **extra))
    assert_redirect_error(*r[:2], settings, "invalid_request")


async def test_public_client_must_use_pkce(stack, http, settings, db, owner) -> None:
    cid, secret = await make_app(db, settings, owner.id, [CB], token_endpoint_auth_method="none")
    assert secret is None
    r = await get(http, stack, params(cid))
    q = assert_redirect_error(*r[:2], settings, "invalid_request")
    assert "PKCE" in q["error_description"]


@pytest.mark.parametrize(
    "extra",
    [
        {"prompt": "bogus"},
        {"prompt": "none login"},
        {"prompt": "select_account"},
        {"max_age": "-1"},
        {"max_age": "1.5"},
        {"max_age": "abc"},
        {"max_age": "99999999999"},
        {"max_age": "١٢"},  # non-ASCII digits
        {"nonce": "n" * 256},
        {"nonce": "a\x00b"},
        {"nonce": "line\nbreak"},
    ],
)
async def test_bad_prompt_max_age_nonce(stack, http, settings, client, extra) -> None:
    r = await get(http, stack, params(client[0], **extra))
    assert_redirect_error(*r[:2], settings, "invalid_request")


async def test_errors_keep_the_redirect_uris_own_query(stack, http, settings, client) -> None:
    r = await get(http, stack, params(client[0], CB_Q, response_type="token"))
    assert r[1]["Location"].startswith(CB_Q + "&")
    q = assert_redirect_error(*r[:2], settings, "unsupported_response_type", redirect_uri=CB_Q)
    assert q["tenant"] == "7"


# --- not logged in -----------------------------------------------------------------------------------
async def test_not_logged_in_goes_to_login_and_back(stack, http, db, settings, client, user) -> None:
    query = params(client[0], auto_authorize="true", state="a b&c=d")
    status, headers, _ = await get(http, stack, query)
    assert status == 302
    assert headers["Cache-Control"] == "no-store"
    login_url = urlsplit(headers["Location"])
    assert login_url.path == "/login"
    next_url = dict(parse_qsl(login_url.query))["next"]
    assert next_url.startswith("/api/oauth2/authorize?")
    resumed = dict(parse_qsl(urlsplit(next_url).query))
    assert len(resumed.pop("login_request")) >= 43  # a pointer to the pending request kept in Redis
    assert resumed == query
    # the login page keeps next; logging in sends the browser back to the authorize request
    async with http.get(f"{stack.base}{headers['Location']}") as r:
        page = await r.text()
    token = form_value(page)
    form = {"csrf_token": token, "username": user.username, "password": PASSWORD, "next": next_url}
    async with http.post(f"{stack.base}/login", data=form, allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == next_url
    async with http.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
        assert r.status == 302
        q = query_of(r.headers["Location"])
    assert r.headers["Location"].startswith(CB + "?")
    assert q["code"] and q["state"] == "a b&c=d" and q["iss"] == settings.issuer


async def test_prompt_none_not_logged_in_is_login_required(stack, http, settings, client) -> None:
    r = await get(http, stack, params(client[0], prompt="none", auto_authorize="true"))
    assert_redirect_error(*r[:2], settings, "login_required")


async def test_disabled_users_session_no_longer_counts(stack, browser, db, settings, client, user) -> None:
    assert "code" in await authorize(browser, stack.base, client[0], CB)
    await account_store.set_user_status(db, user.id, UserStatus.DISABLED)
    r = await get(browser, stack, params(client[0], prompt="none", auto_authorize="true"))
    assert_redirect_error(*r[:2], settings, "login_required")
    assert "sid=" in r[1].get("Set-Cookie", "")  # the dead session is ended, its cookie cleared
    status, headers, _ = await get(browser, stack, params(client[0], auto_authorize="true"))
    assert status == 302 and headers["Location"].startswith("/login?")


# --- one-click login ---------------------------------------------------------------------------------
async def test_one_click_returns_a_code_at_once(stack, browser, db, settings, client, user) -> None:
    status, headers, _ = await get(browser, stack, params(client[0], auto_authorize="true"), headers={"Origin": CB})
    assert status == 302
    assert headers["Cache-Control"] == "no-store"
    assert not any(h.lower().startswith("access-control-") for h in headers)  # never CORS
    location = headers["Location"]
    assert location.startswith(CB + "?")
    q = query_of(location)
    assert set(q) == {"code", "state", "iss"}
    assert q["state"] == "st-123" and q["iss"] == settings.issuer
    assert len(q["code"]) >= 43
    grant = await db.fetchrow("SELECT * FROM grants WHERE user_id = $1 AND client_id = $2", user.id, client[0])
    assert grant is not None and list(grant["scopes"]) == ["profile", "balance"]


async def test_one_click_adds_new_scopes_and_leaves_a_covering_record_alone(stack, browser, db, client, user) -> None:
    """One statement records the consent with the code: new scopes are added (the first time kept);
    a record that already covers the request is not rewritten."""
    grant_sql = "SELECT xmin::text AS version, * FROM grants WHERE user_id = $1 AND client_id = $2"
    assert (await authorize(browser, stack.base, client[0], CB))["code"]
    first = await db.fetchrow(grant_sql, user.id, client[0])
    for scope in ("profile balance", "balance"):
        assert (await authorize(browser, stack.base, client[0], CB, scope=scope))["code"]
    assert await db.fetchrow(grant_sql, user.id, client[0]) == first
    assert (await authorize(browser, stack.base, client[0], CB, scope="openid"))["code"]
    grant = await db.fetchrow(grant_sql, user.id, client[0])
    assert list(grant["scopes"]) == ["profile", "balance", "openid"]
    assert grant["first_authorized_at"] == first["first_authorized_at"]
    assert grant["last_authorized_at"] >= first["last_authorized_at"]


async def test_code_row_is_hashed_and_bound(stack, browser, db, settings, client, user) -> None:
    verifier, challenge = pkce_pair()
    q = await authorize(
        browser,
        stack.base,
        client[0],
        CB_Q,
        scope="profile openid",
        state="xyz",
        code_challenge=challenge,
        code_challenge_method="S256",
        nonce="n-0S6_WzA2Mj",
    )
    code = q["code"]
    assert q["tenant"] == "7" and q["state"] == "xyz" and q["iss"] == settings.issuer
    row = await db.fetchrow(
        "SELECT * FROM authorization_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, code)
    )
    assert row is not None
    assert row["client_id"] == client[0]
    assert row["user_id"] == user.id
    assert row["redirect_uri"] == CB_Q
    assert row["scope"] == "profile openid"
    assert row["code_challenge"] == challenge and row["code_challenge_method"] == "S256"
    assert row["nonce"] == "n-0S6_WzA2Mj"
    assert row["used_at"] is None and row["family_id"] is None
    ttl = (row["expires_at"] - row["created_at"]).total_seconds()
    assert settings.auth_code_ttl_seconds - 5 <= ttl <= settings.auth_code_ttl_seconds
    assert abs(row["auth_time"].timestamp() - time.time()) < 60
    # the plain code is nowhere in the table
    dump = await db.fetch("SELECT t::text AS r FROM authorization_codes t")
    assert not any(code in r["r"] for r in dump)


async def test_scope_defaults_to_profile(stack, browser, db, settings, client) -> None:
    for scope in (None, "", "   "):
        q = await authorize(browser, stack.base, client[0], CB, scope=scope)  # type: ignore[arg-type]
        stored = await db.fetchval(
            "SELECT scope FROM authorization_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, q["code"])
        )
        assert stored == "profile"


async def test_scopes_are_deduplicated(stack, browser, db, settings, client) -> None:
    q = await authorize(browser, stack.base, client[0], CB, scope="balance  profile balance")
    stored = await db.fetchval(
        "SELECT scope FROM authorization_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, q["code"])
    )
    assert stored == "balance profile"


async def test_public_client_with_pkce_gets_a_code(stack, browser, db, settings, owner) -> None:
    cid, _ = await make_app(db, settings, owner.id, [CB_LOCAL], token_endpoint_auth_method="none")
    _, challenge = pkce_pair()
    q = await authorize(browser, stack.base, cid, CB_LOCAL, code_challenge=challenge, code_challenge_method="S256")
    assert q["code"]


async def test_each_code_is_new(stack, browser, client) -> None:
    codes = {(await authorize(browser, stack.base, client[0], CB))["code"] for _ in range(3)}
    assert len(codes) == 3


async def test_head_never_issues_a_code(stack, browser, client) -> None:
    async with browser.head(
        f"{stack.base}/api/oauth2/authorize", params=params(client[0], auto_authorize="true"), allow_redirects=False
    ) as r:
        assert r.status == 405


async def test_per_app_switch_turns_one_click_off(stack, browser, db, settings, owner) -> None:
    cid, _ = await make_app(db, settings, owner.id, [CB], auto_authorize=False, name="Switched Off")
    status, headers, body = await get(browser, stack, params(cid, auto_authorize="true"))
    assert status == 200 and "Switched Off" in body and 'action="/consent"' in body


async def test_global_switch_turns_one_click_off(stack, browser, settings, client) -> None:
    """A second authz instance with AUTO_AUTHORIZE_ENABLED=false (same database and Redis)."""
    port = free_port()
    off = settings.model_copy(update={"auto_authorize_enabled": False})
    runner = await stack.start("authz", port=port, settings=off)
    try:
        url = f"http://127.0.0.1:{port}/api/oauth2/authorize"
        async with browser.get(url, params=params(client[0], auto_authorize="true"), allow_redirects=False) as r:
            body = await r.text()
            assert r.status == 200
        assert 'action="/consent"' in body
    finally:
        await runner.cleanup()


# --- consent -----------------------------------------------------------------------------------------
async def consent_page(http, stack, client_id: str, **extra: str | None) -> tuple[str, str, str]:
    """(page html, request id, csrf token) of the consent page."""
    status, headers, body = await get(http, stack, params(client_id, **extra))
    assert status == 200, (status, headers.get("Location"), body[:300])
    assert headers["Cache-Control"] == "no-store"
    return body, form_value(body, REQUEST_RE), form_value(body)


async def answer(http, stack, request_id: str, token: str, decision: str) -> tuple[int, str, str]:
    data = {"csrf_token": token, "request": request_id, "decision": decision}
    async with http.post(f"{stack.base}/consent", data=data, allow_redirects=False) as r:
        return r.status, r.headers.get("Location", ""), await r.text()


async def test_consent_page_shows_app_and_scopes(stack, browser, client, user) -> None:
    body, request_id, _ = await consent_page(browser, stack, client[0], scope="profile balance openid email")
    assert "Acme 报表" in body
    for words in ("你的用户名", "你的账户余额", "你的账户编号", "你的邮箱地址"):
        assert words in body
    assert user.username in body
    assert "app.example" in body
    assert 'value="allow"' in body and 'value="deny"' in body and 'action="/consent"' in body
    assert body.count("<script") == body.count(SHARED_SCRIPT) == 1
    assert len(request_id) >= 43


async def test_consent_page_in_english(stack, browser, client) -> None:
    status, _, body = await get(
        browser, stack, params(client[0], scope="profile balance"), headers={"Accept-Language": "en"}
    )
    assert status == 200
    assert "your username" in body and "your account balance" in body and "Allow" in body


async def test_consent_allow_issues_a_code_and_records_the_grant(stack, browser, db, settings, client, user) -> None:
    _, request_id, token = await consent_page(browser, stack, client[0])
    status, location, _ = await answer(browser, stack, request_id, token, "allow")
    assert status == 302 and location.startswith(CB + "?")
    q = query_of(location)
    assert set(q) == {"code", "state", "iss"} and q["state"] == "st-123" and q["iss"] == settings.issuer
    row = await db.fetchrow(
        "SELECT * FROM authorization_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, q["code"])
    )
    assert row["user_id"] == user.id and row["scope"] == "profile balance" and row["client_id"] == client[0]
    grant = await db.fetchrow("SELECT * FROM grants WHERE user_id = $1 AND client_id = $2", user.id, client[0])
    assert list(grant["scopes"]) == ["profile", "balance"]
    # single use
    status, location, body = await answer(browser, stack, request_id, token, "allow")
    assert status == 400 and location == "" and "已过期" in body


async def test_consent_deny_is_access_denied(stack, browser, db, settings, client, user) -> None:
    _, request_id, token = await consent_page(browser, stack, client[0], redirect_uri=CB_Q, state="deny-me")
    status, location, _ = await answer(browser, stack, request_id, token, "deny")
    assert status == 302
    q = assert_redirect_error(
        302, {"Location": location, "Cache-Control": "no-store"}, settings, "access_denied", CB_Q, "deny-me"
    )
    assert q["tenant"] == "7"
    assert await db.fetchval("SELECT count(*) FROM grants WHERE user_id = $1", user.id) == 0
    assert await db.fetchval("SELECT count(*) FROM authorization_codes WHERE user_id = $1", user.id) == 0


async def test_consent_needs_csrf(stack, browser, client) -> None:
    _, request_id, token = await consent_page(browser, stack, client[0])
    for bad in ("", token[:-3] + "abc"):
        async with browser.post(
            f"{stack.base}/consent",
            data={"csrf_token": bad, "request": request_id, "decision": "allow"},
            allow_redirects=False,
        ) as r:
            assert r.status == 403 and "Location" not in r.headers
    # the request was not consumed by the refused posts
    status, location, _ = await answer(browser, stack, request_id, token, "allow")
    assert status == 302 and "code=" in location


async def test_consent_request_belongs_to_its_user(stack, browser, db, client) -> None:
    _, request_id, _ = await consent_page(browser, stack, client[0])
    other = await make_user(db)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as mallory:
        await login(mallory, stack.base, other.username, PASSWORD)
        token = await csrf_from(mallory, f"{stack.base}/logout")
        status, location, body = await answer(mallory, stack, request_id, token, "allow")
    assert status == 403 and location == ""
    assert await db.fetchval("SELECT count(*) FROM authorization_codes WHERE user_id = $1", other.id) == 0


async def test_consent_bad_posts(stack, browser, http, client) -> None:
    _, request_id, token = await consent_page(browser, stack, client[0])
    for decision, rid in (("maybe", request_id), ("allow", "nope"), ("allow", ""), ("allow", "x" * 10_000)):
        status, location, _ = await answer(browser, stack, rid, token, decision)
        assert status == 400 and location == ""


async def test_consent_after_logout_is_refused(stack, browser, client) -> None:
    _, request_id, token = await consent_page(browser, stack, client[0])
    async with browser.post(f"{stack.base}/logout", data={"csrf_token": token}, allow_redirects=False) as r:
        assert r.status == 302
    status, location, _ = await answer(browser, stack, request_id, token, "allow")
    assert status == 401 and location == ""


async def test_consent_expires(stack, browser, redis, settings, client) -> None:
    _, request_id, token = await consent_page(browser, stack, client[0])
    rkey = key(settings, "consent", hashlib.sha256(request_id.encode()).hexdigest())
    ttl = await redis.ttl(rkey)
    assert 0 < ttl <= settings.consent_request_ttl_seconds
    await redis.delete(rkey)
    status, _, body = await answer(browser, stack, request_id, token, "allow")
    assert status == 400 and "已过期" in body


async def test_existing_grant_skips_consent(stack, browser, db, settings, client, user) -> None:
    _, request_id, token = await consent_page(browser, stack, client[0], scope="profile balance")
    await answer(browser, stack, request_id, token, "allow")
    first = await db.fetchval("SELECT first_authorized_at FROM grants WHERE user_id = $1", user.id)
    # the same or fewer scopes: a code at once, without auto_authorize
    for scope in ("profile balance", "balance", None):
        q = await authorize(browser, stack.base, client[0], CB, scope=scope, auto_authorize=None)  # type: ignore[arg-type]
        assert q["code"]
    # prompt=none is fine when consent exists
    q = await authorize(browser, stack.base, client[0], CB, auto_authorize=None, prompt="none")
    assert q["code"]
    # a new scope asks again; consenting unions the scopes and keeps the first time
    body, request_id, token = await consent_page(browser, stack, client[0], scope="openid")
    assert "你的账户编号" in body
    await answer(browser, stack, request_id, token, "allow")
    grant = await db.fetchrow("SELECT * FROM grants WHERE user_id = $1", user.id)
    assert list(grant["scopes"]) == ["profile", "balance", "openid"]
    assert grant["first_authorized_at"] == first and grant["last_authorized_at"] > first


async def test_an_unchanged_consent_record_is_not_rewritten(stack, browser, db, settings, client, user) -> None:
    """A covering record answers with a code in one statement that leaves it alone; only a
    last_authorized_at a minute old is refreshed (the authorized-apps page shows it to the minute)."""
    _, request_id, token = await consent_page(browser, stack, client[0])
    await answer(browser, stack, request_id, token, "allow")
    before = await db.fetchrow("SELECT xmin::text AS version, * FROM grants WHERE user_id = $1", user.id)
    for _ in range(3):
        assert (await authorize(browser, stack.base, client[0], CB, auto_authorize=None))["code"]  # type: ignore[arg-type]
    after = await db.fetchrow("SELECT xmin::text AS version, * FROM grants WHERE user_id = $1", user.id)
    assert after == before
    await age_consent(db, user.id, client[0], 61)
    assert (await authorize(browser, stack.base, client[0], CB, auto_authorize=None))["code"]  # type: ignore[arg-type]
    refreshed = await db.fetchrow("SELECT * FROM grants WHERE user_id = $1", user.id)
    assert refreshed["last_authorized_at"] >= before["last_authorized_at"]
    assert list(refreshed["scopes"]) == list(before["scopes"])


async def test_a_revocation_in_progress_holds_the_code_back(stack, browser, db, settings, client, user) -> None:
    """The record is locked while the code is stored: an authorize that meets a revocation still
    committing waits for it, then finds no record (no code; prompt=none: consent_required)."""
    _, request_id, token = await consent_page(browser, stack, client[0])
    await answer(browser, stack, request_id, token, "allow")
    codes = "SELECT count(*) FROM authorization_codes WHERE user_id = $1"
    issued = await db.fetchval(codes, user.id)
    async with db.acquire() as conn, conn.transaction():
        assert await consent_records.delete(conn, user.id, client[0])
        pending = asyncio.ensure_future(get(browser, stack, params(client[0], prompt="none")))
        done, _ = await asyncio.wait([pending], timeout=0.5)
        assert not done  # waiting for the revocation's row lock
    assert_redirect_error(*(await pending)[:2], settings, "consent_required")
    assert await db.fetchval(codes, user.id) == issued


async def test_authorize_waits_for_a_user_being_disabled(stack, browser, db, settings, client, user) -> None:
    """Disabling a user locks the user's row, then deletes the consent records: an authorize
    arriving in between waits for it (no deadlock between the two), then issues no code."""
    _, request_id, token = await consent_page(browser, stack, client[0])
    await answer(browser, stack, request_id, token, "allow")
    async with db.acquire() as conn, conn.transaction():
        await account_store.lock_user_status(conn, user.id)
        pending = asyncio.ensure_future(get(browser, stack, params(client[0], prompt="none")))
        done, _ = await asyncio.wait([pending], timeout=0.5)
        assert not done  # waiting for the user's row
        await account_store.set_user_status(conn, user.id, UserStatus.DISABLED)
        await delete_user_consents(conn, user.id)
    assert_redirect_error(*(await pending)[:2], settings, "login_required")


@pytest.mark.parametrize("recorded", [True, False], ids=["a-record-to-widen", "a-first-consent"])
async def test_a_consent_answer_waits_for_a_user_being_disabled(
    stack, browser, db, settings, client, user, recorded: bool
) -> None:
    """POST /consent locks the user's row before the consent record, as authorize does: an Allow
    arriving while the user is being disabled waits for it (before, it held the record the disable
    deletes and deadlocked: a 503; without a record it re-created one for the disabled user), then
    records nothing and issues no code: the expired-login page."""
    if recorded:
        await authorize(browser, stack.base, client[0], CB)  # one click: a record for "profile balance"
    _, request_id, token = await consent_page(browser, stack, client[0], scope="openid")
    codes = "SELECT count(*) FROM authorization_codes WHERE user_id = $1"
    issued = await db.fetchval(codes, user.id)
    async with db.acquire() as conn, conn.transaction():
        await account_store.lock_user_status(conn, user.id)
        pending = asyncio.ensure_future(answer(browser, stack, request_id, token, "allow"))
        done, _ = await asyncio.wait([pending], timeout=0.5)
        assert not done  # waiting for the user's row
        await account_store.set_user_status(conn, user.id, UserStatus.DISABLED)
        await delete_user_consents(conn, user.id)
    status, location, body = await pending
    assert (status, location) == (401, ""), body[:300]
    assert "你的登录已过期" in body
    assert await db.fetchval("SELECT count(*) FROM grants WHERE user_id = $1", user.id) == 0
    assert await db.fetchval(codes, user.id) == issued


async def test_an_allow_meeting_a_revocation_in_progress_is_a_new_consent(stack, browser, db, client, user) -> None:
    """The consent page's Allow is a consent given now: one that meets a revocation still
    committing waits for the record's lock, then records a new record with only the scopes it
    answers (the revoked ones stay revoked) and gets its code, as it would a moment later."""
    await authorize(browser, stack.base, client[0], CB)  # one click: a record for "profile balance"
    first = await db.fetchval("SELECT first_authorized_at FROM grants WHERE user_id = $1", user.id)
    _, request_id, token = await consent_page(browser, stack, client[0], scope="openid")
    async with db.acquire() as conn, conn.transaction():
        assert await consent_records.delete(conn, user.id, client[0])
        pending = asyncio.ensure_future(answer(browser, stack, request_id, token, "allow"))
        done, _ = await asyncio.wait([pending], timeout=0.5)
        assert not done  # waiting for the revocation's row lock
    status, location, _ = await pending
    assert status == 302 and query_of(location)["code"]
    grant = await db.fetchrow("SELECT * FROM grants WHERE user_id = $1", user.id)
    assert list(grant["scopes"]) == ["openid"] and grant["first_authorized_at"] > first


async def test_prompt_none_without_grant_is_consent_required(stack, browser, settings, client) -> None:
    r = await get(browser, stack, params(client[0], prompt="none"))
    assert_redirect_error(*r[:2], settings, "consent_required")


async def test_prompt_consent_forces_the_page(stack, browser, client) -> None:
    await authorize(browser, stack.base, client[0], CB)  # one click: a grant now exists
    body, _, _ = await consent_page(browser, stack, client[0], auto_authorize="true", prompt="consent")
    assert "Acme 报表" in body


# --- prompt=login and max_age ------------------------------------------------------------------------
async def relogin_via(http, stack, location: str, username: str) -> str:
    """Follow a redirect to the login page, log in; return the next URL it sends us to."""
    assert location.startswith("/login?"), location
    async with http.get(f"{stack.base}{location}") as r:
        page = await r.text()
    next_url = dict(parse_qsl(urlsplit(location).query))["next"]
    form = {"csrf_token": form_value(page), "username": username, "password": PASSWORD, "next": next_url}
    async with http.post(f"{stack.base}/login", data=form, allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"] == next_url
    return next_url


async def test_prompt_login_forces_a_fresh_login_without_looping(
    stack, browser, db, settings, client, user, redis
) -> None:
    await age_session(redis, settings, browser, 120)
    status, headers, _ = await get(browser, stack, params(client[0], auto_authorize="true", prompt="login"))
    assert status == 302
    location = headers["Location"]
    assert "reauth=1" in location
    async with browser.get(f"{stack.base}{location}") as r:
        assert "重新输入密码" in await r.text()
    next_url = await relogin_via(browser, stack, location, user.username)
    async with browser.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
        assert r.status == 302
        q = query_of(r.headers["Location"])
    assert q["code"] and q["state"] == "st-123"
    auth_time = await db.fetchval(
        "SELECT auth_time FROM authorization_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, q["code"])
    )
    assert time.time() - auth_time.timestamp() < 30  # the fresh login, not the aged one


async def test_a_login_marker_in_the_url_cannot_skip_the_password(stack, browser, settings, client, redis) -> None:
    """Regression (issue 10, finding 2): ``login_after=<recent time>`` in the URL used to count as a
    fresh login for any session younger than 10 minutes."""
    await age_session(redis, settings, browser, 120)
    now = int(time.time())
    for marker in (str(now - 121), str(now - 300), str(now - 590), str(now), str(now + 3600), "0", "abc"):
        for extra in ({"prompt": "login"}, {"max_age": "30"}):
            status, headers, _ = await get(
                browser, stack, params(client[0], auto_authorize="true", login_after=marker, **extra)
            )
            assert status == 302 and headers["Location"].startswith("/login?"), (marker, extra, headers["Location"])


async def test_a_pending_login_request_id_is_no_fresh_login_by_itself(
    stack, browser, settings, client, user, redis
) -> None:
    """The login_request pointer counts only once a password login in *this* session marked it,
    for exactly these parameters, and only once."""
    await age_session(redis, settings, browser, 120)
    query = params(client[0], auto_authorize="true", prompt="login")
    status, headers, _ = await get(browser, stack, query)
    next_url = dict(parse_qsl(urlsplit(headers["Location"]).query))["next"]
    # followed without entering the password: the login page again
    async with browser.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"].startswith("/login?")
    # marked by a real login, but replayed with other parameters: not fresh
    status, headers, _ = await get(browser, stack, query)
    next_url = await relogin_via(browser, stack, headers["Location"], user.username)
    tampered = next_url.replace("state=st-123", "state=other")
    async with browser.get(f"{stack.base}{tampered}", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"].startswith("/login?")
    # marked by a real login, from another browser (another session): not fresh
    status, headers, _ = await get(browser, stack, query)
    next_url = await relogin_via(browser, stack, headers["Location"], user.username)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        await login(other, stack.base, user.username, PASSWORD)
        await age_session(redis, settings, other, 120)
        async with other.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"].startswith("/login?")
    # the right browser: a code, once; the same pointer again asks for the password
    async with browser.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"].startswith("/login?")  # consumed by the other browser
    status, headers, _ = await get(browser, stack, query)
    next_url = await relogin_via(browser, stack, headers["Location"], user.username)
    async with browser.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
        assert r.status == 302 and "code" in query_of(r.headers["Location"])
    await age_session(redis, settings, browser, 120)
    async with browser.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"].startswith("/login?")


async def test_switching_account_on_the_consent_page_counts_as_the_fresh_login(
    stack, browser, db, settings, client, user, redis
) -> None:
    """The consent page's 切换账户 link resumes the same request through its own pending login
    request: logging in as someone else there satisfies prompt=login, without a second login."""
    await age_session(redis, settings, browser, 120)
    status, headers, _ = await get(browser, stack, params(client[0], prompt="login"))
    next_url = await relogin_via(browser, stack, headers["Location"], user.username)
    async with browser.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
        page = await r.text()
        assert r.status == 200 and user.username in page
    switch = unescape(re.search(r'href="(/login\?next=[^"]+)"', page).group(1))  # type: ignore[union-attr]
    other = await make_user(db)
    next_url = await relogin_via(browser, stack, switch, other.username)
    async with browser.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
        page = await r.text()
        assert r.status == 200 and 'action="/consent"' in page and other.username in page


async def test_max_age_zero_with_prompt_none_is_login_required(stack, browser, settings, client, redis) -> None:
    await age_session(redis, settings, browser, 10)
    r = await get(browser, stack, params(client[0], auto_authorize="true", max_age="0", prompt="none"))
    assert_redirect_error(*r[:2], settings, "login_required")


async def test_max_age_exceeded_forces_login(stack, browser, settings, client, user, redis) -> None:
    await age_session(redis, settings, browser, 600)
    # within max_age: a code
    q = await authorize(browser, stack.base, client[0], CB, max_age="3600")
    assert q["code"]
    # beyond max_age: prompt=none -> login_required; otherwise the login page, then a code
    r = await get(browser, stack, params(client[0], auto_authorize="true", max_age="300", prompt="none"))
    assert_redirect_error(*r[:2], settings, "login_required")
    status, headers, _ = await get(browser, stack, params(client[0], auto_authorize="true", max_age="0"))
    assert status == 302
    next_url = await relogin_via(browser, stack, headers["Location"], user.username)
    await asyncio.sleep(1.1)  # now - auth_time > 0: even max_age=0 must not loop after the login
    async with browser.get(f"{stack.base}{next_url}", allow_redirects=False) as r:
        assert r.status == 302
        assert "code" in query_of(r.headers["Location"])


# --- hostile input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "state",
    ["状态-😀", "<script>alert(1)</script>", "' OR '1'='1", "a&b=c#d", "%00", "s" * 2048, "\u202e"],
)
async def test_state_is_echoed_exactly(stack, browser, client, state) -> None:
    q = await authorize(browser, stack.base, client[0], CB, state=state)
    assert q["state"] == state and q["code"]


async def test_too_long_state(stack, http, settings, client) -> None:
    r = await get(http, stack, params(client[0], state="s" * 2049))
    assert_redirect_error(*r[:2], settings, "invalid_request", state=None)


async def test_huge_request_is_refused_cleanly(stack, http, client) -> None:
    status, headers, _ = await get(http, stack, params(client[0], state="s" * 20_000))
    assert 400 <= status < 500
    assert "Location" not in headers or not headers["Location"].startswith(CB)


@pytest.mark.parametrize(
    "raw",
    [
        "client_id=%00&redirect_uri=x",
        "client_id=%ED%A0%80&redirect_uri=%FF",
        "client_id[]=a&redirect_uri=x",
        "%00=%00",
        "client_id",
        "",
    ],
)
async def test_garbage_queries_are_an_error_page(stack, http, raw) -> None:
    status, headers, body = await get(http, stack, raw)
    assert_error_page(status, headers, body)


async def test_garbage_after_a_valid_client(stack, http, settings, client) -> None:
    base = urlencode({"client_id": client[0], "redirect_uri": CB, "state": "st-123"})
    for tail, error in (
        ("response_type=%00", "unsupported_response_type"),
        ("response_type=code&scope=%00", "invalid_scope"),
        ("response_type=code&scope=%ED%A0%80", "invalid_scope"),
        ("response_type=code&prompt=%0A", "invalid_request"),
        ("response_type=code&code_challenge_method=S256&code_challenge=%00" + "a" * 50, "invalid_request"),
    ):
        r = await get(http, stack, f"{base}&{tail}")
        assert_redirect_error(*r[:2], settings, error)


async def test_unknown_parameters_are_ignored(stack, browser, client) -> None:
    q = await authorize(browser, stack.base, client[0], CB, foo="bar", response_mode="query", lang="en")
    assert q["code"]


async def test_language_link_keeps_the_request(stack, browser, client) -> None:
    body, _, _ = await consent_page(browser, stack, client[0])
    link = form_value(body, re.compile(r'<a href="([^"]*lang=en[^"]*)"'))
    assert link.startswith("/api/oauth2/authorize?") and f"client_id={client[0]}" in link
    async with browser.get(f"{stack.base}{link}", allow_redirects=False) as r:
        assert r.status == 200
        assert "your username" in await r.text()
