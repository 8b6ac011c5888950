"""Grant rules of the token service, table-driven, no I/O: PKCE (RFC 7636 4.6, S256 only, no
downgrade per RFC 9700 2.1.1), code bindings (RFC 6749 4.1.3), scope narrowing on refresh
(RFC 6749 6), the refresh grace/reuse decision (RFC 9700 4.14.2), machine scopes (RFC 6749 4.4),
and the grant table."""

from __future__ import annotations

import dataclasses

import pytest

from libs.oauth.clients import Client
from libs.oauth.errors import OAuthError
from services.token.grants import GRANTS
from services.token.grants.authorization_code import ConsumedCode, check_bindings, s256, verify_pkce
from services.token.grants.client_credentials import MachineRequest
from services.token.grants.refresh_token import RefreshRequest, Unconsumed, decide_unconsumed, narrowed_scope

VERIFIER = "v" * 43
CHALLENGE = s256(VERIFIER)


def client(method: str = "client_secret_post", internal: bool = False, client_id: str = "app") -> Client:
    return Client(1, client_id, "n", "", ("https://app.example/cb",), b"h", method, False, internal)


def test_s256_matches_rfc7636_appendix_b() -> None:
    assert s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


PKCE_OK = [
    ("S256 matches", CHALLENGE, "S256", VERIFIER, False),
    ("method absent read as S256", CHALLENGE, None, VERIFIER, True),
    ("confidential without PKCE", None, None, None, False),
]
PKCE_FAIL = [
    ("public without PKCE", None, None, None, True, "Public clients must use PKCE"),
    ("downgrade: verifier without challenge", None, None, VERIFIER, False, "no code_challenge"),
    ("plain method", VERIFIER, "plain", VERIFIER, False, "Unsupported"),
    ("plain verifier against S256", VERIFIER, "S256", VERIFIER, False, "does not match"),
    ("verifier missing", CHALLENGE, "S256", None, True, "missing"),
    ("verifier too short", s256("v" * 42), "S256", "v" * 42, True, "43-128"),
    ("verifier too long", s256("v" * 129), "S256", "v" * 129, True, "43-128"),
    ("verifier bad chars", s256("v" * 42 + "!"), "S256", "v" * 42 + "!", True, "43-128"),
    ("wrong verifier", CHALLENGE, "S256", "w" * 43, True, "does not match"),
]


@pytest.mark.parametrize(("case", "challenge", "method", "verifier", "public"), PKCE_OK, ids=[c[0] for c in PKCE_OK])
def test_pkce_accepted(
    case: str, challenge: str | None, method: str | None, verifier: str | None, public: bool
) -> None:
    verify_pkce(challenge, method, verifier, public_client=public)


@pytest.mark.parametrize(
    ("case", "challenge", "method", "verifier", "public", "fragment"), PKCE_FAIL, ids=[c[0] for c in PKCE_FAIL]
)
def test_pkce_refused(
    case: str, challenge: str | None, method: str | None, verifier: str | None, public: bool, fragment: str
) -> None:
    with pytest.raises(OAuthError) as caught:
        verify_pkce(challenge, method, verifier, public_client=public)
    assert caught.value.error == "invalid_grant"
    assert fragment in caught.value.description


BOUND = ConsumedCode("https://app.example/cb", CHALLENGE, "S256", user_status=1)
BINDINGS = [
    ("all bound", BOUND, "https://app.example/cb", VERIFIER, None),
    ("redirect_uri differs", BOUND, "https://app.example/cb/", VERIFIER, "redirect_uri"),
    ("redirect_uri case", BOUND, "https://APP.example/cb", VERIFIER, "redirect_uri"),
    ("bad verifier", BOUND, "https://app.example/cb", "x" * 43, "code_verifier"),
    ("disabled user", dataclasses.replace(BOUND, user_status=2), "https://app.example/cb", VERIFIER, "disabled"),
]


@pytest.mark.parametrize(
    ("case", "code", "redirect_uri", "verifier", "fragment"), BINDINGS, ids=[c[0] for c in BINDINGS]
)
def test_code_bindings(case: str, code: ConsumedCode, redirect_uri: str, verifier: str, fragment: str | None) -> None:
    if fragment is None:
        check_bindings(code, client("none"), redirect_uri, verifier)
        return
    with pytest.raises(OAuthError) as caught:
        check_bindings(code, client("none"), redirect_uri, verifier)
    assert caught.value.error == "invalid_grant" and fragment in caught.value.description


SCOPES = [
    ("omitted keeps the grant", "openid profile email", None, "openid profile email"),
    ("empty keeps the grant", "openid profile email", "  ", "openid profile email"),
    ("narrowed, canonical order", "openid profile email", "email openid", "openid email"),
    ("same", "openid profile", "profile openid", "openid profile"),
    ("wider", "openid", "openid profile", None),
    ("unknown", "openid", "admin", None),
]


