"""The typed events (libs/oauth/events/types.py) against the wire format of docs/events.md, which
external consumers (examples/event_consumer.py) depend on: every type round-trips through the
message body, its data keys are exactly the documented ones, and invalid payloads are refused."""

from __future__ import annotations

import dataclasses
import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from libs.oauth.events import types as T

DOC = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text(encoding="utf-8")

# One example of each type, and its data exactly as it goes on the wire.
EXAMPLES: list[tuple[T.EventData, dict[str, Any]]] = [
    (
        T.AuthorizationRevoked(user_id=7, client_id="app_1", family_ids=("f1", "f2"), reason="user_revoked"),
        {"user_id": 7, "client_id": "app_1", "family_ids": ["f1", "f2"], "reason": "user_revoked"},
    ),
    (
        T.AuthorizationRevoked(user_id=None, client_id="app_1", family_ids=(), reason="client_deleted"),
        {"user_id": None, "client_id": "app_1", "family_ids": [], "reason": "client_deleted"},
    ),
    (
        T.TokenRevoked(
            family_id="f1", jti=None, token_type="refresh_token", reason="code_replay", client_id="c", user_id=7
        ),
        {
            "family_id": "f1",
            "jti": None,
            "token_type": "refresh_token",
            "reason": "code_replay",
            "client_id": "c",
            "user_id": 7,
        },
    ),
    (
        T.TokenRevoked(
            family_id=None,
            jti="j1",
            token_type="access_token",
            reason="revoked_by_client",
            client_id="c",
            user_id=None,
            expires_at=1767225600,
        ),
        {
            "family_id": None,
            "jti": "j1",
            "token_type": "access_token",
            "reason": "revoked_by_client",
            "client_id": "c",
            "user_id": None,
            "expires_at": 1767225600,
        },
    ),
    (
        T.ClientUpdated(app_id=3, client_id="c", change="created"),
        {"app_id": 3, "client_id": "c", "change": "created"},
    ),
    (
        T.ClientDeleted(app_id=3, client_id="c", family_ids=("f1",)),
        {"app_id": 3, "client_id": "c", "family_ids": ["f1"]},
    ),
    (T.ClientSecretRotated(app_id=3, client_id="c"), {"app_id": 3, "client_id": "c"}),
    (
        T.UserUpdated(user_id=7, fields=("password", "status")),
        {"user_id": 7, "fields": ["password", "status"]},
    ),
    (
        T.UserDisabled(user_id=7, family_ids=("f1",), was_active=True),
        {"user_id": 7, "family_ids": ["f1"], "was_active": True},
    ),
    (
        T.QuotaChanged(user_id=7, delta=500, quota=1500, used_quota=0, reason="topup"),
        {"user_id": 7, "delta": 500, "quota": 1500, "used_quota": 0, "reason": "topup"},
    ),
    (
        T.QuotaChanged(user_id=42, delta=-30, quota=1000, used_quota=990, reason="consume", idempotency_key="order-17"),
        {
            "user_id": 42,
            "delta": -30,
            "quota": 1000,
            "used_quota": 990,
            "reason": "consume",
            "idempotency_key": "order-17",
        },
    ),
]


def test_every_type_has_an_example() -> None:
    assert {type(e) for e, _ in EXAMPLES} == set(T.EVENT_CLASSES.values())


@pytest.mark.parametrize(("event", "wire"), EXAMPLES, ids=[f"{e.type}-{i}" for i, (e, _) in enumerate(EXAMPLES)])
def test_round_trip_through_the_message(event: T.EventData, wire: dict[str, Any]) -> None:
    assert event.to_data() == wire
    message = T.Event(str(uuid.uuid4()), event.type, "2026-05-01T08:30:12.345678Z", event.to_data())
    body = orjson.loads(message.body())
    assert set(body) == {"id", "type", "occurred_at", "data"} and body["type"] == event.type
    assert body["data"] == wire
    received = T.Event.from_body(message.body())
    assert T.decode(received) == event


def _documented_row(event_type: str) -> str:
    rows = [line for line in DOC.splitlines() if line.startswith(f"| `{event_type}` |")]
    assert len(rows) == 1, f"docs/events.md has no row for {event_type}"
    return rows[0]


@pytest.mark.parametrize("cls", list(T.EVENT_CLASSES.values()), ids=list(T.EVENT_CLASSES))
def test_docs_document_each_type_and_its_fields(cls: type[T.EventData]) -> None:
    data_column = _documented_row(cls.type).split(" | ")[2]
    documented = set(re.findall(r"`([a-z_]+)`", data_column))
    fields = {f.name for f in dataclasses.fields(cls)}
    assert fields <= documented, f"{cls.type}: {fields - documented} not in docs/events.md"


def test_docs_list_no_type_the_code_lacks() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", DOC, flags=re.M))
    assert documented == set(T.EVENT_TYPES)


@pytest.mark.parametrize(
    ("event_type", "data", "why"),
    [
        ("quota.changed", {"user_id": 1, "quota": 1, "used_quota": 0, "reason": "x"}, "delta is missing"),
        ("quota.changed", {"user_id": "1", "delta": 1, "quota": 1, "used_quota": 0, "reason": "x"}, "wrong type"),
        ("user.disabled", {"user_id": True, "family_ids": [], "was_active": True}, "wrong type"),
        ("user.disabled", {"user_id": 1, "family_ids": [1], "was_active": True}, "wrong type"),
        ("client.updated", {"app_id": 1, "client_id": None, "change": "created"}, "wrong type"),
        ("no.such_type", {}, "unknown event type"),
    ],
)
def test_invalid_payloads_are_refused(event_type: str, data: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        T.decode(T.Event(str(uuid.uuid4()), event_type, "2026-05-01T08:30:12.345678Z", data))


def test_extra_keys_from_newer_publishers_are_ignored() -> None:
    data = {"app_id": 1, "client_id": "c", "new_field": 1}
    assert T.ClientSecretRotated.from_data(data) == T.ClientSecretRotated(app_id=1, client_id="c")


async def test_the_bus_decodes_once_and_drops_invalid_payloads(caplog: pytest.LogCaptureFixture) -> None:
    from libs.oauth.events.bus import _dispatcher

    got: list[T.EventData] = []

    async def first(event: T.UserUpdated) -> None:
        got.append(event)

    async def second(event: T.UserUpdated) -> None:
        got.append(event)

    dispatch = _dispatcher(T.UserUpdated, (first, second))
    good = T.UserUpdated(user_id=7, fields=("status",))
    await dispatch(T.Event(str(uuid.uuid4()), good.type, "2026-05-01T08:30:12.345678Z", good.to_data()))
    assert got == [good, good] and got[0] is got[1]  # one object for every handler
    with caplog.at_level("ERROR", logger="oauth.events"):
        await dispatch(T.Event(str(uuid.uuid4()), "user.updated", "2026-05-01T08:30:12.345678Z", {"user_id": "x"}))
    assert len(got) == 2 and "dropping an invalid event" in caplog.text
