"""The grants end to end over their storage protocols (services/token/grants/
storage.py), against an in-memory fake with the same semantics as the SQL: a lookup by hash sees
the code or token with its family and user, the one consuming statement matches only a live code
or token of the calling client with an active user (else it writes nothing), and a minted pair is
stored only by that statement. What the rules must guarantee (RFC 6749 4.1.2, 4.1.3, 6, 10.5;
RFC 7636 4.6; RFC 9700 4.14.2): a failed binding check does not burn the code; a replayed code
revokes what it issued; a concurrent exchange that lost writes nothing; rotation issues a child and
seals the grace response; a concurrent retry in the window gets the same answer; any other reuse
revokes the family; a machine token (RFC 6749 4.4.3) is the client's own and comes without a
refresh token."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from libs.oauth.clients import Client
from libs.oauth.errors import OAuthError
from libs.platform.security import token_hash
from services.token.grants.authorization_code import exchange, s256
from services.token.grants.client_credentials import MachineRequest, machine_token
from services.token.grants.refresh_token import rotate_with, seal_response
from services.token.grants.storage import NewPair, Row
from services.token.id_tokens import Authentication
from services.token.issuance import Minted

PEPPER = b"p" * 32
GRACE = 10.0
REDIRECT = "https://app.example/cb"
VERIFIER = "v" * 43
AUTH_TIME = datetime(2026, 1, 1, tzinfo=UTC)
ACTIVE, DISABLED = 1, 2


def client(client_id: str = "app", method: str = "none") -> Client:
    return Client(1, client_id, "n", "", (REDIRECT,), None, method, False, False)


@dataclass
class State:
    """What the tables hold: codes and refresh tokens by hash, families by id."""

    codes: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    tokens: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    families: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)


class FakeGrantStore:
    """Both CodeGrantStore and RefreshGrantStore, in memory. ``before_statement`` runs between the
    lookup and the consuming statement (what a concurrent request or a revocation does then)."""

    def __init__(self) -> None:
        self.state = State()
        self.now = 1000.0
        self.revoked: list[tuple[uuid.UUID, str]] = []
        self.minted: list[NewPair] = []
        self.before_statement: Callable[[], None] | None = None
        self._ids = 0

    def new_id(self) -> int:
        self._ids += 1
        return self._ids

    def _interleave(self) -> None:
        if self.before_statement is not None:
            hook, self.before_statement = self.before_statement, None
            hook()

    def _active(self, user_id: int) -> bool:
        return bool(self.state.users[user_id]["status"] == ACTIVE)

    async def mint_pair(self, pair: NewPair) -> Minted:
        n = len(self.minted) + 1
        self.minted.append(pair)
        refresh = f"refresh_{pair.family_id}_{n}"
        body = {"access_token": f"at_{n}", "token_type": "Bearer", "refresh_token": refresh, "scope": pair.scope}
        return Minted(body, token_hash(PEPPER, refresh))

    def _store_token(self, refresh_hash: bytes, family_id: uuid.UUID, parent_id: int | None) -> int:
        refresh_id = self.new_id()
        self.state.tokens[refresh_hash] = {
            "id": refresh_id,
            "family_id": family_id,
            "parent_id": parent_id,
            "used_at": None,
            "expired": False,
            "grace_response": None,
        }
        return refresh_id

    # --- authorization codes ---
    async def find_code(self, code_hash: bytes) -> Row | None:
        code = self.state.codes.get(code_hash)
        if code is None:
            return None
        user = self.state.users[code["user_id"]]
        return {**code, "email": user["email"], "user_status": user["status"]}

    async def exchange_code(
        self, code_hash: bytes, client_id: str, family_id: uuid.UUID, refresh_hash: bytes
    ) -> int | None:
        self._interleave()
        code = self.state.codes.get(code_hash)
        if (
            code is None
            or code["client_id"] != client_id
            or code["used_at"] is not None
            or code["expired"]
            or not self._active(code["user_id"])
        ):
            return None
        code.update(used_at=self.now, family_id=family_id)
        self.state.families[family_id] = {
            "client_id": client_id,
            "user_id": code["user_id"],
            "scope": code["scope"],
            "auth_time": code["auth_time"],
            "revoked": False,
        }
        return self._store_token(refresh_hash, family_id, None)

    # --- refresh tokens ---
    async def find_refresh_token(self, refresh_hash: bytes, grace_seconds: float) -> Row | None:
        token = self.state.tokens.get(refresh_hash)
        if token is None:
            return None
        family = self.state.families[token["family_id"]]
        user = self.state.users[family["user_id"]]
        children = [t for t in self.state.tokens.values() if t["parent_id"] == token["id"]]
        return {
            "id": token["id"],
            "family_id": token["family_id"],
            "used": token["used_at"] is not None,
            "grace_response": token["grace_response"],
            "expired": token["expired"],
            "in_grace": token["used_at"] is not None and token["used_at"] > self.now - grace_seconds,
            "child_live": any(c["used_at"] is None and not c["expired"] for c in children),
            "client_id": family["client_id"],
            "family_revoked": family["revoked"],
            "user_id": family["user_id"],
            "scope": family["scope"],
            "auth_time": family["auth_time"],
            "email": user["email"],
            "user_status": user["status"],
        }

    async def rotate_refresh_token(
        self, refresh_id: int, family_id: uuid.UUID, client_id: str, child_hash: bytes, sealed: bytes
    ) -> int | None:
        self._interleave()
        token = next((t for t in self.state.tokens.values() if t["id"] == refresh_id), None)
        if token is None or token["family_id"] != family_id or token["used_at"] is not None or token["expired"]:
            return None
        family = self.state.families[family_id]
        if family["client_id"] != client_id or family["revoked"] or not self._active(family["user_id"]):
            return None
        token.update(used_at=self.now, grace_response=sealed)
        return self._store_token(child_hash, family_id, refresh_id)

    async def revoke_family(self, family_id: uuid.UUID, reason: str) -> None:
        if family_id in self.state.families:  # unknown: nothing to revoke (as revocation.py)
            self.state.families[family_id]["revoked"] = True
        self.revoked.append((family_id, reason))

    # --- arranging ---
    def add_code(self, code: str, **over: Any) -> None:
        self.state.users.setdefault(7, {"email": "u@example.com", "status": ACTIVE})
        self.state.codes[token_hash(PEPPER, code)] = {
            "client_id": "app",
            "user_id": 7,
            "redirect_uri": REDIRECT,
            "scope": "openid profile",
            "code_challenge": s256(VERIFIER),
            "code_challenge_method": "S256",
            "auth_time": AUTH_TIME,
            "nonce": "n-1",
            "used_at": None,
            "family_id": None,
            "expired": False,
            **over,
        }

    def code(self, code: str) -> dict[str, Any]:
        return self.state.codes[token_hash(PEPPER, code)]


async def redeem(store: FakeGrantStore, code: str = "code-1", **over: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"code": code, "redirect_uri": REDIRECT, "code_verifier": VERIFIER} | over
    who = args.pop("client", client())
    return await exchange(store, PEPPER, who, **args)


async def refresh(
    store: FakeGrantStore, token: str, scope: str | None = None, who: Client | None = None
) -> dict[str, Any]:
    return await rotate_with(store, PEPPER, GRACE, who or client(), refresh_token=token, scope=scope)


def refused(caught: pytest.ExceptionInfo[OAuthError], error: str, fragment: str) -> bool:
    return caught.value.error == error and fragment in caught.value.description


# --- authorization_code --------------------------------------------------------------------------
async def test_a_code_starts_a_family_and_issues_the_first_pair() -> None:
    store = FakeGrantStore()
    store.add_code("code-1")
    body = await redeem(store)
    [family_id] = store.state.families
    assert store.state.families[family_id] | {} == {
        "client_id": "app",
        "user_id": 7,
        "scope": "openid profile",
        "auth_time": AUTH_TIME,
        "revoked": False,
    }
    assert store.code("code-1")["used_at"] is not None and store.code("code-1")["family_id"] == family_id
    assert body["scope"] == "openid profile"
    assert store.minted[0].auth == Authentication(auth_time=AUTH_TIME, nonce="n-1", email="u@example.com")
    [stored] = store.state.tokens.values()  # the first refresh token, stored by the exchange
    assert stored["family_id"] == family_id and stored["parent_id"] is None
    assert store.state.tokens[token_hash(PEPPER, str(body["refresh_token"]))] is stored


# name, the code as issued, the request's changes, fragment of the invalid_grant description
NOT_BURNED: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("redirect_uri differs", {}, {"redirect_uri": REDIRECT + "/other"}, "redirect_uri"),
    ("wrong verifier", {}, {"code_verifier": "w" * 43}, "does not match"),
    ("verifier missing", {}, {"code_verifier": None}, "missing"),
    (
        "public client without PKCE",
        {"code_challenge": None, "code_challenge_method": None},
        {"code_verifier": None},
        "PKCE",
    ),
    ("downgrade", {"code_challenge": None, "code_challenge_method": None}, {}, "no code_challenge"),
]


@pytest.mark.parametrize(("name", "code", "change", "fragment"), NOT_BURNED, ids=[c[0] for c in NOT_BURNED])
async def test_a_failed_binding_does_not_burn_the_code(
    name: str, code: dict[str, Any], change: dict[str, Any], fragment: str
) -> None:
    store = FakeGrantStore()
    store.add_code("code-1", **code)
    with pytest.raises(OAuthError) as caught:
        await redeem(store, **change)
    assert refused(caught, "invalid_grant", fragment)
    assert store.code("code-1")["used_at"] is None and store.state.families == {} and store.minted == []
    if code == {}:  # the legitimate request still works
        await redeem(store)


async def test_a_disabled_users_code_is_refused_and_kept() -> None:
    store = FakeGrantStore()
    store.add_code("code-1")
    store.state.users[7]["status"] = DISABLED
    with pytest.raises(OAuthError) as caught:
        await redeem(store)
    assert refused(caught, "invalid_grant", "disabled") and store.code("code-1")["used_at"] is None


async def test_a_replayed_code_revokes_what_it_issued() -> None:
    store = FakeGrantStore()
    store.add_code("code-1")
    await redeem(store)
    [family_id] = store.state.families
    with pytest.raises(OAuthError) as caught:
        await redeem(store)
    assert refused(caught, "invalid_grant", "already used")
    assert store.revoked == [(family_id, "code_replay")]


async def test_an_exchange_that_lost_the_race_writes_nothing_and_counts_as_a_replay() -> None:
    """Between the lookup and the consuming statement another request exchanged the code: this
    one's statement matches nothing, its minted pair is dropped, and the code's family is revoked
    (a code used twice, RFC 6749 4.1.2)."""
    store = FakeGrantStore()
    store.add_code("code-1")
    winner = uuid.uuid4()
    store.before_statement = lambda: store.code("code-1").update(used_at=store.now, family_id=winner)
    with pytest.raises(OAuthError) as caught:
        await redeem(store)
    assert refused(caught, "invalid_grant", "already used")
    assert len(store.minted) == 1 and store.state.tokens == {}  # minted, never stored
    assert store.revoked == [(winner, "code_replay")]


async def test_a_user_disabled_between_lookup_and_exchange_keeps_the_code() -> None:
    store = FakeGrantStore()
    store.add_code("code-1")
    store.before_statement = lambda: store.state.users[7].update(status=DISABLED)
    with pytest.raises(OAuthError) as caught:
        await redeem(store)
    assert refused(caught, "invalid_grant", "disabled")
    assert store.code("code-1")["used_at"] is None and store.state.families == {} and store.revoked == []


# name, how the code is stored (None: not at all), who presents it, fragment
UNCONSUMABLE: list[tuple[str, dict[str, Any] | None, Client, str]] = [
    ("unknown", None, client(), "invalid or was issued to another client"),
    ("another client's", {}, client("other"), "invalid or was issued to another client"),
    ("expired", {"expired": True}, client(), "expired"),
    ("used, family unknown", {"used_at": 1.0}, client(), "already used"),
]


@pytest.mark.parametrize(("name", "code", "who", "fragment"), UNCONSUMABLE, ids=[c[0] for c in UNCONSUMABLE])
async def test_why_a_code_was_not_consumed(name: str, code: dict[str, Any] | None, who: Client, fragment: str) -> None:
    store = FakeGrantStore()
    if code is not None:
        store.add_code("code-1", **code)
    with pytest.raises(OAuthError) as caught:
        await redeem(store, client=who)
    assert refused(caught, "invalid_grant", fragment)
    assert store.revoked == [] and store.minted == [] and store.state.families == {}
    if name == "another client's":  # never consumed: still the owner's
        assert store.code("code-1")["used_at"] is None


# --- refresh_token -------------------------------------------------------------------------------
async def family_with_token(store: FakeGrantStore) -> str:
    store.add_code("code-1")
    return str((await redeem(store))["refresh_token"])


async def test_rotation_issues_a_child_and_seals_the_grace_response() -> None:
    store = FakeGrantStore()
    first = await family_with_token(store)
    body = await refresh(store, first)
    old = store.state.tokens[token_hash(PEPPER, first)]
    assert old["used_at"] is not None and old["grace_response"] is not None
    assert store.state.tokens[token_hash(PEPPER, str(body["refresh_token"]))]["parent_id"] == old["id"]
    assert store.minted[-1].auth == Authentication(auth_time=AUTH_TIME, nonce=None, email="u@example.com")
    assert body["refresh_token"] != first
    assert await refresh(store, str(body["refresh_token"]))  # the child rotates in turn


SCOPES = [
    ("omitted keeps the grant", None, "openid profile"),
    ("narrowed", "profile", "profile"),
]


@pytest.mark.parametrize(("name", "requested", "expected"), SCOPES, ids=[c[0] for c in SCOPES])
async def test_the_access_token_scope(name: str, requested: str | None, expected: str) -> None:
    store = FakeGrantStore()
    body = await refresh(store, await family_with_token(store), scope=requested)
    assert body["scope"] == expected
    [family] = store.state.families.values()
    assert family["scope"] == "openid profile"  # the grant itself stays


# name, arrange (store, token) before refreshing, error, fragment
KEPT: list[tuple[str, str, str, str]] = [
    ("wider scope", "scope", "invalid_scope", "exceeds"),
    ("disabled user", "disable", "invalid_grant", "disabled"),
]


@pytest.mark.parametrize(("name", "arrange", "error", "fragment"), KEPT, ids=[c[0] for c in KEPT])
async def test_a_refused_rotation_keeps_the_token(name: str, arrange: str, error: str, fragment: str) -> None:
    store = FakeGrantStore()
    token = await family_with_token(store)
    if arrange == "disable":
        store.state.users[7]["status"] = DISABLED
    with pytest.raises(OAuthError) as caught:
        await refresh(store, token, scope="openid profile email" if arrange == "scope" else None)
    assert refused(caught, error, fragment)
    assert store.state.tokens[token_hash(PEPPER, token)]["used_at"] is None and store.revoked == []


async def test_a_retry_within_the_grace_window_gets_the_same_answer() -> None:
    store = FakeGrantStore()
    token = await family_with_token(store)
    first = await refresh(store, token)
    store.now += GRACE - 1
    assert await refresh(store, token) == first
    assert store.revoked == []


async def test_a_rotation_that_lost_the_race_answers_the_winners_pair() -> None:
    """Two tabs refresh at once: between this one's lookup and its statement the other rotated the
    token. This statement writes nothing; the winner's sealed response is answered (grace)."""
    store = FakeGrantStore()
    token = await family_with_token(store)
    first = await refresh(store, token)  # the winner, already done
    row = store.state.tokens[token_hash(PEPPER, token)]
    sealed, used_at = row["grace_response"], row["used_at"]
    row.update(used_at=None, grace_response=None)  # as the loser saw it at its lookup
    children_before = len(store.state.tokens)
    store.before_statement = lambda: row.update(used_at=used_at, grace_response=sealed)
    assert await refresh(store, token) == first
    assert len(store.state.tokens) == children_before and store.revoked == []