@pytest.mark.parametrize(("case", "granted", "requested", "expected"), SCOPES, ids=[c[0] for c in SCOPES])
def test_scope_narrowing(case: str, granted: str, requested: str | None, expected: str | None) -> None:
    if expected is not None:
        assert narrowed_scope(granted, requested) == expected
        return
    with pytest.raises(OAuthError) as caught:
        narrowed_scope(granted, requested)
    assert caught.value.error == "invalid_scope"


GRACE = Unconsumed("app", False, True, False, True, True, True, True)
DECISIONS = [
    ("retry within the window", None, "grace"),
    ("outside the window", {"in_grace": False}, "reuse"),
    ("older ancestor (child used)", {"child_live": False}, "reuse"),
    ("no sealed response", {"has_grace_response": False}, "reuse"),
    ("outside the window, disabled user", {"in_grace": False, "user_active": False}, "reuse"),
    ("within the window, disabled user", {"user_active": False}, "disabled"),
    ("another client's", {"client_id": "other"}, "another client"),
    ("family revoked", {"family_revoked": True}, "revoked"),
    ("unused and expired", {"used": False, "expired": True}, "expired"),
    ("unused, not consumable", {"used": False}, "invalid"),
]


@pytest.mark.parametrize(("case", "change", "expected"), DECISIONS, ids=[c[0] for c in DECISIONS])
def test_refresh_grace_reuse_decision(case: str, change: dict | None, expected: str) -> None:
    known = dataclasses.replace(GRACE, **(change or {}))
    if expected in ("grace", "reuse"):
        assert decide_unconsumed(known, "app") == expected
        return
    with pytest.raises(OAuthError) as caught:
        decide_unconsumed(known, "app")
    assert caught.value.error == "invalid_grant" and expected in caught.value.description


def test_unknown_refresh_token_is_invalid_grant() -> None:
    with pytest.raises(OAuthError) as caught:
        decide_unconsumed(None, "app")
    assert caught.value.error == "invalid_grant"


def test_grant_table_by_name() -> None:
    assert sorted(GRANTS) == [
        "authorization_code",
        "client_credentials",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code",
    ]
    assert all(name == grant.name for name, grant in GRANTS.items())


REFRESH_FORMS = [
    ("valid", {"refresh_token": "refresh_abc", "scope": "openid"}, RefreshRequest("refresh_abc", "openid")),
    ("missing", {}, "invalid_request"),
    ("not ours", {"refresh_token": "abc"}, "invalid_grant"),
    ("too long", {"refresh_token": "refresh_" + "a" * 300}, "invalid_grant"),
]


@pytest.mark.parametrize(("case", "form", "expected"), REFRESH_FORMS, ids=[c[0] for c in REFRESH_FORMS])
def test_refresh_validate(case: str, form: dict, expected: object) -> None:
    grant = GRANTS["refresh_token"]
    if isinstance(expected, RefreshRequest):
        assert grant.validate(client(), form) == expected
        return
    with pytest.raises(OAuthError) as caught:
        grant.validate(client(), form)
    assert caught.value.error == expected


MACHINE = [
    ("internal, default scope", client(internal=True), {}, MachineRequest("quota:read")),
    (
        "internal, canonical order",
        client(internal=True),
        {"scope": "quota:write quota:read"},
        MachineRequest("quota:read quota:write"),
    ),
    ("internal, user scope", client(internal=True), {"scope": "profile"}, "invalid_scope"),
    ("not internal", client(), {}, "unauthorized_client"),
    ("public", client("none", internal=True), {}, "unauthorized_client"),
]


@pytest.mark.parametrize(("case", "who", "form", "expected"), MACHINE, ids=[c[0] for c in MACHINE])
def test_client_credentials_validate(case: str, who: Client, form: dict, expected: object) -> None:
    grant = GRANTS["client_credentials"]
    if isinstance(expected, MachineRequest):
        assert grant.validate(who, form) == expected
        return
    with pytest.raises(OAuthError) as caught:
        grant.validate(who, form)
    assert caught.value.error == expected


def test_authorization_code_validate() -> None:
    grant = GRANTS["authorization_code"]
    got = grant.validate(client(), {"code": "c", "redirect_uri": "https://app.example/cb"})
    assert (got.code, got.redirect_uri, got.code_verifier) == ("c", "https://app.example/cb", None)
    with pytest.raises(OAuthError) as caught:
        grant.validate(client(), {"code": "c"})
    assert caught.value.error == "invalid_request"
