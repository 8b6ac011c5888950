"""Charges on a user's balance by an app, within the limit the user chose (docs/spending.md).

- ``POST /api/oauth2/spend`` (public, through the gateway): ``Authorization: Bearer <access token
  with the spend scope>``, JSON ``{"amount": int, "idempotency_key": str, "description": str?}``.
- ``GET /api/oauth2/spend``: the grant's allowance (limit, period, spent and left in the period).
- ``POST /internal/quota/spend`` (internal API, ``INTERNAL_SERVICE_TOKEN``): the same charge for a
  resource server, ``{"access_token": "<the app's token>", ...}``, answered in the envelope.

One charge is one transaction (``charge``): the user's row is locked (charges of a user are
serialised), the token is checked against PostgreSQL's revocations (the truth: a charge that starts
after a revocation committed is refused on every instance), the consent record's limit is read,
the period's charges summed, the balance debited with the conditional ``UPDATE`` of the quota API,
the charge recorded in ``spend_charges`` and ``quota.changed`` written to the outbox. So neither the
limit nor the balance can be overspent by parallel charges, and a refusal changes nothing.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from libs.contracts import authz as authz_contract
from libs.oauth.access_tokens import VERIFIER, AccessToken, authenticate, require_scope
from libs.oauth.errors import (
    AccessDenied,
    InsufficientBalance,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    OAuthError,
    SpendLimitExceeded,
)
from libs.oauth.events import outbox
from libs.oauth.events.types import QuotaChanged
from libs.oauth.pages import add_strings
from libs.oauth.spending import MAX_AMOUNT, Allowance, describe, format_amount, period_window, refusal
from libs.oauth.vocabulary import NO_STORE, SPEND_SCOPE, UserStatus
from libs.platform.errors import ApiError
from libs.platform.responses import json_response
from libs.platform.validation import has_control_chars, json_object
from libs.platform.web import PG, SETTINGS, envelope

from . import store
from .internal_quota import check_internal_token

MAX_KEY_CHARS = 200
MAX_DESCRIPTION_CHARS = 200
FIELDS = {"amount", "idempotency_key", "description"}
Clock = Callable[[], datetime]
CLOCK: web.AppKey[Clock] = web.AppKey("spend_clock")  # tests may put a clock of their own


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- input ---------------------------------------------------------------------------------------
def _bad(description: str) -> OAuthError:
    return InvalidRequest(description)


def parse_charge(body: dict[str, Any]) -> tuple[int, str, str]:
    amount = body.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
        raise _bad(f"amount must be an integer number of minor units between 1 and {MAX_AMOUNT}")
    key = body.get("idempotency_key")
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS or has_control_chars(key):
        raise _bad(f"idempotency_key must be a string of 1-{MAX_KEY_CHARS} printable characters")
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS or has_control_chars(description):
        raise _bad(f"description must be a string of at most {MAX_DESCRIPTION_CHARS} printable characters")
    return amount, key, description


# --- the rule over the store ---------------------------------------------------------------------
def _not_allowed(description: str) -> OAuthError:
    return InsufficientScope(SPEND_SCOPE, description)


def _user_of(token: AccessToken) -> int:
    if token.user_id is None or token.family is None:
        raise _not_allowed("Only an access token a user granted can spend (not a client_credentials token)")
    return token.user_id


async def _limit(conn: asyncpg.Connection, token: AccessToken, user_id: int) -> tuple[int, str, datetime]:
    """The grant's (limit, period, since); 401 when the token was revoked, 403 when it may not spend."""
    grant = await authz_contract.spend_grant(conn, user_id, token.client_id, token.family, token.jti)
    if grant is None or not grant["live"]:
        raise InvalidToken("The access token was revoked")
    if SPEND_SCOPE not in grant["scopes"] or grant["spend_limit"] is None:
        raise _not_allowed("The user has not allowed this app to spend (or stopped it); ask again with scope spend")
    return int(grant["spend_limit"]), grant["spend_period"], grant["spend_since"]


async def _active_balance(conn: asyncpg.Connection, user_id: int, *, lock: bool) -> tuple[int, int]:
    row = await (store.lock_user_balance if lock else store.user_balance_row)(conn, user_id)
    if row is None or row["status"] != UserStatus.ACTIVE:
        raise AccessDenied("The user's account is disabled", status=403)
    return int(row["quota"]), int(row["used_quota"])


