"""The internal quota API (docs/architecture.md "Services"; never routed by the gateway).

``POST /internal/quota/consume`` and ``POST /internal/quota/credit`` with
``{"user_id": int, "amount": int, "idempotency_key": str}`` (optional ``"reason"``, a short label
carried in the event), authenticated with ``Authorization: Bearer <INTERNAL_SERVICE_TOKEN>``
(compared in constant time). Answers the guide's envelope ``{success, message, data}``.

- consume: ``used_quota += amount`` only if the balance (``quota - used_quota``) covers it, in one
  conditional ``UPDATE`` (the row lock serialises concurrent consumes; the condition is re-checked
  on the latest row), so the balance is exact and never below zero; otherwise **402**
  ``insufficient quota`` and nothing changes.
- credit: ``quota += amount`` (top-ups, refunds).
- Idempotent on ``idempotency_key``: the key is recorded in ``quota_operations`` in the same
  transaction as the change and its ``quota.changed`` event. A retry with the same key and the same
  parameters gets the first result again (``Idempotent-Replayed: true``) and changes nothing; the
  same key with other parameters is **409**. Two concurrent requests with one key: the second
  waits for the first and then replays it. A refused request (402, 404, 403) records nothing, so
  the key can be retried once the balance allows.
"""

from __future__ import annotations

import hmac
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from libs.oauth.events import outbox
from libs.oauth.events.types import QuotaChanged
from libs.oauth.vocabulary import UserStatus
from libs.platform.errors import ApiError
from libs.platform.params import integer, text
from libs.platform.validation import json_object
from libs.platform.web import PG, SETTINGS, envelope

from . import store
from .quota import Account, QuotaRequest, apply_quota

MAX_AMOUNT = 10**15
MAX_KEY_CHARS = 200
MAX_REASON_CHARS = 100
FIELDS = {"user_id", "amount", "idempotency_key", "reason"}
CHALLENGE = 'Bearer realm="internal"'


def check_internal_token(request: web.Request) -> None:
    expected = request.app[SETTINGS].internal_service_token
    if not expected:
        raise ApiError(503, "the internal API is disabled: set INTERNAL_SERVICE_TOKEN on the account service")
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    presented = value.strip().encode("utf-8", "surrogatepass")
    # compare_digest of the full values: constant time in the length of the secret.
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented, expected.encode()):
        raise ApiError(
            401, "a valid internal service token is required (Authorization: Bearer ...)", www_authenticate=CHALLENGE
        )


class PgQuotaStore:
    """``quota.QuotaStore`` on one connection, inside the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def claim(self, req: QuotaRequest) -> bool:
        try:
            return await store.claim_quota_key(self.conn, req.key, req.operation, req.user_id, req.amount)
        except asyncpg.ForeignKeyViolationError:
            raise ApiError(404, "user not found") from None

    async def previous(self, key: str) -> tuple[tuple[str, int, int], dict[str, Any]] | None:
        row = await store.quota_operation(self.conn, key)
        if row is None:
            return None
        return (row["operation"], row["user_id"], row["amount"]), orjson.loads(row["result"])

    async def consume(self, user_id: int, amount: int) -> tuple[int, int] | None:
        row = await store.consume_quota_if_covered(self.conn, user_id, amount, UserStatus.ACTIVE)
        return None if row is None else (int(row["quota"]), int(row["used_quota"]))

    async def credit(self, user_id: int, amount: int) -> tuple[int, int] | None:
        try:
            row = await store.add_quota_if_status(self.conn, user_id, amount, None)
        except asyncpg.NumericValueOutOfRangeError:
            raise ApiError(400, "amount is too large for this account") from None
        return None if row is None else (int(row["quota"]), int(row["used_quota"]))

    async def account(self, user_id: int) -> Account | None:
        row = await store.user_balance_row(self.conn, user_id)
        return None if row is None else Account(int(row["status"]), int(row["quota"]), int(row["used_quota"]))

    async def record(self, key: str, result: dict[str, Any], event: QuotaChanged) -> None:
        await store.save_quota_result(self.conn, key, orjson.dumps(result).decode())
        await outbox.enqueue(self.conn, event)


async def apply(
    pool: asyncpg.Pool,
    operation: str,
    user_id: int,
    amount: int,
    key: str,
    *,
    reason: str,
    quota_per_unit: int,
) -> tuple[dict[str, Any], bool]:
    """Apply ``operation`` once per ``key`` in one transaction; (result, replayed)."""
    req = QuotaRequest(operation, user_id, amount, key, reason)
    async with pool.acquire() as conn, conn.transaction():
        return await apply_quota(PgQuotaStore(conn), req, quota_per_unit)


async def _handle(request: web.Request, operation: str) -> web.Response:
    check_internal_token(request)
    body = await json_object(request, FIELDS)
    # The shared parsers (libs/platform/params.py); InvalidInput is answered 400 in the envelope.
    user_id = integer(body.get("user_id"), "user_id", minimum=1, maximum=2**63 - 1)
    amount = integer(body.get("amount"), "amount", minimum=1, maximum=MAX_AMOUNT)
    key = text(body.get("idempotency_key"), "idempotency_key", min_len=1, max_len=MAX_KEY_CHARS)
    raw_reason = body.get("reason")
    reason = operation if raw_reason is None else text(raw_reason, "reason", min_len=1, max_len=MAX_REASON_CHARS)
    settings = request.app[SETTINGS]
    result, replayed = await apply(
        request.app[PG], operation, user_id, amount, key, reason=reason, quota_per_unit=settings.quota_per_unit
    )
    resp = envelope(result, "replayed: this idempotency_key was already applied" if replayed else "ok")
    resp.headers["Cache-Control"] = "no-store"
    if replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


async def handle_consume(request: web.Request) -> web.Response:
    return await _handle(request, "consume")


async def handle_credit(request: web.Request) -> web.Response:
    return await _handle(request, "credit")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/internal/quota/consume", handle_consume)
    app.router.add_post("/internal/quota/credit", handle_credit)