# name, what happens between the rotation and the replay, fragment
REUSE: list[tuple[str, str]] = [
    ("after the window", "wait"),
    ("the child was used already (an older ancestor)", "rotate child"),
    ("the sealed response does not open", "tamper"),
]


@pytest.mark.parametrize(("name", "between"), REUSE, ids=[c[0] for c in REUSE])
async def test_reuse_revokes_the_family(name: str, between: str) -> None:
    store = FakeGrantStore()
    token = await family_with_token(store)
    child = await refresh(store, token)
    old = store.state.tokens[token_hash(PEPPER, token)]
    if between == "wait":
        store.now += GRACE + 1
    elif between == "rotate child":
        await refresh(store, str(child["refresh_token"]))
    else:
        old["grace_response"] = seal_response(PEPPER, "refresh_someone_else", old["id"], {"x": 1})
    with pytest.raises(OAuthError) as caught:
        await refresh(store, token)
    assert refused(caught, "invalid_grant", "already used")
    [family_id] = store.state.families
    assert store.revoked == [(family_id, "refresh_reuse")]
    with pytest.raises(OAuthError) as caught:  # the live token died with its family
        await refresh(store, str(child["refresh_token"]))
    assert caught.value.error == "invalid_grant"


async def test_a_retry_in_the_window_for_a_since_disabled_user_is_refused() -> None:
    store = FakeGrantStore()
    token = await family_with_token(store)
    await refresh(store, token)
    store.state.users[7]["status"] = DISABLED
    with pytest.raises(OAuthError) as caught:
        await refresh(store, token)
    assert refused(caught, "invalid_grant", "disabled") and store.revoked == []


