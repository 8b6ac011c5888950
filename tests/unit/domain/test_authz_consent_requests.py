"""A request waiting on the consent page (services/authz/consent.py): kept under a random id for
the user it was shown to, answered only by that user, only once. Against an in-memory fake of the
``ConsentRequests`` store (a JSON round trip, as in Redis)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from services.authz.consent import MAX_REQUEST_ID, keep, take_from
from services.authz.responses import ErrorPage
from tests.unit.domain.test_authz_decision import REQ as DECISION_REQ

# A request with every field set, so the round trip through JSON is seen whole.
REQ = replace(
    DECISION_REQ,
    client_description="An app",
    code_challenge="c" * 43,
    code_challenge_method="S256",
    nonce="n",
    prompt=("consent",),
    max_age=300,
    client_verified=True,
)


class FakeConsentRequests:
    def __init__(self, lose_races: bool = False) -> None:
        self.rows: dict[str, bytes] = {}
        self.lose_races = lose_races  # another submit deletes it between our read and our delete

    async def put(self, request_id: str, user_id: int, request: dict[str, Any]) -> None:
        self.rows[request_id] = orjson.dumps({"user_id": user_id, "request": request})

    async def get(self, request_id: str) -> tuple[int, dict[str, Any]] | None:
        raw = self.rows.get(request_id)
        if raw is None:
            return None
        data = orjson.loads(raw)
        return data["user_id"], data["request"]

    async def remove(self, request_id: str) -> bool:
        if self.lose_races:
            self.rows.pop(request_id, None)
            return False
        return self.rows.pop(request_id, None) is not None


async def test_kept_and_taken_back_whole() -> None:
    store = FakeConsentRequests()
    request_id = await keep(store, REQ, 7)
    assert len(request_id) >= 43  # 256 bits
    assert await take_from(store, request_id, 7) == REQ
    assert store.rows == {}


async def test_each_request_gets_its_own_id() -> None:
    store = FakeConsentRequests()
    assert len({await keep(store, REQ, 7) for _ in range(20)}) == 20


# name, id presented (None: the kept one), user answering, store, expected status and message key
REFUSED: list[tuple[str, str | None, int, FakeConsentRequests, int, str]] = [
    ("another user", None, 8, FakeConsentRequests(), 403, "error.request_not_yours"),
    ("unknown id", "never-kept", 7, FakeConsentRequests(), 400, "error.request_expired"),
    ("empty id", "", 7, FakeConsentRequests(), 400, "error.request_expired"),
    ("id too long", "x" * (MAX_REQUEST_ID + 1), 7, FakeConsentRequests(), 400, "error.request_expired"),
    ("another submit won the race", None, 7, FakeConsentRequests(lose_races=True), 400, "error.request_expired"),
]


@pytest.mark.parametrize(
    ("name", "presented", "user_id", "store", "status", "message_key"), REFUSED, ids=[c[0] for c in REFUSED]
)
async def test_refused(
    name: str, presented: str | None, user_id: int, store: FakeConsentRequests, status: int, message_key: str
) -> None:
    request_id = await keep(store, REQ, 7)
    with pytest.raises(ErrorPage) as caught:
        await take_from(store, request_id if presented is None else presented, user_id)
    assert (caught.value.status, caught.value.key) == (status, message_key)


async def test_another_users_attempt_does_not_consume_it() -> None:
    store = FakeConsentRequests()
    request_id = await keep(store, REQ, 7)
    with pytest.raises(ErrorPage):
        await take_from(store, request_id, 8)
    assert await take_from(store, request_id, 7) == REQ


async def test_single_use() -> None:
    store = FakeConsentRequests()
    request_id = await keep(store, REQ, 7)
    await take_from(store, request_id, 7)
    with pytest.raises(ErrorPage) as caught:
        await take_from(store, request_id, 7)
    assert caught.value.key == "error.request_expired"
