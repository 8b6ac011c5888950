"""The money rules of the internal quota API against an in-memory store: integer units, once per
idempotency key, never below zero (402), 404/403/409 as docs/api.md lists them. No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from libs.oauth.events.types import QuotaChanged
from libs.oauth.vocabulary import UserStatus
from libs.platform.errors import ApiError
from services.account.quota import Account, QuotaRequest, apply_quota

UNIT = 1000


class FakeQuotaStore:
    """``QuotaStore`` over dicts: the same conditions as the SQL in services/account/store.py."""

    def __init__(self, accounts: dict[int, Account]) -> None:
        self.accounts = dict(accounts)
        self.keys: dict[str, tuple[tuple[str, int, int], dict[str, Any]]] = {}
        self.events: list[QuotaChanged] = []

    async def claim(self, req: QuotaRequest) -> bool:
        if req.key in self.keys:
            return False
        if req.user_id not in self.accounts:
            raise ApiError(404, "user not found")  # the foreign key
        self.keys[req.key] = ((req.operation, req.user_id, req.amount), {})
        return True

    async def previous(self, key: str) -> tuple[tuple[str, int, int], dict[str, Any]] | None:
        return self.keys.get(key)

    async def consume(self, user_id: int, amount: int) -> tuple[int, int] | None:
        a = self.accounts.get(user_id)
        if a is None or a.status != UserStatus.ACTIVE or a.quota - a.used_quota < amount:
            return None
        self.accounts[user_id] = Account(a.status, a.quota, a.used_quota + amount)
        return a.quota, a.used_quota + amount

    async def credit(self, user_id: int, amount: int) -> tuple[int, int] | None:
        a = self.accounts.get(user_id)
        if a is None:
            return None
        self.accounts[user_id] = Account(a.status, a.quota + amount, a.used_quota)
        return a.quota + amount, a.used_quota

    async def account(self, user_id: int) -> Account | None:
        return self.accounts.get(user_id)

    async def record(self, key: str, result: dict[str, Any], event: QuotaChanged) -> None:
        self.keys[key] = (self.keys[key][0], result)
        self.events.append(event)


def store() -> FakeQuotaStore:
    return FakeQuotaStore(
        {
            1: Account(UserStatus.ACTIVE, 1_000_000, 250_000),
            2: Account(UserStatus.DISABLED, 1_000_000, 0),
            3: Account(UserStatus.ACTIVE, 0, 0),
        }
    )


def req(op: str, user: int, amount: int, key: str = "k1") -> QuotaRequest:
    return QuotaRequest(op, user, amount, key, op)


@pytest.mark.parametrize(
    ("request_", "quota", "used", "formatted"),
    [
        (req("consume", 1, 1), 1_000_000, 250_001, "749.99"),
        (req("consume", 1, 750_000), 1_000_000, 1_000_000, "0.00"),  # exactly the balance: allowed
        (req("credit", 1, 5), 1_000_005, 250_000, "750.00"),  # truncated, never rounded up
        (req("credit", 3, 1_234_567), 1_234_567, 0, "1234.56"),
        (req("credit", 2, 10), 1_000_010, 0, "1000.01"),  # a refund reaches a disabled user too
    ],
)
async def test_applied(request_: QuotaRequest, quota: int, used: int, formatted: str) -> None:
    fake = store()
    result, replayed = await apply_quota(fake, request_, UNIT)
    assert not replayed
    assert (result["quota"], result["used_quota"], result["balance"]) == (quota, used, quota - used)
    assert result["balance_formatted"] == formatted
    delta = -request_.amount if request_.operation == "consume" else request_.amount
    assert [e.to_data() for e in fake.events] == [
        {"user_id": request_.user_id, "delta": delta, "quota": quota, "used_quota": used}
        | {"reason": request_.operation, "idempotency_key": "k1"}
    ]


@pytest.mark.parametrize(
    ("request_", "status", "fragment"),
    [
        (req("consume", 1, 750_001), 402, "insufficient quota: the balance is 750000 (750.00), 750001"),
        (req("consume", 3, 1), 402, "the balance is 0 (0.00)"),
        (req("consume", 2, 1), 403, "disabled"),
        (req("consume", 9, 1), 404, "user not found"),
        (req("credit", 9, 1), 404, "user not found"),
    ],
)
async def test_refused_changes_nothing(request_: QuotaRequest, status: int, fragment: str) -> None:
    fake = store()
    before = dict(fake.accounts)
    with pytest.raises(ApiError) as info:
        await apply_quota(fake, request_, UNIT)
    assert info.value.status == status
    assert fragment in info.value.message
    assert fake.accounts == before and fake.events == []


@pytest.mark.parametrize(
    ("second", "status"),
    [
        (req("consume", 1, 100), None),  # same key, same parameters: the first result again
        (req("consume", 1, 101), 409),
        (req("credit", 1, 100), 409),
        (req("consume", 3, 100), 409),
    ],
)
async def test_idempotency_key(second: QuotaRequest, status: int | None) -> None:
    fake = store()
    first, _ = await apply_quota(fake, req("consume", 1, 100), UNIT)
    if status is None:
        again, replayed = await apply_quota(fake, second, UNIT)
        assert replayed and again == first
    else:
        with pytest.raises(ApiError) as info:
            await apply_quota(fake, second, UNIT)
        assert info.value.status == status
    assert fake.accounts[1].used_quota == 250_100  # applied exactly once
    assert len(fake.events) == 1


async def test_consumes_never_go_below_zero() -> None:
    fake = store()
    outcomes = []
    for i in range(10):
        try:
            await apply_quota(fake, req("consume", 1, 100_000, key=f"k{i}"), UNIT)
            outcomes.append("ok")
        except ApiError as exc:
            outcomes.append(str(exc.status))
    assert outcomes == ["ok"] * 7 + ["402"] * 3
    assert fake.accounts[1].quota - fake.accounts[1].used_quota == 50_000
