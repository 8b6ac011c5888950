"""The authorize decision (services/authz/decision.py): login freshness and consent, against an
in-memory fake of the consent records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from services.authz.authrequest import AuthRequest
from services.authz.decision import OneClickPolicy, Step, consent_step, decide, login_step, one_click_allowed

NOW = 1_000_000
REQ = AuthRequest(
    client_id="app",
    client_name="App",
    client_description="",
    client_auto_authorize=True,
    redirect_uri="https://app.example/cb",
    scopes=("openid", "profile"),
    state="s",
    code_challenge=None,
    code_challenge_method=None,
    nonce=None,
    prompt=(),
    max_age=None,
    auto_authorize=False,
    client_verified=False,
)
STRICT = OneClickPolicy(enabled=True, unverified_apps=False)


class FakeRecords:
    def __init__(self, granted: dict[tuple[int, str], set[str]] | None = None) -> None:
        self.granted = granted or {}
        self.reads = 0

    async def covers(self, user_id: int, client_id: str, scopes: Sequence[str]) -> bool:
        self.reads += 1
        return set(scopes) <= self.granted.get((user_id, client_id), set())


LOGIN_CASES: list[tuple[str, dict[str, object], int | None, bool, Step | None]] = [
    # name, request changes, auth_time, fresh, expected
    ("nobody signed in", {}, None, False, "login"),
    ("nobody signed in, prompt=none", {"prompt": ("none",)}, None, False, "login_required"),
    ("signed in", {}, NOW - 10_000, False, None),
    ("prompt=login", {"prompt": ("login",)}, NOW - 1, False, "login"),
    ("prompt=login satisfied by this request's login", {"prompt": ("login",)}, NOW - 1, True, None),
    ("max_age exceeded", {"max_age": 60}, NOW - 61, False, "login"),
    ("max_age exactly met", {"max_age": 60}, NOW - 60, False, None),
    ("max_age=0 always stale", {"max_age": 0}, NOW - 1, False, "login"),
    ("max_age exceeded but fresh", {"max_age": 0}, NOW - 1, True, None),
    ("max_age exceeded, prompt=none", {"max_age": 60, "prompt": ("none",)}, NOW - 61, False, "login_required"),
]


@pytest.mark.parametrize(
    ("name", "changes", "auth_time", "fresh", "expected"), LOGIN_CASES, ids=[c[0] for c in LOGIN_CASES]
)
def test_login_freshness(
    name: str, changes: dict[str, object], auth_time: int | None, fresh: bool, expected: Step | None
) -> None:
    assert login_step(replace(REQ, **changes), auth_time, fresh, NOW) == expected  # type: ignore[arg-type]


ONE_CLICK: dict[str, object] = {"auto_authorize": True, "client_verified": True}
CONSENT_CASES: list[tuple[str, dict[str, object], OneClickPolicy, bool, Step]] = [
    # name, request changes, policy, covered by a consent record, expected
    ("first time", {}, STRICT, False, "consent"),
    ("first time, prompt=none", {"prompt": ("none",)}, STRICT, False, "consent_required"),
    ("covering record", {}, STRICT, True, "issue"),
    ("covering record, prompt=none", {"prompt": ("none",)}, STRICT, True, "issue"),
    ("covering record, prompt=consent", {"prompt": ("consent",)}, STRICT, True, "consent"),
    ("one click, verified app", ONE_CLICK, STRICT, False, "issue"),
    ("one click, prompt=consent", {**ONE_CLICK, "prompt": ("consent",)}, STRICT, False, "consent"),
    ("one click, unverified app", {"auto_authorize": True}, STRICT, False, "consent"),
    (
        "one click, unverified app, permissive setting",
        {"auto_authorize": True},
        OneClickPolicy(enabled=True, unverified_apps=True),
        False,
        "issue",
    ),
    ("one click disabled globally", ONE_CLICK, OneClickPolicy(enabled=False, unverified_apps=True), False, "consent"),
    ("one click disabled for the app", {**ONE_CLICK, "client_auto_authorize": False}, STRICT, False, "consent"),
    ("verified app without auto_authorize", {"client_verified": True}, STRICT, False, "consent"),
]


@pytest.mark.parametrize(
    ("name", "changes", "policy", "covered", "expected"), CONSENT_CASES, ids=[c[0] for c in CONSENT_CASES]
)
def test_consent_decision(
    name: str, changes: dict[str, object], policy: OneClickPolicy, covered: bool, expected: Step
) -> None:
    assert consent_step(policy, replace(REQ, **changes), covered) == expected  # type: ignore[arg-type]


async def test_decide_reads_the_record_only_when_it_matters() -> None:
    records = FakeRecords({(7, "app"): {"openid", "profile", "email"}})
    assert await decide(records, STRICT, REQ, (7, NOW), False, NOW) == "issue"
    assert records.reads == 1
    assert await decide(records, STRICT, replace(REQ, **ONE_CLICK), (7, NOW), False, NOW) == "issue"  # type: ignore[arg-type]
    assert await decide(records, STRICT, replace(REQ, prompt=("consent",)), (7, NOW), False, NOW) == "consent"
    assert await decide(records, STRICT, REQ, None, False, NOW) == "login"
    assert records.reads == 1


async def test_decide_narrower_record_asks_again() -> None:
    records = FakeRecords({(7, "app"): {"openid"}})
    assert await decide(records, STRICT, REQ, (7, NOW), False, NOW) == "consent"
    assert await decide(records, STRICT, REQ, (8, NOW), False, NOW) == "consent"
    assert await decide(records, STRICT, replace(REQ, prompt=("none",)), (7, NOW), False, NOW) == "consent_required"


def test_policy_from_settings_maps_both_switches() -> None:
    from libs.platform.config import Settings

    s = Settings.model_construct(auto_authorize_enabled=False, auto_authorize_unverified_apps=True)
    assert OneClickPolicy.from_settings(s) == OneClickPolicy(enabled=False, unverified_apps=True)
    assert not one_click_allowed(OneClickPolicy.from_settings(s), replace(REQ, **ONE_CLICK))  # type: ignore[arg-type]