def allowance_json(a: Allowance, per_unit: int) -> dict[str, Any]:
    return {
        "limit": a.limit,
        "limit_formatted": format_amount(a.limit, per_unit),
        "period": a.period,
        "period_start": int(a.start.timestamp()),
        "period_end": None if a.end is None else int(a.end.timestamp()),
        "spent": a.spent,
        "remaining": a.remaining,
        "remaining_formatted": format_amount(a.remaining, per_unit),
    }


def _replayed(seen: asyncpg.Record, amount: int) -> dict[str, Any]:
    if int(seen["amount"]) != amount:
        raise InvalidRequest(
            "idempotency_key was already used by this app for this user with another amount; use a new key",
            status=409,
        )
    first: dict[str, Any] = orjson.loads(seen["result"])
    return first


class ChargeQueues:
    """One asyncio lock per user in this process: a process's concurrent charges of one user wait
    here, not holding a pooled connection while PostgreSQL's row lock makes them wait anyway (with
    100 at once they would empty the pool and get 503s). Across instances the row lock decides."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def of(self, user_id: int) -> asyncio.Lock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        return lock


QUEUES: web.AppKey[ChargeQueues] = web.AppKey("spend_queues", ChargeQueues)


@dataclass(frozen=True)
class Charge:
    """One charge asked for: the token's grant, the amount (minor units), the key, the description."""

    token: AccessToken
    user_id: int
    amount: int
    key: str
    description: str


async def charge(
    pool: asyncpg.Pool,
    token: AccessToken,
    amount: int,
    key: str,
    description: str,
    *,
    per_unit: int,
    now: datetime,
    queues: ChargeQueues | None = None,
) -> tuple[dict[str, Any], bool]:
    """Charge ``amount`` to the token's grant once per ``key``: (result, replayed)."""
    asked = Charge(token, _user_of(token), amount, key, description)
    async with (queues or ChargeQueues()).of(asked.user_id):
        async with pool.acquire() as conn, conn.transaction():
            return await _charge(conn, asked, per_unit, now)


async def _charge(conn: asyncpg.Connection, c: Charge, per_unit: int, now: datetime) -> tuple[dict[str, Any], bool]:
    # The user's row lock first (held until the commit), then the grant and the revocations: a
    # charge that was waiting for the lock when a revocation committed sees it.
    quota, used = await _active_balance(conn, c.user_id, lock=True)
    limit, period, since = await _limit(conn, c.token, c.user_id)
    start, end = period_window(period, now, since)
    found = await store.spent_and_charge_by_key(conn, c.user_id, c.token.client_id, start, c.key)
    if found["amount"] is not None:
        return _replayed(found, c.amount), True
    allowance = Allowance(limit, period, int(found["spent"]), start, end)
    refused = refusal(allowance, quota - used, c.amount)
    if refused is not None:
        error = SpendLimitExceeded if refused.what == "spend_limit" else InsufficientBalance
        raise error(describe(refused, allowance, per_unit))
    after = replace(allowance, spent=allowance.spent + c.amount)
    balance = quota - used - c.amount
    result = {
        "amount": c.amount,
        "amount_formatted": format_amount(c.amount, per_unit),
        "idempotency_key": c.key,
        "description": c.description,
        "charged_at": int(now.timestamp()),
        "balance": balance,
        "balance_formatted": format_amount(balance, per_unit),
        "allowance": allowance_json(after, per_unit),
    }
    await _record(conn, c, result, after, now)
    return result, False


async def _record(conn: asyncpg.Connection, c: Charge, result: dict[str, Any], after: Allowance, now: datetime) -> None:
    """Debit, the ledger row and ``quota.changed``, in the charge's transaction."""
    row = await store.debit_and_record_charge(
        conn,
        c.user_id,
        c.token.client_id,
        c.token.family,
        c.amount,
        c.key,
        c.description,
        orjson.dumps(result).decode(),
        now,
        UserStatus.ACTIVE,
    )
    assert row is not None  # the row is locked and the balance was checked above
    grant = {"user_id": c.user_id, "client_id": c.token.client_id, "family_id": c.token.family}
    await outbox.enqueue(
        conn,
        QuotaChanged(
            user_id=c.user_id,
            delta=-c.amount,
            quota=int(row["quota"]),
            used_quota=int(row["used_quota"]),
            reason="spend",
            idempotency_key=c.key,
            client_id=c.token.client_id,
            grant=grant,
            spend_limit=after.limit,
            spend_period=after.period,
            spent_in_period=after.spent,
        ),
    )