# name, arrange, who presents it, fragment
INVALID: list[tuple[str, str, Client, str]] = [
    ("unknown", "none", client(), "another client"),
    ("another client's", "issue", client("other"), "another client"),
    ("expired", "expire", client(), "expired"),
    ("family revoked", "revoke", client(), "revoked"),
]


@pytest.mark.parametrize(("name", "arrange", "who", "fragment"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_refresh_tokens(name: str, arrange: str, who: Client, fragment: str) -> None:
    store = FakeGrantStore()
    token = "refresh_unknown" if arrange == "none" else await family_with_token(store)
    if arrange == "expire":
        store.state.tokens[token_hash(PEPPER, token)]["expired"] = True
    if arrange == "revoke":
        await store.revoke_family(next(iter(store.state.families)), "test")
    revoked_before = list(store.revoked)
    with pytest.raises(OAuthError) as caught:
        await refresh(store, token, who=who)
    assert refused(caught, "invalid_grant", fragment)
    assert store.revoked == revoked_before  # nothing more revoked


# --- client_credentials --------------------------------------------------------------------------
async def test_a_machine_token_is_the_clients_own_and_has_no_refresh_token() -> None:
    minted: list[dict[str, str]] = []

    async def minter(*, sub: str, client_id: str, scope: str) -> str:
        minted.append({"sub": sub, "client_id": client_id, "scope": scope})
        return "at_machine"

    body = await machine_token(minter, 900, client("svc", "client_secret_basic"), MachineRequest("quota:read"))
    assert body == {"access_token": "at_machine", "token_type": "Bearer", "expires_in": 900, "scope": "quota:read"}
    assert minted == [{"sub": "svc", "client_id": "svc", "scope": "quota:read"}]  # RFC 9068 2.2: sub is the client
