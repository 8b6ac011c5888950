"""Apps that spend for the user within the limit the user chose (docs/spending.md), against the real
stack: the consent page's limit, charges up to it then 402, the daily reset, 100 parallel charges,
idempotency keys, revocation on two account instances within 100 ms (measured and printed), tokens
without ``spend``, stopping and changing the limit in the user center, the internal API, events."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
import pytest

from libs.contracts.authz import delete_user_consents
from libs.oauth.events.bus import EVENTS
from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from services.account import store as account_store
from tests.support.clock import spending_a_day_ago
from tests.support.codes import ClientApp, obtain_tokens
from tests.support.factories import make_user
from tests.support.oauth import REQUEST_RE, csrf_from, form_value, login, make_app
from tests.support.spending import CB, SpendGrant, consent_with_limit, make_spend_grant
from tests.support.stack import Stack, extra_instance


@pytest.fixture
async def grant(stack: Stack, http: aiohttp.ClientSession, db: asyncpg.Pool, settings: Settings) -> SpendGrant:
    return await make_spend_grant(http, stack, db, settings, amount="1.00", period="daily")


def key() -> str:
    return "k-" + secrets.token_hex(8)


async def spend(
    http: aiohttp.ClientSession, base: str, token: str, amount: object, idem: str | None = None, **extra: object
) -> tuple[int, dict, dict[str, str]]:
    body = {"amount": amount, "idempotency_key": idem or key(), **extra}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with http.post(f"{base}/api/oauth2/spend", data=orjson.dumps(body), headers=headers) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


async def allowance(http: aiohttp.ClientSession, base: str, token: str) -> tuple[int, dict]:
    async with http.get(f"{base}/api/oauth2/spend", headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json(content_type=None)


async def used_quota(db: asyncpg.Pool, user_id: int) -> int:
    return int(await db.fetchval("SELECT used_quota FROM users WHERE id = $1", user_id))


# --- consent -------------------------------------------------------------------------------------
async def test_consent_stores_the_chosen_limit_and_one_click_never_skips_it(stack, http, db, settings) -> None:
    g = await make_spend_grant(http, stack, db, settings, amount="2.50", period="monthly")
    row = await db.fetchrow("SELECT * FROM grants WHERE user_id = $1 AND client_id = $2", g.user_id, g.client_id)
    assert (row["spend_limit"], row["spend_period"], "spend" in row["scopes"]) == (2500, "monthly", True)
    event = await db.fetchval(
        "SELECT data::text FROM event_outbox WHERE type = 'quota.changed' AND data->>'client_id' = $1", g.client_id
    )
    data = orjson.loads(event)
    assert (data["reason"], data["spend_limit"], data["grant"]["user_id"]) == ("spend_limit", 2500, g.user_id)
    # The page was shown once for this app: now one-click works for spend too.
    params = {
        "client_id": g.client_id,
        "redirect_uri": CB,
        "response_type": "code",
        "scope": "profile spend",
        "state": "s",
        "auto_authorize": "true",
    }
    async with http.get(f"{stack.base}/api/oauth2/authorize", params=params, allow_redirects=False) as r:
        assert r.status == 302 and "code=" in r.headers["Location"]


async def test_consent_page_prefills_the_apps_suggestion(stack, http, db, settings) -> None:
    user = await make_user(db)
    owner = await make_user(db)
    client_id, _ = await make_app(db, settings, owner.id, [CB])
    from tests.support.oauth import login

    await login(http, stack.base, user.username, "correct horse battery")
    params = {
        "client_id": client_id,
        "redirect_uri": CB,
        "response_type": "code",
        "scope": "profile spend",
        "state": "s",
        "spend_limit": "5500",
        "spend_period": "daily",
        "lang": "en",
    }
    async with http.get(f"{stack.base}/api/oauth2/authorize", params=params, allow_redirects=False) as r:
        body = await r.text()
    assert r.status == 200
    assert 'name="spend_amount"' in body and 'value="5.50"' in body
    assert '<option value="daily" selected>' in body
    # A bad suggestion goes back to the app as invalid_request.
    async with http.get(
        f"{stack.base}/api/oauth2/authorize", params=params | {"spend_period": "hourly"}, allow_redirects=False
    ) as r:
        assert r.status == 302 and "error=invalid_request" in r.headers["Location"]
    # A bad amount on the page is refused with a readable page, and nothing is granted.
    async with http.get(f"{stack.base}/api/oauth2/authorize", params=params, allow_redirects=False) as r:
        page = await r.text()
    from tests.support.oauth import REQUEST_RE, form_value

    data = {
        "csrf_token": form_value(page),
        "request": form_value(page, REQUEST_RE),
        "decision": "allow",
        "spend_amount": "-3",
        "spend_period": "daily",
    }
    async with http.post(f"{stack.base}/consent?lang=en", data=data, allow_redirects=False) as r:
        assert r.status == 400 and "Invalid amount" in await r.text()
    assert await db.fetchval("SELECT count(*) FROM grants WHERE client_id = $1", client_id) == 0
    # The request was not used up: back on the page, a corrected amount is accepted.
    async with http.post(f"{stack.base}/consent", data=data | {"spend_amount": "3"}, allow_redirects=False) as r:
        assert r.status == 302 and "code=" in r.headers["Location"]
    limit = await db.fetchval("SELECT spend_limit FROM grants WHERE client_id = $1", client_id)
    assert limit == 3000


# --- charges -------------------------------------------------------------------------------------
async def test_charges_succeed_up_to_the_limit_then_402(stack, http, db, grant) -> None:
    for _ in range(2):
        status, body, headers = await spend(http, stack.base, grant.access_token, 400, description="a chat reply")
        assert status == 200, body
        assert headers["Cache-Control"] == "no-store"
    assert body["allowance"]["spent"] == 800 and body["allowance"]["remaining"] == 200
    status, body, headers = await spend(http, stack.base, grant.access_token, 400)
    assert status == 402 and body["error"] == "spend_limit_exceeded", body
    assert "spending limit" in body["error_description"] and "0.20 left" in body["error_description"]
    assert (await spend(http, stack.base, grant.access_token, 200))[0] == 200
    assert (await spend(http, stack.base, grant.access_token, 1))[0] == 402
    status, left = await allowance(http, stack.base, grant.access_token)
    assert status == 200 and (left["limit"], left["period"], left["spent"], left["remaining"]) == (
        1000,
        "daily",
        1000,
        0,
    )
    assert left["period_end"] - left["period_start"] <= 86400
    assert await used_quota(db, grant.user_id) == 1000
    rows = await db.fetch("SELECT * FROM spend_charges WHERE user_id = $1 ORDER BY id", grant.user_id)
    assert [r["amount"] for r in rows] == [400, 400, 200]
    assert rows[0]["client_id"] == grant.client_id and rows[0]["description"] == "a chat reply"
    events = await db.fetch(
        """SELECT data FROM event_outbox WHERE type = 'quota.changed' AND data->>'reason' = 'spend'
           AND (data->>'user_id')::bigint = $1""",
        grant.user_id,
    )
    assert len(events) == 3
    data = orjson.loads(events[0]["data"]) if isinstance(events[0]["data"], str) else events[0]["data"]
    assert data["client_id"] == grant.client_id and data["grant"]["family_id"]


async def test_the_balance_is_a_limit_too(stack, http, db, settings) -> None:
    g = await make_spend_grant(http, stack, db, settings, amount="10.00", period="once", quota=500)
    status, body, _ = await spend(http, stack.base, g.access_token, 600)
    assert status == 402 and body["error"] == "insufficient_balance" and "balance" in body["error_description"]
    assert (await spend(http, stack.base, g.access_token, 500))[0] == 200
    status, left = await allowance(http, stack.base, g.access_token)
    assert (left["remaining"], left["balance"], left["available"], left["period_end"]) == (9500, 0, 0, None)


async def test_the_daily_period_resets(stack, http, db, grant) -> None:
    assert (await spend(http, stack.base, grant.access_token, 1000))[0] == 200
    assert (await spend(http, stack.base, grant.access_token, 1))[0] == 402
    # A day later: yesterday's charges (and the day the limit was chosen) are in the past period.
    await spending_a_day_ago(db, grant.user_id)
    status, body, _ = await spend(http, stack.base, grant.access_token, 1000)
    assert status == 200 and body["allowance"]["spent"] == 1000
    assert (await spend(http, stack.base, grant.access_token, 1))[0] == 402


async def test_idempotency_key_reuse_returns_the_first_result(stack, http, db, grant) -> None:
    idem = key()
    first = await spend(http, stack.base, grant.access_token, 300, idem, description="once")
    again = await spend(http, stack.base, grant.access_token, 300, idem, description="once")
    assert first[0] == again[0] == 200 and first[1] == again[1]
    assert again[2]["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first[2]
    assert await used_quota(db, grant.user_id) == 300
    assert await db.fetchval("SELECT count(*) FROM spend_charges WHERE user_id = $1", grant.user_id) == 1
    status, body, _ = await spend(http, stack.base, grant.access_token, 301, idem)
    assert status == 409 and body["error"] == "invalid_request"
    # Concurrent retries of one key: applied once.
    idem2 = key()
    results = await asyncio.gather(*(spend(http, stack.base, grant.access_token, 100, idem2) for _ in range(10)))
    assert {r[0] for r in results} == {200} and len(
        {orjson.dumps(r[1], option=orjson.OPT_SORT_KEYS) for r in results}
    ) == 1
    assert await used_quota(db, grant.user_id) == 400


async def test_100_parallel_charges_never_overspend_the_limit(stack, http, db, settings) -> None:
    g = await make_spend_grant(http, stack, db, settings, amount="10.00", period="daily", quota=1_000_000)
    async with extra_instance(stack, "account", settings) as (other, _):
        bases = [stack.base, other]
        results = await asyncio.gather(*(spend(http, bases[i % 2], g.access_token, 150) for i in range(100)))
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 66 and statuses.count(402) == 34, statuses
    assert await used_quota(db, g.user_id) == 9900
    assert await db.fetchval("SELECT sum(amount) FROM spend_charges WHERE user_id = $1", g.user_id) == 9900


async def test_100_parallel_charges_never_overspend_the_balance(stack, http, db, settings) -> None:
    g = await make_spend_grant(http, stack, db, settings, amount="1000.00", period="monthly", quota=5000)
    results = await asyncio.gather(*(spend(http, stack.base, g.access_token, 100) for _ in range(100)))
    statuses = [r[0] for r in results]
    assert statuses.count(200) == 50 and statuses.count(402) == 50
    assert {r[1]["error"] for r in results if r[0] == 402} == {"insufficient_balance"}
    assert await db.fetchval("SELECT quota - used_quota FROM users WHERE id = $1", g.user_id) == 0


# --- who may spend -------------------------------------------------------------------------------
async def test_a_token_without_spend_is_refused(stack, http, db, settings) -> None:
    owner = await make_user(db)
    client_id, secret = await make_app(db, settings, owner.id, [CB])
    user = await make_user(db)
    async with db.acquire() as conn:
        await account_store.set_balance(conn, user.id, 10000, 0)
    tokens = await obtain_tokens(http, stack.base, db, settings, ClientApp(client_id, secret, CB, user.id))
    status, body, headers = await spend(http, stack.base, tokens["access_token"], 1)
    assert status == 403 and body["error"] == "insufficient_scope"
    assert 'scope="spend"' in headers["WWW-Authenticate"]
    assert (await allowance(http, stack.base, tokens["access_token"]))[0] == 403
    assert await used_quota(db, user.id) == 0
    assert (await spend(http, stack.base, "not-a-token", 1))[0] == 401
    async with http.post(f"{stack.base}/api/oauth2/spend", json={"amount": 1, "idempotency_key": "x"}) as r:
        assert r.status == 401 and (await r.json())["error"] == "invalid_request"


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 0, "idempotency_key": "k"},
        {"amount": -5, "idempotency_key": "k"},
        {"amount": True, "idempotency_key": "k"},
        {"amount": "5", "idempotency_key": "k"},
        {"amount": 10**16, "idempotency_key": "k"},
        {"amount": 5},
        {"amount": 5, "idempotency_key": ""},
        {"amount": 5, "idempotency_key": "x" * 201},
        {"amount": 5, "idempotency_key": "a\x00b"},
        {"amount": 5, "idempotency_key": "k", "description": "d" * 201},
        {"amount": 5, "idempotency_key": "k", "extra": 1},
    ],
)
async def test_hostile_input_is_invalid_request(stack, http, db, grant, body) -> None:
    headers = {"Authorization": f"Bearer {grant.access_token}", "Content-Type": "application/json"}
    async with http.post(f"{stack.base}/api/oauth2/spend", data=orjson.dumps(body), headers=headers) as r:
        answer = await r.json()
    assert r.status == 400 and answer["error"] == "invalid_request", answer
    assert await used_quota(db, grant.user_id) == 0


# --- revocation ----------------------------------------------------------------------------------
@pytest.fixture
async def two_accounts(stack: Stack, settings: Settings) -> AsyncIterator[list[str]]:
    async with (
        extra_instance(stack, "account", settings) as (a, app_a),
        extra_instance(stack, "account", settings) as (b, app_b),
    ):
        for app in (app_a, app_b):
            for _ in range(200):
                if app[EVENTS].live:
                    break
                await asyncio.sleep(0.025)
        yield [a, b]


async def _refused_within(http: aiohttp.ClientSession, bases: list[str], token: str, started: float) -> float:
    results = await asyncio.gather(*(spend(http, base, token, 1) for base in bases))
    elapsed = time.perf_counter() - started
    assert [r[0] for r in results] == [401] * len(bases), results
    assert {r[1]["error"] for r in results} == {"invalid_token"}
    return elapsed


async def test_revoking_in_the_user_center_stops_charges_on_every_instance(
    stack, http, db, settings, two_accounts
) -> None:
    g = await make_spend_grant(http, stack, db, settings, amount="10.00", period="daily")
    for base in two_accounts:  # warm both instances' caches with this token
        assert (await spend(http, base, g.access_token, 1))[0] == 200
    async with http.get(f"{stack.base}/api/user/authorizations") as r:
        csrf = r.headers["X-CSRF-Token"]
    async with http.delete(f"{stack.base}/api/user/authorizations/{g.client_id}", headers={"X-CSRF-Token": csrf}) as r:
        assert r.status == 200
    started = time.perf_counter()  # the revocation returned: the very next charge is refused
    elapsed = await _refused_within(http, two_accounts, g.access_token, started)
    print(f"\nuser-center revoke -> charges refused on 2 instances in {elapsed * 1000:.1f} ms")
    assert elapsed < 0.1
    assert await used_quota(db, g.user_id) == 2


async def test_rfc7009_revocation_stops_charges_on_every_instance(stack, http, db, settings, two_accounts) -> None:
    g = await make_spend_grant(http, stack, db, settings, amount="10.00", period="daily")
    for base in two_accounts:
        assert (await spend(http, base, g.access_token, 1))[0] == 200
    form = {"token": g.refresh_token, "client_id": g.client_id, "client_secret": g.client_secret}
    async with http.post(f"{stack.base}/api/oauth2/revoke", data=form) as r:
        assert r.status == 200
    started = time.perf_counter()
    elapsed = await _refused_within(http, two_accounts, g.access_token, started)
    print(f"\nRFC 7009 revoke -> charges refused on 2 instances in {elapsed * 1000:.1f} ms")
    assert elapsed < 0.1


async def test_revoking_one_access_token_stops_its_charges(stack, http, db, settings, two_accounts) -> None:
    g = await make_spend_grant(http, stack, db, settings, amount="10.00", period="daily")
    form = {
        "token": g.access_token,
        "token_type_hint": "access_token",
        "client_id": g.client_id,
        "client_secret": g.client_secret,
    }
    async with http.post(f"{stack.base}/api/oauth2/revoke", data=form) as r:
        assert r.status == 200
    started = time.perf_counter()
    assert await _refused_within(http, two_accounts, g.access_token, started) < 0.1


# --- the user center -----------------------------------------------------------------------------
async def test_stop_spending_keeps_the_login(stack, http, db, grant) -> None:
    assert (await spend(http, stack.base, grant.access_token, 100, description="first reply"))[0] == 200
    async with http.get(f"{stack.base}/user/authorizations?lang=en") as r:
        page = await r.text()
    assert "Limit: 1.00 (per day)" in page and "Spent this period: 0.10, 0.90 left" in page
    assert "first reply" in page and "Stop spending" in page
    csrf = await csrf_from(http, f"{stack.base}/user/authorizations")
    async with http.post(
        f"{stack.base}/user/authorizations/{grant.client_id}/spend/stop",
        data={"csrf_token": csrf},
        allow_redirects=False,
    ) as r:
        assert r.status == 303
    status, body, _ = await spend(http, stack.base, grant.access_token, 1)
    assert status == 403 and body["error"] == "insufficient_scope"
    async with http.get(
        f"{stack.base}/api/oauth2/userinfo", headers={"Authorization": f"Bearer {grant.access_token}"}
    ) as r:
        assert r.status == 200  # the login (profile) still works
    row = await db.fetchrow("SELECT scopes, spend_limit FROM grants WHERE user_id = $1", grant.user_id)
    assert list(row["scopes"]) == ["profile"] and row["spend_limit"] is None
    stop = await db.fetchval(
        """SELECT count(*) FROM event_outbox WHERE type = 'quota.changed' AND data->>'reason' = 'spend_limit'
           AND data->>'client_id' = $1 AND data->'spend_limit' = 'null'::jsonb""",
        grant.client_id,
    )
    assert stop == 1


async def test_changing_the_limit_in_the_user_center(stack, http, db, grant) -> None:
    assert (await spend(http, stack.base, grant.access_token, 1000))[0] == 200
    csrf = await csrf_from(http, f"{stack.base}/user/authorizations")
    url = f"{stack.base}/user/authorizations/{grant.client_id}/spend"
    async with http.post(
        url, data={"csrf_token": csrf, "spend_amount": "3", "spend_period": "daily"}, allow_redirects=False
    ) as r:
        assert r.status == 303 and "spend_changed" in r.headers["Location"]
    status, left = await allowance(http, stack.base, grant.access_token)
    assert (left["limit"], left["spent"], left["remaining"]) == (3000, 1000, 2000)
    async with http.post(
        url, data={"csrf_token": csrf, "spend_amount": "abc", "spend_period": "daily"}, allow_redirects=False
    ) as r:
        assert r.status == 303 and "spend_error" in r.headers["Location"]
    async with http.post(url, data={"spend_amount": "9", "spend_period": "daily"}, allow_redirects=False) as r:
        assert r.status in (400, 403)  # no CSRF token
    assert (await allowance(http, stack.base, grant.access_token))[1]["limit"] == 3000


# --- the internal API (resource servers) ---------------------------------------------------------
async def test_internal_spend_charges_the_tokens_grant(stack, http, db, settings, grant) -> None:
    url = f"{stack.url_of('account')}/internal/quota/spend"
    headers = {"Authorization": f"Bearer {settings.internal_service_token}"}
    body = {"access_token": grant.access_token, "amount": 600, "idempotency_key": key(), "description": "rs"}
    async with http.post(url, json=body, headers=headers) as r:
        answer = await r.json()
    assert r.status == 200 and answer["success"] is True and answer["data"]["allowance"]["remaining"] == 400
    async with http.post(url, json=body | {"idempotency_key": key()}, headers=headers) as r:
        answer = await r.json()
    assert r.status == 402 and answer["success"] is False and answer["message"].startswith("spend_limit_exceeded")
    async with http.post(url, json=body, headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401
    async with http.post(url, json=body | {"access_token": "x.y.z", "idempotency_key": key()}, headers=headers) as r:
        assert r.status == 401 and (await r.json())["message"].startswith("invalid_token")
    # never routed by the gateway
    async with http.post(f"{stack.base}/internal/quota/spend", json=body, headers=headers) as r:
        assert r.status == 404


async def test_second_consent_can_change_the_limit(stack, http, db, settings, grant) -> None:
    code = await consent_with_limit(http, stack, grant.client_id, "4.00", "once", prompt="consent")
    assert code
    row = await db.fetchrow("SELECT spend_limit, spend_period FROM grants WHERE user_id = $1", grant.user_id)
    assert (row["spend_limit"], row["spend_period"]) == (4000, "once")


async def _spend_consent_page(http: aiohttp.ClientSession, stack: Stack, client_id: str) -> dict[str, str]:
    """The consent page of ``profile spend`` (prompt=consent: also when a record covers it), as
    the form an Allow with a limit of 3.00 a day posts."""
    params = {"client_id": client_id, "redirect_uri": CB, "response_type": "code", "scope": "profile spend"}
    params |= {"state": "s", "prompt": "consent"}
    async with http.get(f"{stack.base}/api/oauth2/authorize", params=params, allow_redirects=False) as r:
        page = await r.text()
    assert r.status == 200, (r.headers.get("Location"), page[:300])
    return {
        "csrf_token": form_value(page),
        "request": form_value(page, REQUEST_RE),
        "decision": "allow",
        "spend_amount": "3",
        "spend_period": "daily",
    }


@pytest.mark.parametrize("recorded", [True, False], ids=["a-second-consent", "a-first-consent"])
async def test_a_limit_chosen_while_the_user_is_being_disabled_records_nothing(
    stack, http, db, settings, recorded: bool
) -> None:
    """The consent-with-a-limit transaction locks the user's row first, as authorize does: an
    Allow arriving while the user is being disabled waits for it (before, a second consent held the
    record the disable deletes and deadlocked: a 503; a first one re-created a record for the
    disabled user), then records no consent, no limit, no event, and issues no code."""
    if recorded:
        g = await make_spend_grant(http, stack, db, settings)
        user_id, client_id = g.user_id, g.client_id
    else:
        user = await make_user(db)
        user_id, client_id = user.id, (await make_app(db, settings, (await make_user(db)).id, [CB]))[0]
        await login(http, stack.base, user.username, "correct horse battery")
    form = await _spend_consent_page(http, stack, client_id)
    counts = """SELECT (SELECT count(*) FROM authorization_codes WHERE user_id = $1),
                       (SELECT count(*) FROM event_outbox WHERE type = 'quota.changed' AND data->>'client_id' = $2)"""
    before = tuple(await db.fetchrow(counts, user_id, client_id))
    async with db.acquire() as conn, conn.transaction():
        await account_store.lock_user_status(conn, user_id)
        pending = asyncio.ensure_future(http.post(f"{stack.base}/consent", data=form, allow_redirects=False))
        done, _ = await asyncio.wait([pending], timeout=0.5)
        assert not done  # waiting for the user's row
        await account_store.set_user_status(conn, user_id, UserStatus.DISABLED)
        await delete_user_consents(conn, user_id)
    async with await pending as r:
        assert (r.status, r.headers.get("Location")) == (401, None), (await r.text())[:300]
    assert await db.fetchval("SELECT count(*) FROM grants WHERE user_id = $1", user_id) == 0
    assert tuple(await db.fetchrow(counts, user_id, client_id)) == before


async def test_developer_console_shows_aggregates_only(stack, http, db, settings) -> None:
    g = await make_spend_grant(http, stack, db, settings, amount="10.00", period="daily")
    assert (await spend(http, stack.base, g.access_token, 1500, description="secret-ish detail"))[0] == 200
    assert (await spend(http, stack.base, g.access_token, 500))[0] == 200
    owner_id = await db.fetchval("SELECT owner_id FROM oauth_apps WHERE client_id = $1", g.client_id)
    owner = await db.fetchval("SELECT username FROM users WHERE id = $1", owner_id)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as dev:
        from tests.support.oauth import login

        await login(dev, stack.base, owner, "correct horse battery")
        async with dev.get(f"{stack.base}/developer?lang=en") as r:
            page = await r.text()
    assert r.status == 200
    assert "Spent by users through this app: 2.00 in 2 charges by 1 users" in page
    assert "secret-ish detail" not in page and g.username not in page