async def current_allowance(pool: asyncpg.Pool, token: AccessToken, *, per_unit: int, now: datetime) -> dict[str, Any]:
    user_id = _user_of(token)
    async with pool.acquire() as conn:
        limit, period, since = await _limit(conn, token, user_id)
        start, end = period_window(period, now, since)
        quota, used = await _active_balance(conn, user_id, lock=False)
        allowance = Allowance(limit, period, await store.spent_since(conn, user_id, token.client_id, start), start, end)
    balance = quota - used
    return allowance_json(allowance, per_unit) | {
        "balance": balance,
        "balance_formatted": format_amount(balance, per_unit),
        # What one charge may be right now: the smaller of the allowance and the balance.
        "available": min(allowance.remaining, max(balance, 0)),
    }


# --- the developer console -----------------------------------------------------------------------
add_strings(
    {
        "zh": {"acct.dev.spend": "用户在该应用中的消费:共 {total},{charges} 笔扣费,{users} 位用户"},
        "en": {"acct.dev.spend": "Spent by users through this app: {total} in {charges} charges by {users} users"},
    }
)


async def spend_totals(pool: asyncpg.Pool, owner_id: int, per_unit: int) -> dict[int, dict[str, Any]]:
    """Per app of a developer (app id): total charged, charges and paying users; aggregates only."""
    return {
        r["app_id"]: {"total": format_amount(int(r["total"]), per_unit), "charges": r["charges"], "users": r["users"]}
        for r in await store.spend_totals_of_owner(pool, owner_id)
    }


# --- handlers ------------------------------------------------------------------------------------
async def _json_body(request: web.Request, fields: set[str]) -> dict[str, Any]:
    try:
        return await json_object(request, fields)
    except ApiError as exc:
        raise _bad(exc.message) from None


def _now(request: web.Request) -> datetime:
    return request.app.get(CLOCK, utc_now)()


async def _charge_for(request: web.Request, token: AccessToken, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``charge`` with this instance's clock, queues and unit: (result, replayed)."""
    amount, key, description = parse_charge(body)
    return await charge(
        request.app[PG],
        token,
        amount,
        key,
        description,
        per_unit=request.app[SETTINGS].quota_per_unit,
        now=_now(request),
        queues=request.app[QUEUES],
    )


async def handle_charge(request: web.Request) -> web.Response:
    token = await authenticate(request, SPEND_SCOPE)
    result, replayed = await _charge_for(request, token, await _json_body(request, FIELDS))
    headers = dict(NO_STORE) | ({"Idempotent-Replayed": "true"} if replayed else {})
    return json_response(result, headers=headers)


async def handle_allowance(request: web.Request) -> web.Response:
    token = await authenticate(request, SPEND_SCOPE)
    body = await current_allowance(
        request.app[PG], token, per_unit=request.app[SETTINGS].quota_per_unit, now=_now(request)
    )
    return json_response(body, headers=NO_STORE)


async def handle_internal_charge(request: web.Request) -> web.Response:
    """The resource server's charge: the envelope, errors as ``ApiError`` naming the OAuth error."""
    check_internal_token(request)
    body = await json_object(request, FIELDS | {"access_token"})
    raw = body.get("access_token")
    if not isinstance(raw, str) or not 1 <= len(raw) <= 8192:
        raise ApiError(400, "access_token must be the app's access token (a string)")
    try:
        token = await request.app[VERIFIER].verify(raw)
        require_scope(token, SPEND_SCOPE)
        result, replayed = await _charge_for(request, token, body)
    except OAuthError as exc:
        raise ApiError(exc.status, f"{exc.error}: {exc.description}") from None
    resp = envelope(result, "replayed: this idempotency_key was already applied" if replayed else "ok")
    resp.headers.update(NO_STORE)
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


def add_routes(app: web.Application) -> None:
    app[QUEUES] = ChargeQueues()
    app.router.add_post("/api/oauth2/spend", handle_charge)
    app.router.add_get("/api/oauth2/spend", handle_allowance)
    app.router.add_post("/internal/quota/spend", handle_internal_charge)
