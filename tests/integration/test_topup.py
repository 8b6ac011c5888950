"""Top-up: codes from `oauthctl topup create`, redeemed once on /user/topup (cookies + CSRF), the
quota.changed event, and GET /api/oauth2/topup for the guide's SDK (goToTopup)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest

from libs.contracts.token import SIGNING_KEYS, ensure_signing_key
from libs.oauth.access_tokens import KEYS, mint
from libs.oauth.keys import KeyStore
from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from libs.platform.security import token_hash
from services.account import store as account_store
from services.account.topup import create_codes
from tests.integration.test_account_pages import EN, new_browser, page_csrf, register_browser
from tests.support.clock import expire_topup_code
from tests.support.factories import make_user
from tests.support.stack import Stack

ROOT = Path(__file__).resolve().parents[2]


async def uid_of(db: asyncpg.Pool, username: str) -> int:
    return int(await db.fetchval("SELECT id FROM users WHERE username = $1", username))


async def redeem(http, base: str, code: str, csrf: str | None = None):
    csrf = csrf if csrf is not None else await page_csrf(http, f"{base}/user/topup")
    async with http.post(f"{base}/user/topup", data={"csrf_token": csrf, "code": code}, headers=EN) as r:
        return r.status, await r.text()


async def one_code(db: asyncpg.Pool, settings: Settings, amount: int = 5000, **kw) -> str:
    return (await create_codes(db, settings.pepper_bytes, amount, 1, **kw))[0]


# --- the page ------------------------------------------------------------------------------------
async def test_redeem_flow(stack: Stack, http, db, settings) -> None:
    name = await register_browser(http, stack.base)
    uid = await uid_of(db, name)
    await account_store.set_balance(db, uid, 1000000, 250000)
    async with http.get(f"{stack.base}/user/topup?from=client_x", headers=EN) as r:
        assert r.status == 200
        page = await r.text()
    assert 'id="balance">$750.00<' in page and 'action="/user/topup"' in page and 'name="code"' in page

    code = await one_code(db, settings, amount=123456)
    status, html = await redeem(http, stack.base, f"  {code}\n")  # pasted with whitespace
    assert status == 200, html
    assert 'id="success"' in html and "$123.45" in html and 'id="balance">$873.45<' in html

    assert await db.fetchval("SELECT quota FROM users WHERE id = $1", uid) == 1123456
    row = await db.fetchrow(
        "SELECT redeemed_by, redeemed_at FROM topup_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, code)
    )
    assert row["redeemed_by"] == uid and row["redeemed_at"] is not None
    events = await db.fetch(
        "SELECT data FROM event_outbox WHERE type = 'quota.changed' AND (data->>'user_id')::bigint = $1", uid
    )
    assert [orjson.loads(e["data"]) for e in events] == [
        {"user_id": uid, "delta": 123456, "quota": 1123456, "used_quota": 250000, "reason": "topup"}
    ]

    # The same code again: a clear message, nothing credited.
    status, html = await redeem(http, stack.base, code)
    assert status == 400 and "already been used" in html and "Traceback" not in html
    assert await db.fetchval("SELECT quota FROM users WHERE id = $1", uid) == 1123456


async def test_codes_are_stored_hashed(db, settings) -> None:
    codes = await create_codes(db, settings.pepper_bytes, 7, 3, expires_days=2)
    assert len(set(codes)) == 3 and all(c.startswith("topup_") and len(c) >= len("topup_") + 43 for c in codes)
    rows = await db.fetch(
        "SELECT * FROM topup_codes WHERE code_hash = ANY($1::bytea[])",
        [token_hash(settings.pepper_bytes, c) for c in codes],
    )
    assert len(rows) == 3
    for r in rows:
        assert r["amount"] == 7 and r["redeemed_at"] is None
        assert timedelta(days=1, hours=23) < r["expires_at"] - r["created_at"] <= timedelta(days=2)
        assert not any(c in str(dict(r)) for c in codes)


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("topup_unknown", "not valid"),
        ("", "Enter a top-up code"),
        ("x" * 500, "not valid"),
        ("' OR 1=1 --", "not valid"),
    ],
)
async def test_bad_codes(stack: Stack, http, db, code, fragment) -> None:
    name = await register_browser(http, stack.base)
    status, html = await redeem(http, stack.base, code)
    assert status == 400 and fragment in html and 'id="error"' in html
    assert await db.fetchval("SELECT quota FROM users WHERE username = $1", name) == 0


async def test_expired_code(stack: Stack, http, db, settings) -> None:
    name = await register_browser(http, stack.base)
    code = await one_code(db, settings, expires_days=1)
    await expire_topup_code(db, settings, code)
    status, html = await redeem(http, stack.base, code)
    assert status == 400 and "expired" in html
    assert await db.fetchval("SELECT quota FROM users WHERE username = $1", name) == 0
    status, html = await redeem(http, stack.base, code, csrf=None)
    assert status == 400


async def test_messages_in_chinese(stack: Stack, http, db, settings) -> None:
    await register_browser(http, stack.base)
    csrf = await page_csrf(http, f"{stack.base}/user/topup")
    async with http.post(
        f"{stack.base}/user/topup?lang=zh", data={"csrf_token": csrf, "code": "topup_nope"}, headers=EN
    ) as r:
        assert r.status == 400 and "充值码无效" in await r.text()


@pytest.mark.parametrize("csrf", ["", "wrong", None])
async def test_redeem_needs_csrf(stack: Stack, http, db, settings, csrf) -> None:
    name = await register_browser(http, stack.base)
    code = await one_code(db, settings)
    data = {"code": code} if csrf is None else {"code": code, "csrf_token": csrf}
    async with http.post(f"{stack.base}/user/topup", data=data) as r:
        assert r.status == 403
    assert await db.fetchval("SELECT quota FROM users WHERE username = $1", name) == 0
    assert (
        await db.fetchval(
            "SELECT redeemed_at FROM topup_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, code)
        )
        is None
    )


async def test_redeem_needs_login(stack: Stack, http, db, settings) -> None:
    csrf = await page_csrf(http, f"{stack.base}/register")
    code = await one_code(db, settings)
    async with http.post(
        f"{stack.base}/user/topup", data={"csrf_token": csrf, "code": code}, allow_redirects=False
    ) as r:
        assert r.status == 302 and r.headers["Location"] == "/login?next=/user/topup"
    assert (
        await db.fetchval(
            "SELECT redeemed_at FROM topup_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, code)
        )
        is None
    )


async def test_disabled_account_cannot_redeem(db, settings) -> None:
    from services.account.topup import TopupError
    from services.account.topup import redeem as redeem_code

    user = await make_user(db)
    await account_store.set_user_status(db, user.id, UserStatus.DISABLED)
    code = await one_code(db, settings)
    with pytest.raises(TopupError) as exc:
        await redeem_code(db, settings.pepper_bytes, user.id, code)
    assert exc.value.reason == "account"
    # rolled back: the code is still unused
    assert (
        await db.fetchval(
            "SELECT redeemed_at FROM topup_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, code)
        )
        is None
    )


async def test_concurrent_redemption_credits_once(stack: Stack, db, settings) -> None:
    amount = 777_000
    code = await one_code(db, settings, amount=amount)
    browsers = [new_browser() for _ in range(4)]
    try:
        names = [await register_browser(b, stack.base) for b in browsers]
        tokens = [await page_csrf(b, f"{stack.base}/user/topup") for b in browsers]
        results = await asyncio.gather(*(redeem(browsers[i % 4], stack.base, code, tokens[i % 4]) for i in range(20)))
    finally:
        for b in browsers:
            await b.close()
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [400] * 19, statuses
    assert all("already been used" in html for s, html in results if s == 400)
    quotas = [await db.fetchval("SELECT quota FROM users WHERE username = $1", n) for n in names]
    assert sorted(quotas) == [0, 0, 0, amount]
    winner = await uid_of(db, names[quotas.index(amount)])
    row = await db.fetchrow(
        "SELECT redeemed_by FROM topup_codes WHERE code_hash = $1", token_hash(settings.pepper_bytes, code)
    )
    assert row["redeemed_by"] == winner
    ids = [await uid_of(db, n) for n in names]
    events = await db.fetchval(
        "SELECT count(*) FROM event_outbox WHERE type = 'quota.changed' AND (data->>'user_id')::bigint = ANY($1::bigint[])",
        ids,
    )
    assert events == 1


# --- GET /api/oauth2/topup -------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def signer(db: asyncpg.Pool, settings: Settings, stack: Stack) -> KeyStore:
    await ensure_signing_key(db, settings.jwt_algorithm)
    for runner in stack.runners.values():
        if KEYS in runner.app:
            await runner.app[KEYS].load()
    store = KeyStore(db, settings.jwt_algorithm, timedelta(hours=3), SIGNING_KEYS)
    await store.load()
    return store


async def test_topup_url(stack: Stack, http, db, settings, signer) -> None:
    user = await make_user(db)
    for scope in ("profile", "balance", "openid", ""):
        token, _ = await mint(signer, settings, sub=str(user.id), client_id="client_x", scope=scope, family=None)
        async with http.get(f"{stack.base}/api/oauth2/topup", headers={"Authorization": f"Bearer {token}"}) as r:
            body = await r.json()
            assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        assert body == {"topup_url": f"{settings.public_base_url}/user/topup?from=client_x"}
        assert token not in body["topup_url"]


async def test_topup_url_errors(stack: Stack, http, db, settings, signer) -> None:
    async with http.get(f"{stack.base}/api/oauth2/topup") as r:
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.get(f"{stack.base}/api/oauth2/topup", headers={"Authorization": "Bearer nope"}) as r:
        assert r.status == 401 and (await r.json())["error"] == "invalid_token"
    user = await make_user(db)
    token, _ = await mint(signer, settings, sub=str(user.id), client_id="client_x", scope="balance", family=None)
    await account_store.set_user_status(db, user.id, UserStatus.DISABLED)
    async with http.get(f"{stack.base}/api/oauth2/topup", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 401 and (await r.json())["error"] == "invalid_token"


# --- oauthctl topup create -------------------------------------------------------------------------
async def oauthctl(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = os.environ | {"DATABASE_URL": settings.database_url, "TOKEN_PEPPER": settings.token_pepper}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "oauthctl",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_creates_codes_that_redeem(stack: Stack, http, db, settings) -> None:
    rc, out, err = await oauthctl(
        settings, "topup", "create", "--amount", "2500", "--count", "3", "--expires-days", "7"
    )
    assert rc == 0, err
    codes = out.split()
    assert len(codes) == 3 and all(c.startswith("topup_") for c in codes)
    assert "shown once" in err and "2.50" in err
    name = await register_browser(http, stack.base)
    for code in codes[:2]:
        status, _ = await redeem(http, stack.base, code)
        assert status == 200
    assert await db.fetchval("SELECT quota FROM users WHERE username = $1", name) == 5000


@pytest.mark.parametrize(
    "args",
    [
        ["--amount", "0"],
        ["--amount", "-5"],
        ["--amount", "1.5"],
        ["--amount", "abc"],
        ["--amount", "10", "--count", "0"],
        ["--amount", "10", "--count", "1001"],
        ["--amount", "10", "--expires-days", "0"],
        [],
    ],
)
async def test_cli_rejects_bad_arguments(settings, args) -> None:
    rc, out, err = await oauthctl(settings, "topup", "create", *args)
    assert rc == 2 and out == "" and "usage" in err


async def test_cli_help(settings) -> None:
    for args in (["topup", "--help"], ["topup", "create", "--help"]):
        rc, out, _ = await oauthctl(settings, *args)
        assert rc == 0 and "usage: oauthctl topup" in out
    rc, out, _ = await oauthctl(settings, "topup", "create", "--help")
    assert "--amount" in out and "--count" in out and "--expires-days" in out
