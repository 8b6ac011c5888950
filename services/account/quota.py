"""The quota rules of the internal API (internal_quota.py has the HTTP side): consume and credit in
integer units, once per idempotency key, never below zero (402 otherwise).

``apply_quota`` runs over a narrow ``QuotaStore`` so the rule can be tested against an in-memory
fake (tests/unit/domain/test_account_quota.py); ``internal_quota.PgQuotaStore`` is the real one,
used inside one transaction so the key, the change and its ``quota.changed`` event commit together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from libs.oauth.events.types import QuotaChanged
from libs.platform.errors import ApiError

from .balance import format_balance
from .users import is_active

OPERATIONS = ("consume", "credit")


@dataclass(frozen=True)
class QuotaRequest:
    operation: str  # "consume" or "credit"
    user_id: int
    amount: int
    key: str
    reason: str


@dataclass(frozen=True)
class Account:
    status: int
    quota: int
    used_quota: int


class QuotaStore(Protocol):
    async def claim(self, req: QuotaRequest) -> bool:
        """Record the key (True), or False when it was used before; ApiError 404 for no such user."""

    async def previous(self, key: str) -> tuple[tuple[str, int, int], dict[str, Any]] | None:
        """The (operation, user_id, amount) and result recorded for ``key``."""

    async def consume(self, user_id: int, amount: int) -> tuple[int, int] | None:
        """(quota, used_quota) after ``used_quota += amount`` if active and covered, else None."""

    async def credit(self, user_id: int, amount: int) -> tuple[int, int] | None:
        """(quota, used_quota) after ``quota += amount``, None for no such user."""

    async def account(self, user_id: int) -> Account | None: ...

    async def record(self, key: str, result: dict[str, Any], event: QuotaChanged) -> None:
        """Store ``result`` for the key and write the ``quota.changed`` event."""


async def apply_quota(store: QuotaStore, req: QuotaRequest, quota_per_unit: int) -> tuple[dict[str, Any], bool]:
    """Apply ``req`` once per key: (result, replayed). A refusal raises and records nothing."""
    if not await store.claim(req):
        return await replay(store, req), True
    if req.operation == "consume":
        after = await store.consume(req.user_id, req.amount)
        if after is None:
            raise refusal(await store.account(req.user_id), req.amount, quota_per_unit)
    else:
        after = await store.credit(req.user_id, req.amount)
        if after is None:
            raise ApiError(404, "user not found")
    result = quota_result(req, after[0], after[1], quota_per_unit)
    delta = -req.amount if req.operation == "consume" else req.amount
    event = QuotaChanged(
        user_id=req.user_id,
        delta=delta,
        quota=after[0],
        used_quota=after[1],
        reason=req.reason,
        idempotency_key=req.key,
    )
    await store.record(req.key, result, event)
    return result, False


def quota_result(req: QuotaRequest, quota: int, used: int, quota_per_unit: int) -> dict[str, Any]:
    return {
        "user_id": req.user_id,
        "operation": req.operation,
        "amount": req.amount,
        "idempotency_key": req.key,
        "quota": quota,
        "used_quota": used,
        "balance": quota - used,
        "balance_formatted": format_balance(quota, used, quota_per_unit),
    }


async def replay(store: QuotaStore, req: QuotaRequest) -> dict[str, Any]:
    """The first result for a key reused with the same parameters; 409 for other parameters."""
    seen = await store.previous(req.key)
    if seen is None or seen[0] != (req.operation, req.user_id, req.amount):
        raise ApiError(
            409,
            "idempotency_key was already used for a different request "
            "(another operation, user_id or amount); use a new key for a new operation",
        )
    return seen[1]


def refusal(account: Account | None, amount: int, quota_per_unit: int) -> ApiError:
    """Why a consume was refused: 404 no user, 403 disabled, 402 the balance does not cover it."""
    if account is None:
        return ApiError(404, "user not found")
    if not is_active(account.status):
        return ApiError(403, "the user's account is disabled")
    balance = account.quota - account.used_quota
    return ApiError(
        402,
        f"insufficient quota: the balance is {balance} "
        f"({format_balance(account.quota, account.used_quota, quota_per_unit)}), {amount} was requested; "
        "nothing was consumed",
    )
