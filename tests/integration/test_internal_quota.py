"""The internal quota API on the account service (POST /internal/quota/consume and /credit):
internal-token auth, exact balances under concurrency, never below zero (402), idempotency keys,
quota.changed events, and userinfo's cache following the change on every instance at once."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web

from libs.contracts.token import SIGNING_KEYS, ensure_signing_key
from libs.oauth.access_tokens import mint
from libs.oauth.events.bus import EVENTS
from libs.oauth.keys import KeyStore
from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from services.account import store as account_store
from tests.support.factories import make_user
from tests.support.stack import Stack, free_port


@pytest.fixture(scope="module")
async def account(stack: Stack) -> str:
    return stack.url_of("account")


def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.internal_service_token}"}


async def call(
    http: aiohttp.ClientSession, base: str, op: str, body: object, headers: dict[str, str]
) -> tuple[int, dict, dict[str, str]]:
    async with http.post(f"{base}/internal/quota/{op}", data=orjson.dumps(body), headers=headers) as r:
        return r.status, await r.json(), dict(r.headers)


async def rich(db: asyncpg.Pool, quota: int = 1000, used: int = 0) -> int:
    user = await make_user(db)
    await account_store.set_balance(db, user.id, quota, used)
    return user.id


def key() -> str:
    return "op-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
async def two_accounts(stack: Stack) -> AsyncIterator[list[str]]:
    runners: list[web.AppRunner] = []
    urls = []
    for _ in range(2):
        port = free_port()
        runners.append(await stack.start("account", port=port))
        urls.append(f"http://127.0.0.1:{port}")
    for runner in runners:
        for _ in range(200):
            if runner.app[EVENTS].live:
                break
            await asyncio.sleep(0.025)
    yield urls
    for runner in runners:
        await runner.cleanup()


# --- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Basic abc", "Bearer", "bearer  ", "Token {token}", "Bearer {token}x"]
)
async def test_needs_the_internal_token(http, account, settings, db, header) -> None:
    uid = await rich(db)
    headers = {} if header is None else {"Authorization": header.format(token=settings.internal_service_token)}
    status, body, hdrs = await call(
        http, account, "consume", {"user_id": uid, "amount": 1, "idempotency_key": key()}, headers
    )
    assert status == 401 and body["success"] is False and body["data"] is None
    assert hdrs["WWW-Authenticate"].startswith("Bearer")
    assert await db.fetchval("SELECT used_quota FROM users WHERE id = $1", uid) == 0


async def test_not_routed_by_the_gateway(stack: Stack, http, settings, db) -> None:
    uid = await rich(db)
    for op in ("consume", "credit"):
        status, _, _ = await call(
            http, stack.base, op, {"user_id": uid, "amount": 1, "idempotency_key": key()}, auth(settings)
        )
        assert status == 404
    assert await db.fetchval("SELECT quota - used_quota FROM users WHERE id = $1", uid) == 1000


# --- consume and credit --------------------------------------------------------------------------
async def test_consume_and_credit(http, account, settings, db) -> None:
    uid = await rich(db, 1000, 100)
    status, body, hdrs = await call(
        http, account, "consume", {"user_id": uid, "amount": 250, "idempotency_key": "c1-" + key()}, auth(settings)
    )
    assert status == 200 and body["success"] is True and hdrs["Cache-Control"] == "no-store"
    data = body["data"]
    assert (data["operation"], data["amount"], data["quota"], data["used_quota"], data["balance"]) == (
        "consume",
        250,
        1000,
        350,
        650,
    )
    assert data["balance_formatted"] == "0.65"
    status, body, _ = await call(
        http,
        account,
        "credit",
        {"user_id": uid, "amount": 5000, "idempotency_key": key(), "reason": "refund"},
        auth(settings),
    )
    assert status == 200 and (body["data"]["quota"], body["data"]["used_quota"], body["data"]["balance"]) == (
        6000,
        350,
        5650,
    )
    row = await db.fetchrow("SELECT quota, used_quota FROM users WHERE id = $1", uid)
    assert (row["quota"], row["used_quota"]) == (6000, 350)
    events = await db.fetch(
        "SELECT data::text AS d FROM event_outbox WHERE type = 'quota.changed' AND (data->>'user_id')::bigint = $1 ORDER BY occurred_at",
        uid,
    )
    got = [orjson.loads(e["d"]) for e in events]
    assert [(e["delta"], e["quota"], e["used_quota"], e["reason"]) for e in got] == [
        (-250, 1000, 350, "consume"),
        (5000, 6000, 350, "refund"),
    ]


async def test_never_below_zero(http, account, settings, db) -> None:
    uid = await rich(db, 100, 60)
    status, body, _ = await call(
        http, account, "consume", {"user_id": uid, "amount": 41, "idempotency_key": key()}, auth(settings)
    )
    assert status == 402 and body["success"] is False
    assert "insufficient quota" in body["message"] and "40" in body["message"]
    assert await db.fetchval("SELECT used_quota FROM users WHERE id = $1", uid) == 60
    status, body, _ = await call(
        http, account, "consume", {"user_id": uid, "amount": 40, "idempotency_key": key()}, auth(settings)
    )
    assert status == 200 and body["data"]["balance"] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"amount": 1, "idempotency_key": "k"}, "user_id"),
        ({"user_id": "1", "amount": 1, "idempotency_key": "k"}, "user_id"),
        ({"user_id": 1, "amount": 0, "idempotency_key": "k"}, "amount"),
        ({"user_id": 1, "amount": -5, "idempotency_key": "k"}, "amount"),
        ({"user_id": 1, "amount": 1.5, "idempotency_key": "k"}, "amount"),
        ({"user_id": 1, "amount": True, "idempotency_key": "k"}, "amount"),
        ({"user_id": 1, "amount": 10**16, "idempotency_key": "k"}, "amount"),
        ({"user_id": 1, "amount": 1}, "idempotency_key"),
        ({"user_id": 1, "amount": 1, "idempotency_key": ""}, "idempotency_key"),
        ({"user_id": 1, "amount": 1, "idempotency_key": "x" * 201}, "idempotency_key"),
        ({"user_id": 1, "amount": 1, "idempotency_key": "a\nb"}, "idempotency_key"),
        ({"user_id": 1, "amount": 1, "idempotency_key": "k", "extra": 1}, "unknown field"),
        ([1, 2], "JSON object"),
    ],
)
async def test_validation(http, account, settings, body, message) -> None:
    status, got, _ = await call(http, account, "consume", body, auth(settings))
    assert status == 400 and got["success"] is False and message in got["message"], got


async def test_unknown_and_disabled_users(http, account, settings, db) -> None:
    status, body, _ = await call(
        http, account, "consume", {"user_id": 10**12, "amount": 1, "idempotency_key": key()}, auth(settings)
    )
    assert status == 404 and body["success"] is False
    status, _, _ = await call(
        http, account, "credit", {"user_id": 10**12, "amount": 1, "idempotency_key": key()}, auth(settings)
    )
    assert status == 404
    uid = await rich(db)
    await account_store.set_user_status(db, uid, UserStatus.DISABLED)
    status, body, _ = await call(
        http, account, "consume", {"user_id": uid, "amount": 1, "idempotency_key": key()}, auth(settings)
    )
    assert status == 403 and "disabled" in body["message"]


# --- idempotency ---------------------------------------------------------------------------------
async def test_a_retry_is_applied_once(http, account, settings, db) -> None:
    uid = await rich(db, 1000)
    req = {"user_id": uid, "amount": 300, "idempotency_key": key()}
    first = await call(http, account, "consume", req, auth(settings))
    again = await call(http, account, "consume", req, auth(settings))
    assert first[0] == again[0] == 200
    assert first[1]["data"] == again[1]["data"]  # the first result, again
    assert "Idempotent-Replayed" not in first[2] and again[2]["Idempotent-Replayed"] == "true"
    assert await db.fetchval("SELECT used_quota FROM users WHERE id = $1", uid) == 300
    n = await db.fetchval(
        "SELECT count(*) FROM event_outbox WHERE type = 'quota.changed' AND data->>'idempotency_key' = $1",
        req["idempotency_key"],
    )
    assert n == 1
    # Even after the balance moved on, the retry answers the first result.
    await call(http, account, "consume", {"user_id": uid, "amount": 100, "idempotency_key": key()}, auth(settings))
    status, body, _ = await call(http, account, "consume", req, auth(settings))
    assert status == 200 and body["data"]["used_quota"] == 300
    assert await db.fetchval("SELECT used_quota FROM users WHERE id = $1", uid) == 400


@pytest.mark.parametrize("change", [{"amount": 301}, {"op": "credit"}, {"user_id": "other"}])
async def test_a_reused_key_with_other_parameters_is_409(http, account, settings, db, change) -> None:
    uid = await rich(db, 1000)
    req = {"user_id": uid, "amount": 300, "idempotency_key": key()}
    assert (await call(http, account, "consume", req, auth(settings)))[0] == 200
    other = dict(req)
    op = "consume"
    if "amount" in change:
        other["amount"] = change["amount"]
    if "op" in change:
        op = change["op"]
    if "user_id" in change:
        other["user_id"] = await rich(db, 1000)
    status, body, _ = await call(http, account, op, other, auth(settings))
    assert status == 409 and body["success"] is False and "idempotency_key" in body["message"]
    assert await db.fetchval("SELECT used_quota FROM users WHERE id = $1", uid) == 300


async def test_concurrent_requests_with_one_key_apply_once(http, account, settings, db) -> None:
    uid = await rich(db, 1000)
    req = {"user_id": uid, "amount": 7, "idempotency_key": key()}
    results = await asyncio.gather(*(call(http, account, "consume", req, auth(settings)) for _ in range(10)))
    assert all(s == 200 for s, _, _ in results)
    assert all(b["data"] == results[0][1]["data"] for _, b, _ in results)
    assert await db.fetchval("SELECT used_quota FROM users WHERE id = $1", uid) == 7


async def test_a_refused_key_can_be_retried(http, account, settings, db) -> None:
    uid = await rich(db, 10)
    req = {"user_id": uid, "amount": 50, "idempotency_key": key()}
    assert (await call(http, account, "consume", req, auth(settings)))[0] == 402
    await call(http, account, "credit", {"user_id": uid, "amount": 100, "idempotency_key": key()}, auth(settings))
    status, body, _ = await call(http, account, "consume", req, auth(settings))
    assert status == 200 and body["data"]["balance"] == 60


# --- 50 at once, and every instance sees it ------------------------------------------------------
async def test_fifty_concurrent_consumes_are_exact_and_visible_everywhere(
    stack: Stack, http, account, settings, db, two_accounts
) -> None:
    uid = await rich(db, 1000)
    await ensure_signing_key(db, settings.jwt_algorithm)
    from datetime import timedelta

    keys = KeyStore(db, settings.jwt_algorithm, timedelta(hours=3), SIGNING_KEYS)
    await keys.load()
    token, _ = await mint(keys, settings, sub=str(uid), client_id="client_x", scope="balance", family=None)
    bearer = {"Authorization": f"Bearer {token}"}

    async def balance_on(base: str) -> dict:
        async with http.get(f"{base}/api/oauth2/userinfo", headers=bearer) as r:
            assert r.status == 200
            return await r.json()

    for base in two_accounts:  # cached on both instances
        assert (await balance_on(base))["quota"] == 1000

    results = await asyncio.gather(
        *(
            call(http, account, "consume", {"user_id": uid, "amount": 30, "idempotency_key": key()}, auth(settings))
            for _ in range(50)
        )
    )
    statuses = sorted(s for s, _, _ in results)
    assert statuses.count(200) == 33 and statuses.count(402) == 17, statuses
    row = await db.fetchrow("SELECT quota, used_quota FROM users WHERE id = $1", uid)
    assert (row["quota"], row["used_quota"]) == (1000, 990)
    balances = sorted(b["data"]["balance"] for s, b, _ in results if s == 200)
    assert balances == list(range(10, 1000, 30))  # each success saw its own exact balance
    # Userinfo, on every instance, at once (the last consume has returned).
    for base in two_accounts:
        body = await balance_on(base)
        assert (body["quota"], body["used_quota"], body["balance_formatted"]) == (1000, 990, "0.01")

    # A retry of one applied request changes nothing, anywhere.
    _, applied, _ = next(r for r in results if r[0] == 200)
    again = await call(
        http,
        account,
        "consume",
        {"user_id": uid, "amount": 30, "idempotency_key": applied["data"]["idempotency_key"]},
        auth(settings),
    )
    assert again[0] == 200 and again[1]["data"] == applied["data"]
    assert await db.fetchval("SELECT used_quota FROM users WHERE id = $1", uid) == 990
    # Top up through the other instance: seen by both.
    status, _, _ = await call(
        http, two_accounts[0], "credit", {"user_id": uid, "amount": 10, "idempotency_key": key()}, auth(settings)
    )
    assert status == 200
    for base in two_accounts:
        assert (await balance_on(base))["quota"] == 1010
