"""Forgot password by email through the gateway, with the tests' SMTP sink as the inbox
(services/account/password_reset.py; docs/operations.md "Accounts")."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import aiohttp
import asyncpg

from libs.platform.config import Settings
from tests.support.clock import expire_first_reset_token
from tests.support.factories import make_developer, make_user
from tests.support.mail import Inbox, reset_link, text_of
from tests.support.oauth import authorize, login, make_app
from tests.support.stack import Stack, extra_instance

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase 7"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
CB = "https://reset.example/cb"


def browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def csrf(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url) as r:
        assert r.status in (200, 400), r.status
        m = CSRF_RE.search(await r.text())
    assert m
    return m.group(1)


async def forgot(http: aiohttp.ClientSession, base: str, email: str, lang: str = "en", **headers: str):
    token = await csrf(http, f"{base}/password/forgot?lang={lang}")
    async with http.post(
        f"{base}/password/forgot", data={"csrf_token": token, "email": email}, allow_redirects=False, headers=headers
    ) as r:
        return r.status, r.headers.get("Location"), await r.text()


async def set_password(
    http: aiohttp.ClientSession, base: str, token: str, password: str, confirm: str | None = None, **extra: str
) -> tuple[int, str, str]:
    page_csrf = await csrf(http, f"{base}/password/forgot")  # the form token is per browser
    form = {"csrf_token": page_csrf, "token": token, "password": password, "password_confirm": confirm or password}
    async with http.post(f"{base}/password/reset?lang=en", data=form | extra, allow_redirects=False) as r:
        return r.status, r.headers.get("Location", ""), await r.text()


async def login_status(base: str, username: str, password: str) -> int:
    async with browser() as http:
        token = await csrf(http, f"{base}/login")
        form = {"csrf_token": token, "username": username, "password": password}
        async with http.post(f"{base}/login", data=form, allow_redirects=False) as r:
            return r.status


async def test_same_answer_for_unknown_and_known_emails(stack: Stack, db, inbox: Inbox) -> None:
    user = await make_user(db, PASSWORD)
    async with browser() as http:
        known = await forgot(http, stack.base, user.email)
        unknown = await forgot(http, stack.base, f"nobody-{secrets.token_hex(4)}@example.com")
        malformed = await forgot(http, stack.base, "not an email")
        assert known[:2] == unknown[:2] == malformed[:2] == (303, "/password/forgot?sent=1")
        assert known[2] == unknown[2] == malformed[2]
        async with http.get(f"{stack.base}/password/forgot?sent=1&lang=en") as r:
            assert "If an account exists for that email address" in await r.text()
        async with http.get(f"{stack.base}/password/forgot?sent=1&lang=zh") as r:
            assert "如果该邮箱对应一个账号" in await r.text()
    [message] = await inbox.wait_for(user.email)
    assert message["Subject"] == "Reset your Open Platform password" and user.username in text_of(message)


async def test_reset_end_to_end_single_use_hashed_sessions_end(stack: Stack, db, settings, inbox: Inbox) -> None:
    user = await make_user(db, PASSWORD)
    async with browser() as elsewhere, browser() as http:
        await login(elsewhere, stack.base, user.username, PASSWORD)  # a session on another device
        async with elsewhere.get(f"{stack.base}/user", allow_redirects=False) as r:
            assert r.status == 200
        await forgot(http, stack.base, user.email, lang="zh")
        [message] = await inbox.wait_for(user.email)
        link, token, lang = reset_link(message)
        assert lang == "zh" and message["Subject"] == "重置你的开放平台密码" and link.startswith(stack.base)
        stored = await db.fetchrow("SELECT * FROM password_reset_tokens WHERE user_id = $1", user.id)
        assert bytes(stored["token_hash"]) == hmac.new(settings.pepper_bytes, token.encode(), hashlib.sha256).digest()
        assert token.encode() not in bytes(stored["token_hash"]) and stored["used_at"] is None
        left = (stored["expires_at"] - stored["created_at"]).total_seconds()
        assert left == settings.password_reset_ttl_seconds
        async with http.get(link) as r:
            page = await r.text()
        assert r.status == 200 and r.headers["Referrer-Policy"] == "no-referrer" and "设置新密码" in page
        # The policy of /register applies; a mismatch is refused; neither uses the link.
        assert (await set_password(http, stack.base, token, "password"))[0] == 400
        status, _, page = await set_password(http, stack.base, token, f"x{user.username}x1234")
        assert status == 400 and "username" in page
        assert (await set_password(http, stack.base, token, NEW_PASSWORD, confirm=NEW_PASSWORD + "x"))[0] == 400
        status, location, _ = await set_password(http, stack.base, token, NEW_PASSWORD)
        assert (status, location) == (303, "/password/reset/done")
        async with elsewhere.get(f"{stack.base}/user", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"].startswith("/login")  # every session ended
        # Single use: the link no longer works, for the page or the form.
        async with http.get(link) as r:
            assert r.status == 400 and "无效或已过期" in await r.text()
        status, _, page = await set_password(http, stack.base, token, "another fine passphrase")
        assert status == 400 and "invalid or has expired" in page
    assert await login_status(stack.base, user.username, PASSWORD) != 302
    assert await login_status(stack.base, user.username, NEW_PASSWORD) == 302
    events = await db.fetch("SELECT type FROM event_outbox WHERE data->>'user_id' = $1", str(user.id))
    assert [e["type"] for e in events] == ["user.updated"]


async def test_expired_and_superseded_links_do_not_work(stack: Stack, db, inbox: Inbox) -> None:
    user = await make_user(db, PASSWORD)
    async with browser() as http:
        await forgot(http, stack.base, user.email)
        await forgot(http, stack.base, user.email)
        first, second = (reset_link(m)[1] for m in await inbox.wait_for(user.email, 2))
        await expire_first_reset_token(db, user.id)
        assert (await set_password(http, stack.base, first, NEW_PASSWORD))[0] == 400  # expired
        assert (await set_password(http, stack.base, second, NEW_PASSWORD))[0] == 303
        await forgot(http, stack.base, user.email)
        [*_, third] = await inbox.wait_for(user.email, 3)
        third_token = reset_link(third)[1]
        await forgot(http, stack.base, user.email)  # over the per-account limit (3): no email
        assert (await set_password(http, stack.base, third_token, "yet another passphrase"))[0] == 303
        for bad in ("", "pwreset_", "pwreset_" + "A" * 43, "x" * 500, "pwreset_\x00"):
            async with http.get(f"{stack.base}/password/reset", params={"token": bad}) as r:
                assert r.status == 400, bad
    assert len(inbox.to(user.email)) == 3


async def test_revoking_app_grants_is_optional(
    stack: Stack, db: asyncpg.Pool, settings: Settings, inbox: Inbox
) -> None:
    owner, _ = await make_developer(db, settings)
    client_id, _ = await make_app(db, settings, owner.id, [CB])
    for revoke in (False, True):
        user = await make_user(db, PASSWORD)
        async with browser() as http:
            await login(http, stack.base, user.username, PASSWORD)
            await authorize(http, stack.base, client_id, CB)
            await forgot(http, stack.base, user.email)
            token = reset_link((await inbox.wait_for(user.email))[0])[1]
            extra = {"revoke_apps": "1"} if revoke else {}
            assert (await set_password(http, stack.base, token, NEW_PASSWORD, **extra))[0] == 303
        grants = await db.fetchval("SELECT count(*) FROM grants WHERE user_id = $1", user.id)
        assert grants == (0 if revoke else 1), revoke
        live = await db.fetchval(
            "SELECT count(*) FROM token_families WHERE user_id = $1 AND revoked_at IS NULL", user.id
        )
        assert live == 0 or not revoke


async def test_forgot_is_limited_per_ip(stack: Stack, settings: Settings, inbox: Inbox) -> None:
    ip = f"198.51.100.{secrets.randbelow(250) + 1}"
    async with extra_instance(stack, "account", settings, password_reset_max_per_ip=3) as (base, _), browser() as http:
        for _ in range(3):
            assert (await forgot(http, base, "someone@example.com", **{"X-Forwarded-For": ip}))[0] == 303
        status, _, page = await forgot(http, base, "someone@example.com", **{"X-Forwarded-For": ip})
        assert status == 429 and "Too many reset requests" in page
        other = f"198.51.100.{(int(ip.rsplit('.', 1)[1]) % 250) + 2}"
        assert (await forgot(http, base, "someone@example.com", **{"X-Forwarded-For": other}))[0] == 303


async def test_hostile_input_on_the_reset_pages(stack: Stack, db, inbox: Inbox) -> None:
    async with browser() as http:
        for email in ("\x00@example.com", "a" * 5000, "é@例子.测试", "' OR 1=1 --@x.example", "\u202e@x.example"):
            status, location, _ = await forgot(http, stack.base, email)
            assert (status, location) == (303, "/password/forgot?sent=1"), email
        token = await csrf(http, f"{stack.base}/password/forgot")
        for form in (
            {"token": "pwreset_" + "\x00" * 43, "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD},
            {"token": ["a", "b"], "password": NEW_PASSWORD},
            {"password": NEW_PASSWORD},
            {"token": "pwreset_x", "password": "\x00" * 20, "password_confirm": "\x00" * 20},
        ):
            data = aiohttp.FormData([("csrf_token", token)])
            for name, value in form.items():
                for v in value if isinstance(value, list) else [value]:
                    data.add_field(name, v)
            async with http.post(f"{stack.base}/password/reset", data=data, allow_redirects=False) as r:
                assert r.status == 400 and "Traceback" not in await r.text(), form
        async with http.post(f"{stack.base}/password/reset", data={"token": "x"}, allow_redirects=False) as r:
            assert r.status == 403  # no CSRF token


async def test_mailer_sends_through_smtp(settings: Settings, inbox: Inbox, capsys) -> None:
    from oauthctl.mailsink import print_message
    from services.account import mailer

    to = f"mailer-{secrets.token_hex(4)}@example.com"
    await mailer.send(settings, mailer.build_message(settings, to, "你好 subject", "line one\nline 二"))
    [message] = await inbox.wait_for(to)
    assert message["Subject"] == "你好 subject" and message["From"] == settings.smtp_from
    assert text_of(message).splitlines() == ["line one", "line 二"]
    print_message(message)  # what `make run` prints
    assert f"mail: to {to} | 你好 subject" in capsys.readouterr().out
