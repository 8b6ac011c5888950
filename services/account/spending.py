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

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from libs.oauth.access_tokens import VERIFIER, AccessToken, authenticate, invalid_token, require_scope
from libs.oauth.errors import OAuthError
from libs.oauth.events import outbox
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
    return OAuthError("invalid_request", description, status=400)


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
    return OAuthError(
        "insufficient_scope",
        description,
        status=403,
        www_authenticate=f'Bearer realm="oauth", error="insufficient_scope", scope="{SPEND_SCOPE}"',
    )


async def _allowance(conn: asyncpg.Connection, token: AccessToken, user_id: int, now: datetime) -> Allowance:
    """The grant's allowance now; 401 when the token was revoked, 403 when it may not spend."""
    if token.family is None or not await store.token_still_live(
        conn, user_id, token.client_id, token.family, token.jti
    ):
        raise invalid_token("The access token was revoked")
    grant = await store.spend_grant(conn, user_id, token.client_id)
    if grant is None or SPEND_SCOPE not in grant["scopes"] or grant["spend_limit"] is None:
        raise _not_allowed("The user has not allowed this app to spend (or stopped it); ask again with scope spend")
    start, end = period_window(grant["spend_period"], now, grant["spend_since"])
    spent = await store.spent_since(conn, user_id, token.client_id, start)
    return Allowance(int(grant["spend_limit"]), grant["spend_period"], spent, start, end)


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


def _user_of(token: AccessToken) -> int:
    if token.user_id is None:
        raise _not_allowed("Only a user's access token can spend (not a client_credentials token)")
    return token.user_id


async def _locked_balance(conn: asyncpg.Connection, user_id: int) -> int:
    row = await store.lock_user_balance(conn, user_id)
    if row is None or row["status"] != UserStatus.ACTIVE:
        raise OAuthError("access_denied", "The user's account is disabled", status=403)
    return int(row["quota"]) - int(row["used_quota"])


async def _replay(conn: asyncpg.Connection, user_id: int, token: AccessToken, amount: int, key: str) -> dict | None:
    seen = await store.spend_charge_by_key(conn, user_id, token.client_id, key)
    if seen is None:
        return None
    if int(seen["amount"]) != amount:
        raise OAuthError(
            "invalid_request",
            "idempotency_key was already used by this app for this user with another amount; use a new key",
            status=409,
        )
    first: dict[str, Any] = orjson.loads(seen["result"])
    return first


async def charge(
    pool: asyncpg.Pool, token: AccessToken, amount: int, key: str, description: str, *, per_unit: int, now: datetime
) -> tuple[dict[str, Any], bool]:
    """Charge ``amount`` to the token's grant once per ``key``: (result, replayed)."""
    user_id = _user_of(token)
    async with pool.acquire() as conn, conn.transaction():
        balance = await _locked_balance(conn, user_id)
        allowance = await _allowance(conn, token, user_id, now)
        first = await _replay(conn, user_id, token, amount, key)
        if first is not None:
            return first, True
        refused = refusal(allowance, balance, amount)
        if refused is not None:
            error = "spend_limit_exceeded" if refused.what == "spend_limit" else "insufficient_balance"
            raise OAuthError(error, describe(refused, allowance, per_unit), status=402)
        after = await store.consume_quota_if_covered(conn, user_id, amount, UserStatus.ACTIVE)
        assert after is not None  # the row is locked and the balance was checked above
        quota, used = int(after["quota"]), int(after["used_quota"])
        spent = Allowance(allowance.limit, allowance.period, allowance.spent + amount, allowance.start, allowance.end)
        result = {
            "amount": amount,
            "amount_formatted": format_amount(amount, per_unit),
            "idempotency_key": key,
            "description": description,
            "charged_at": int(now.timestamp()),
            "balance": quota - used,
            "balance_formatted": format_amount(quota - used, per_unit),
            "allowance": allowance_json(spent, per_unit),
        }
        await store.insert_spend_charge(
            conn, user_id, token.client_id, token.family, amount, key, description, orjson.dumps(result).decode(), now
        )
        await outbox.enqueue(
            conn,
            "quota.changed",
            {
                "user_id": user_id,
                "delta": -amount,
                "quota": quota,
                "used_quota": used,
                "reason": "spend",
                "idempotency_key": key,
                "client_id": token.client_id,
                "grant": {"user_id": user_id, "client_id": token.client_id, "family_id": token.family},
                "spend_limit": spent.limit,
                "spend_period": spent.period,
                "spent_in_period": spent.spent,
            },
        )
    return result, False


async def current_allowance(pool: asyncpg.Pool, token: AccessToken, *, per_unit: int, now: datetime) -> dict[str, Any]:
    user_id = _user_of(token)
    async with pool.acquire() as conn, conn.transaction():
        balance = await _locked_balance(conn, user_id)
        allowance = await _allowance(conn, token, user_id, now)
    return allowance_json(allowance, per_unit) | {
        "balance": balance,
        "balance_formatted": format_amount(balance, per_unit),
        # What one charge may be right now: the smaller of the allowance and the balance.
        "available": min(allowance.remaining, max(balance, 0)),
    }


# --- handlers ------------------------------------------------------------------------------------
async def _json_body(request: web.Request, fields: set[str]) -> dict[str, Any]:
    try:
        return await json_object(request, fields)
    except ApiError as exc:
        raise _bad(exc.message) from None


def _now(request: web.Request) -> datetime:
    return request.app.get(CLOCK, utc_now)()


async def handle_charge(request: web.Request) -> web.Response:
    token = await authenticate(request, SPEND_SCOPE)
    amount, key, description = parse_charge(await _json_body(request, FIELDS))
    result, replayed = await charge(
        request.app[PG],
        token,
        amount,
        key,
        description,
        per_unit=request.app[SETTINGS].quota_per_unit,
        now=_now(request),
    )
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
        amount, key, description = parse_charge(body)
        result, replayed = await charge(
            request.app[PG],
            token,
            amount,
            key,
            description,
            per_unit=request.app[SETTINGS].quota_per_unit,
            now=_now(request),
        )
    except OAuthError as exc:
        raise ApiError(exc.status, f"{exc.error}: {exc.description}") from None
    resp = envelope(result, "replayed: this idempotency_key was already applied" if replayed else "ok")
    resp.headers.update(NO_STORE)
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/oauth2/spend", handle_charge)
    app.router.add_get("/api/oauth2/spend", handle_allowance)
    app.router.add_post("/internal/quota/spend", handle_internal_charge)
