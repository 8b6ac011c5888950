"""Login freshness on the server (services/authz/loginrequest.py; OIDC Core 3.1.2.1 prompt=login,
max_age): a pending login request counts only when this session's password login marked it, after
it was stored, for exactly the same parameters, and only once. Against an in-memory fake of the
``PendingLogins`` store (same semantics as the Redis hash and its Lua mark)."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlencode

import pytest

from libs.oauth.sessions import Session
from services.authz import loginrequest
from services.authz.loginrequest import PARAM, PendingLogin, record_login, start, take_fresh

NOW = 1_700_000_000
PAIRS = [("client_id", "app"), ("redirect_uri", "https://app.example/cb"), ("prompt", "login"), ("state", "s")]
ME = Session(key="session:mine", user_id=7, auth_time=NOW + 5)


class FakePendingLogins:
    def __init__(self) -> None:
        self.rows: dict[str, PendingLogin] = {}

    async def put(self, request_id: str, query: bytes, created: int) -> None:
        self.rows[request_id] = PendingLogin(query, created)

    async def mark(self, request_id: str, session_key: str, login_time: int) -> None:
        row = self.rows.get(request_id)
        if row is not None and row.session is None:  # once, only while it exists
            self.rows[request_id] = replace(row, session=session_key.encode(), login_time=login_time)

    async def take(self, request_id: str) -> PendingLogin | None:
        return self.rows.pop(request_id, None)


def resume_url(request_id: str, pairs: list[tuple[str, str]] = PAIRS) -> str:
    return loginrequest.AUTHORIZE_PATH + "?" + urlencode([*pairs, (PARAM, request_id)])


async def pending(store: FakePendingLogins) -> str:
    return await start(store, [*PAIRS, (PARAM, "an-older-pointer")], NOW)  # the old pointer is not stored


# name, who logs in (None: nobody), the pairs presented back at authorize (None: PAIRS), expected
CASES: list[tuple[str, Session | None, list[tuple[str, str]] | None, int | None]] = [
    ("this session's login, same request", ME, None, ME.auth_time),
    ("parameters in another order", ME, list(reversed(PAIRS)), ME.auth_time),
    ("nobody logged in for it", None, None, None),
    ("another session's login", replace(ME, key="session:other"), None, None),
    ("a parameter changed", ME, [*PAIRS[:-1], ("state", "other")], None),
    ("a parameter added", ME, [*PAIRS, ("max_age", "0")], None),
    ("a login older than the request", replace(ME, auth_time=NOW - 1), None, None),
    ("a login in the same second", replace(ME, auth_time=NOW), None, NOW),
]


@pytest.mark.parametrize(("name", "login", "presented", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_fresh_login(
    name: str, login: Session | None, presented: list[tuple[str, str]] | None, expected: int | None
) -> None:
    store = FakePendingLogins()
    request_id = await pending(store)
    if login is not None:
        await record_login(store, resume_url(request_id), login)
    pairs = [*(presented or PAIRS), (PARAM, request_id)]
    assert await take_fresh(store, pairs, ME) == expected
    assert request_id not in store.rows  # consumed, whatever the answer


POINTERS = [
    ("no pointer", []),
    ("two pointers", [(PARAM, "a"), (PARAM, "b")]),
    ("empty pointer", [(PARAM, "")]),
    ("pointer too long", [(PARAM, "x" * (loginrequest.MAX_ID + 1))]),
    ("unknown pointer", [(PARAM, "never-stored")]),
]


@pytest.mark.parametrize(("name", "extra"), POINTERS, ids=[c[0] for c in POINTERS])
async def test_a_bad_pointer_is_no_fresh_login(name: str, extra: list[tuple[str, str]]) -> None:
    store = FakePendingLogins()
    request_id = await pending(store)
    await record_login(store, resume_url(request_id), ME)
    assert await take_fresh(store, [*PAIRS, *extra], ME) is None
    assert request_id in store.rows  # a malformed or foreign pointer consumes nothing


async def test_single_use() -> None:
    store = FakePendingLogins()
    request_id = await pending(store)
    await record_login(store, resume_url(request_id), ME)
    pairs = [*PAIRS, (PARAM, request_id)]
    assert await take_fresh(store, pairs, ME) == ME.auth_time
    assert await take_fresh(store, pairs, ME) is None


async def test_the_first_login_marks_it_a_later_one_does_not_take_it_over() -> None:
    store = FakePendingLogins()
    request_id = await pending(store)
    await record_login(store, resume_url(request_id), ME)
    await record_login(store, resume_url(request_id), replace(ME, key="session:attacker", auth_time=NOW + 9))
    assert await take_fresh(store, [*PAIRS, (PARAM, request_id)], ME) == ME.auth_time


NEXT_URLS = [
    ("another path", lambda rid: "/user?" + urlencode([(PARAM, rid)])),
    ("no pointer", lambda rid: loginrequest.AUTHORIZE_PATH + "?" + urlencode(PAIRS)),
    ("two pointers", lambda rid: loginrequest.AUTHORIZE_PATH + "?" + urlencode([(PARAM, rid), (PARAM, rid)])),
]


@pytest.mark.parametrize(("name", "next_url"), NEXT_URLS, ids=[c[0] for c in NEXT_URLS])
async def test_a_login_marks_only_the_request_its_next_url_resumes(name: str, next_url: object) -> None:
    store = FakePendingLogins()
    request_id = await pending(store)
    await record_login(store, next_url(request_id), ME)  # type: ignore[operator]
    assert store.rows[request_id].session is None


async def test_a_login_for_an_expired_request_creates_nothing() -> None:
    store = FakePendingLogins()
    await record_login(store, resume_url("gone"), ME)
    assert store.rows == {}


def test_the_rule_alone() -> None:
    stored = PendingLogin(loginrequest._canonical(PAIRS), NOW, ME.key.encode(), NOW + 1)
    assert loginrequest.fresh_login_time(stored, PAIRS, ME) == NOW + 1
    assert loginrequest.fresh_login_time(None, PAIRS, ME) is None
    assert loginrequest.fresh_login_time(replace(stored, session=None, login_time=None), PAIRS, ME) is None
