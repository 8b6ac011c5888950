"""The login rule (services/authz/login.authenticate) against in-memory fakes of the users, the
throttle and the password check: outcomes, and what the throttle records."""

from __future__ import annotations

import pytest

from libs.oauth.vocabulary import UserStatus
from libs.platform.config import Settings
from services.authz.identity import LoginUser
from services.authz.login import MAX_PASSWORD, LoginDeps, authenticate
from services.authz.ratelimit import Attempt, Blocked

SETTINGS = Settings.model_construct(redis_prefix="t:")
ALICE = LoginUser(id=1, username="alice", status=UserStatus.ACTIVE, password_hash="h-alice")
BOB = LoginUser(id=2, username="bob", status=UserStatus.DISABLED, password_hash="h-bob")
LONG = LoginUser(id=3, username="long", status=UserStatus.ACTIVE, password_hash="h-long")
PASSWORDS = {"h-alice": "right", "h-bob": "right", "h-long": "y" * MAX_PASSWORD}


class Fakes:
    def __init__(self, blocked: bool = False) -> None:
        self.blocked = blocked
        self.log: list[tuple[str, str]] = []
        self.verified = 0

    async def users(self, identifier: str) -> LoginUser | None:
        return {"alice": ALICE, "bob": BOB, "long": LONG}.get(identifier.lower())

    async def verify(self, password_hash: str | None, password: str) -> bool:
        self.verified += 1  # also for unknown accounts: the same cost
        return password_hash is not None and PASSWORDS.get(password_hash) == password

    async def check(self, attempt: Attempt) -> Blocked | None:
        return Blocked(retry_after=30) if self.blocked else None

    async def record_failure(self, attempt: Attempt) -> None:
        self.log.append(("failure", attempt.account))

    async def record_success(self, attempt: Attempt) -> None:
        self.log.append(("success", attempt.account))

    def deps(self) -> LoginDeps:
        return LoginDeps(self.users, self, self.verify, SETTINGS)


CASES = [
    # name, identifier, password, blocked, outcome, user_id, throttle log, password checked
    ("no identifier", " ", "right", False, "missing", None, [], 0),
    ("no password", "alice", "", False, "missing", None, [], 0),
    ("ok", "alice", "right", False, "ok", 1, [("success", "t:loginfail:acct:u1")], 1),
    ("full-width identifier", "ａｌｉｃｅ", "right", False, "ok", 1, [("success", "t:loginfail:acct:u1")], 1),
    ("wrong password", "alice", "wrong", False, "failed", None, [("failure", "t:loginfail:acct:u1")], 1),
    ("unknown account", "carol", "right", False, "failed", None, [("failure", "t:loginfail:acct:n")], 1),
    # Only the first MAX_PASSWORD characters are hashed, but a longer password never logs in.
    ("password too long", "long", "y" * (MAX_PASSWORD + 1), False, "failed", None, [("failure", "t:l")], 1),
    ("password at the limit", "long", "y" * MAX_PASSWORD, False, "ok", 3, [("success", "t:l")], 1),
    ("disabled account", "bob", "right", False, "disabled", None, [], 1),
    ("throttled", "alice", "right", True, "blocked", None, [], 0),
]


@pytest.mark.parametrize(
    ("name", "identifier", "password", "blocked", "outcome", "user_id", "log", "verified"),
    CASES,
    ids=[c[0] for c in CASES],
)
async def test_login_rule(
    name: str,
    identifier: str,
    password: str,
    blocked: bool,
    outcome: str,
    user_id: int | None,
    log: list[tuple[str, str]],
    verified: int,
) -> None:
    fakes = Fakes(blocked)
    result = await authenticate(fakes.deps(), identifier, password, "203.0.113.9")
    assert (result.outcome, result.user_id) == (outcome, user_id)
    assert [(kind, account[: len(prefix)]) for (kind, account), (_, prefix) in zip(fakes.log, log, strict=True)] == log
    assert fakes.verified == verified
    if outcome == "blocked":
        assert result.retry_after == 30
