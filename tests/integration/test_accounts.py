"""Registration hardening (issue 10, finding 5; docs/operations.md "Accounts"): the password policy,
sign-ups limited per client IP (shared in Redis), normalised emails and refused look-alikes.
Against real Postgres/Redis, through the account service's HTTP pages and oauthctl."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
from asyncio.subprocess import PIPE

import aiohttp
import asyncpg
import pytest

from services.account import store as account_store
from services.account.emails import normalize_email, skeleton
from services.account.passwords import password_problem
from services.account.users import UserError, backfill_email_skeletons, create_user
from tests.support.stack import Stack, extra_instance

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct horse battery"


def new_browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_up(
    http: aiohttp.ClientSession,
    base: str,
    username: str,
    email: str,
    password: str = PASSWORD,
    *,
    ip: str | None = None,
    lang: str = "en",
) -> tuple[int, dict[str, str], str]:
    """POST /register (``ip``: as if the gateway had seen the browser there)."""
    async with http.get(f"{base}/register") as r:
        token = CSRF_RE.search(await r.text()).group(1)  # type: ignore[union-attr]
    form = {"csrf_token": token, "username": username, "email": email, "password": password}
    form["password_confirm"] = password
    headers = {"X-Forwarded-For": ip} if ip else {}
    async with http.post(f"{base}/register?lang={lang}", data=form, headers=headers, allow_redirects=False) as r:
        return r.status, dict(r.headers), await r.text()


def name() -> str:
    return f"r_{secrets.token_hex(5)}"


# --- the password policy -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("12345678", "common"),
        ("password1", "common"),
        ("Qwertyuiop", "common"),
        ("short", "length"),
        ("x" * 129, "length"),
        ("bob.smith!", "personal"),  # the username
        ("xxBOB.SMITHxx", "personal"),  # containing it, any case
        ("bsmith-1987", "personal"),  # the email's name part
        ("correct horse battery", None),
        ("比较长的中文密码短语", None),
    ],
)
def test_password_policy(password: str, code: str | None) -> None:
    assert password_problem(password, "bob.smith", "bsmith@example.com") == code


@pytest.mark.parametrize(
    ("password", "en", "zh"),
    [
        ("12345678", "most common", "最常见的密码"),
        ("{name}", "must not contain your username", "不能包含用户名"),
        ("my-{name}-pass", "must not contain your username", "不能包含用户名"),
    ],
)
async def test_register_refuses_weak_passwords(stack: Stack, db, password: str, en: str, zh: str) -> None:
    """Regression: ``12345678`` and a password equal to the username were accepted."""
    username = name()
    for lang, fragment in (("en", en), ("zh", zh)):
        async with new_browser() as http:
            status, _, page = await sign_up(
                http, stack.base, username, f"{username}@example.com", password.format(name=username), lang=lang
            )
        assert status == 400 and fragment in page, (lang, page[-800:])
        assert 'aria-invalid="true"' in page
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = $1", username) == 0


async def oauthctl(settings, *argv: str, stdin: str) -> tuple[int, str]:
    """Run the real CLI in its own process (so nothing this test process loaded helps it)."""
    env = os.environ | {"DATABASE_URL": settings.database_url, "TOKEN_PEPPER": settings.token_pepper}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "oauthctl", *argv, stdin=PIPE, stdout=PIPE, stderr=PIPE, env=env
    )
    out, err = await proc.communicate(stdin.encode() + b"\n")
    return proc.returncode or 0, (out + err).decode()


async def test_oauthctl_user_create_applies_the_policy(settings, db) -> None:
    username = name()
    create = ["user", "create", "--username", username, "--password-stdin", "--email"]
    for password, en, zh in (
        ("12345678", "most common", "最常见的密码"),
        (f"{username}!!", "must not contain your username", "不能包含用户名"),
    ):
        code, output = await oauthctl(settings, *create, f"{username}@example.com", stdin=password)
        assert code == 1 and en in output and zh in output, output
    code, output = await oauthctl(settings, *create, f" {username}@EXAMPLE.com ", stdin=PASSWORD)
    assert code == 0, output
    assert await db.fetchval("SELECT email FROM users WHERE username = $1", username) == f"{username}@example.com"


# --- sign-ups per IP -----------------------------------------------------------------------------
async def test_sign_ups_are_limited_per_ip_across_instances(stack: Stack, settings, db) -> None:
    """Regression: 25 of 25 sign-ups in a row from one IP succeeded. Two account instances with
    the default limit share the count (Redis); a refused form does not count; another IP is free."""
    limit = 5
    ip = f"203.0.113.{secrets.randbelow(250) + 1}"
    async with (
        extra_instance(stack, "account", settings, register_max_per_ip=limit) as (one, _),
        extra_instance(stack, "account", settings, register_max_per_ip=limit) as (two, _),
        new_browser() as http,
    ):
        status, _, _ = await sign_up(http, one, name(), "bad-email", ip=ip)
        assert status == 400  # refused forms give their slot back
        for n in range(limit):
            username = name()
            status, _, page = await sign_up(http, (one, two)[n % 2], username, f"{username}@example.com", ip=ip)
            assert status == 302, page[-500:]
        for base in (one, two):
            username = name()
            status, headers, page = await sign_up(http, base, username, f"{username}@example.com", ip=ip, lang="zh")
            assert status == 429 and "注册账号过于频繁" in page
            assert 0 < int(headers["Retry-After"]) <= settings.register_window_seconds
            assert await db.fetchval("SELECT count(*) FROM users WHERE username = $1", username) == 0
        username = name()
        status, _, _ = await sign_up(http, one, username, f"{username}@example.com", ip="198.51.100.200")
        assert status == 302


# --- emails --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("alice@example.com", "аlice@example.com"),  # Cyrillic а
        ("paypal@example.com", "pаypаl@example.com"),
        ("bill@example.com", "biIl@example.com"),  # capital I for l
        ("bill@example.com", "bi1l@example.com"),
        ("modern@example.com", "rnodern@example.com"),
        ("alice@example.com", "ａｌｉｃｅ@ＥＸＡＭＰＬＥ.com"),  # full-width
        ("Alice@Example.com", "alice@example.com"),
        ("carol@example.com", "carol@ехample.com"),  # Cyrillic е and х in the domain
    ],
)
def test_look_alikes_share_a_skeleton(a: str, b: str) -> None:
    assert skeleton(a) == skeleton(b)


@pytest.mark.parametrize(("a", "b"), [("alice@example.com", "alicia@example.com"), ("ann@x.com", "ånn@x.com")])
def test_different_addresses_have_different_skeletons(a: str, b: str) -> None:
    assert skeleton(a) != skeleton(b)


def test_normalisation() -> None:
    assert normalize_email("  Bob.Smith@Example.COM\t") == "Bob.Smith@example.com"
    assert normalize_email("ｂｏｂ@ｅｘａｍｐｌｅ.ｃｏｍ") == "bob@example.com"


async def test_register_refuses_a_look_alike_of_an_existing_address(stack: Stack, db) -> None:
    """Regression: an email with a Cyrillic look-alike of an existing one was accepted."""
    first = name()
    async with new_browser() as http:
        status, _, _ = await sign_up(http, stack.base, first, f"pay{first}@example.com")
    assert status == 302
    second = name()
    for lang, fragment in (("en", "looks the same as an address"), ("zh", "看起来相同")):
        async with new_browser() as http:
            status, _, page = await sign_up(http, stack.base, second, f"pаy{first}@example.com", lang=lang)
        assert status == 400 and fragment in page, page[-600:]
    assert await db.fetchval("SELECT count(*) FROM users WHERE username = $1", second) == 0


async def test_register_stores_the_normalised_email(stack: Stack, db) -> None:
    username = name()
    async with new_browser() as http:
        status, _, _ = await sign_up(http, stack.base, username, f"  {username}@EXAMPLE.ｃｏｍ ")
    assert status == 302
    row = await db.fetchrow("SELECT email, email_skeleton FROM users WHERE username = $1", username)
    assert row["email"] == f"{username}@example.com" and row["email_skeleton"] == skeleton(row["email"])


async def test_concurrent_look_alikes_race_free(db: asyncpg.Pool) -> None:
    """The unique index on the skeleton decides, not a check before the INSERT."""
    base = secrets.token_hex(4)
    emails = [f"ma{base}@example.com", f"mа{base}@example.com", f"rnа{base}@example.com", f"MA{base}@example.com"]
    results = await asyncio.gather(*(create_user(db, name(), e, PASSWORD) for e in emails), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1, results
    assert all(isinstance(r, UserError) and r.field == "email" for r in results if isinstance(r, Exception))


async def test_backfill_gives_older_users_a_skeleton(db: asyncpg.Pool) -> None:
    old = name()
    await account_store.insert_user(db, old, f"dave{old}@example.com", None, "x")  # a row from before 0005
    async with db.acquire() as conn:
        done, clashes = await backfill_email_skeletons(conn)
    assert done >= 1 and clashes == []
    with pytest.raises(UserError) as exc:
        await create_user(db, name(), f"dаve{old}@example.com", PASSWORD)
    assert exc.value.code == "confusable"
