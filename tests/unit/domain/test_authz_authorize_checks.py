"""The authorize checks (services/authz/authrequest.CHECKS) against an in-memory client source:
each failure as the right typed error (page vs redirect), with the right code and state echo."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from libs.oauth.clients import Client
from services.authz.authrequest import (
    CHECKS,
    AuthRequest,
    check_client,
    check_max_age,
    check_redirect_uri,
    validate,
)
from services.authz.responses import ClientRedirectError, ErrorPage

REDIRECT = "https://app.example/cb"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def _client(client_id: str, auth_method: str) -> Client:
    return Client(
        id=1,
        client_id=client_id,
        name="App",
        description="",
        redirect_uris=(REDIRECT,),
        secret_hash=None,
        auth_method=auth_method,
        auto_authorize=True,
        internal=False,
    )


CLIENTS = {"conf": _client("conf", "client_secret_post"), "pub": _client("pub", "none")}


async def clients(client_id: str) -> Client | None:
    return CLIENTS.get(client_id)


BASE = {"client_id": "conf", "redirect_uri": REDIRECT, "response_type": "code", "state": "xyz"}


def query(*, drop: tuple[str, ...] = (), extra: list[tuple[str, str]] | None = None, **over: str) -> MultiDict[str]:
    items = [(k, over.pop(k, v)) for k, v in BASE.items() if k not in drop]
    items += list(over.items()) + (extra or [])
    return MultiDict(items)


async def test_a_valid_request_passes_every_check() -> None:
    req = await validate(clients, query(scope="openid profile openid", nonce="n1", prompt="login", max_age="60"))
    assert isinstance(req, AuthRequest)
    assert (req.client_id, req.redirect_uri, req.state) == ("conf", REDIRECT, "xyz")
    assert req.scopes == ("openid", "profile")
    assert (req.nonce, req.prompt, req.max_age) == ("n1", ("login",), 60)
    assert req.code_challenge is None and req.auto_authorize is False


async def test_defaults_and_pkce_are_carried() -> None:
    req = await validate(
        clients,
        query(client_id="pub", code_challenge=CHALLENGE, code_challenge_method="S256", auto_authorize="TRUE"),
    )
    assert req.scopes == ("profile",)
    assert (req.code_challenge, req.code_challenge_method) == (CHALLENGE, "S256")
    assert req.auto_authorize is True


PAGE_CASES = [
    ("missing client_id", query(drop=("client_id",)), "error.unknown_client", {}),
    ("empty client_id", query(client_id=""), "error.unknown_client", {}),
    ("unknown client_id", query(client_id="nope"), "error.unknown_client", {}),
    ("control chars in client_id", query(client_id="conf\x00"), "error.unknown_client", {}),
    ("repeated client_id", query(extra=[("client_id", "conf")]), "error.duplicate_param", {"name": "client_id"}),
    ("missing redirect_uri", query(drop=("redirect_uri",)), "error.bad_redirect_uri", {}),
    ("redirect_uri mismatch", query(redirect_uri=REDIRECT + "/x"), "error.bad_redirect_uri", {}),
    ("redirect_uri prefix", query(redirect_uri="https://app.example/c"), "error.bad_redirect_uri", {}),
    ("redirect_uri too long", query(redirect_uri=REDIRECT + "x" * 2000), "error.bad_redirect_uri", {}),
    (
        "repeated redirect_uri",
        query(extra=[("redirect_uri", REDIRECT)]),
        "error.duplicate_param",
        {"name": "redirect_uri"},
    ),
    # Client errors win over every later one: nothing may go to an untrusted redirect_uri.
    ("unknown client, bad response_type", query(client_id="x", response_type="token"), "error.unknown_client", {}),
]


@pytest.mark.parametrize(("name", "q", "key", "args"), PAGE_CASES, ids=[c[0] for c in PAGE_CASES])
async def test_untrusted_client_or_redirect_uri_is_an_error_page(
    name: str, q: MultiDict[str], key: str, args: dict[str, str]
) -> None:
    with pytest.raises(ErrorPage) as exc:
        await validate(clients, q)
    assert (exc.value.status, exc.value.key, exc.value.message_args) == (400, key, args)


LONG_STATE = "s" * 2049
REDIRECT_CASES = [
    # name, query, error, description fragment, state echoed
    ("repeated state", query(extra=[("state", "b")]), "invalid_request", "state is repeated", None),
    ("state too long", query(state=LONG_STATE), "invalid_request", "longer than 2048", None),
    ("repeated scope", query(extra=[("scope", "a"), ("scope", "b")]), "invalid_request", "scope is repeated", "xyz"),
    ("odd repeated name", query(extra=[("a b", "1"), ("a b", "2")]), "invalid_request", "a parameter is", "xyz"),
    ("missing response_type", query(drop=("response_type",)), "invalid_request", "response_type is required", "xyz"),
    ("response_type token", query(response_type="token"), "unsupported_response_type", "only response_type", "xyz"),
    ("missing state", query(drop=("state",)), "invalid_request", "state is required", None),
    ("unknown scope", query(scope="openid admin"), "invalid_scope", "unknown scope admin", "xyz"),
    ("unsafe unknown scope", query(scope="<x>"), "invalid_scope", "unknown scope; allowed", "xyz"),
    ("scope too long", query(scope="profile " * 80), "invalid_scope", "scope is too long", "xyz"),
    ("method without challenge", query(code_challenge_method="S256"), "invalid_request", "without code_", "xyz"),
    ("public client without PKCE", query(client_id="pub"), "invalid_request", "PKCE is required", "xyz"),
    (
        "plain PKCE",
        query(code_challenge=CHALLENGE, code_challenge_method="plain"),
        "invalid_request",
        "must be S256",
        "xyz",
    ),
    ("PKCE without method", query(code_challenge=CHALLENGE), "invalid_request", "must be S256", "xyz"),
    (
        "short challenge",
        query(code_challenge="abc", code_challenge_method="S256"),
        "invalid_request",
        "43-128 characters",
        "xyz",
    ),
    (
        "challenge bad chars",
        query(code_challenge="!" * 43, code_challenge_method="S256"),
        "invalid_request",
        "43-128 characters",
        "xyz",
    ),
    ("nonce too long", query(nonce="n" * 256), "invalid_request", "nonce must be", "xyz"),
    ("nonce control chars", query(nonce="a\nb"), "invalid_request", "nonce must be", "xyz"),
    ("unknown prompt", query(prompt="select_account"), "invalid_request", "prompt must be", "xyz"),
    ("prompt none with login", query(prompt="none login"), "invalid_request", "cannot be combined", "xyz"),
    ("negative max_age", query(max_age="-1"), "invalid_request", "max_age must be", "xyz"),
    ("max_age not a number", query(max_age="1e3"), "invalid_request", "max_age must be", "xyz"),
    ("max_age too long", query(max_age="12345678901"), "invalid_request", "max_age must be", "xyz"),
    ("max_age non-ascii digits", query(max_age="١٢"), "invalid_request", "max_age must be", "xyz"),
]


@pytest.mark.parametrize(
    ("name", "q", "error", "fragment", "state"), REDIRECT_CASES, ids=[c[0] for c in REDIRECT_CASES]
)
async def test_later_errors_go_back_to_the_redirect_uri(
    name: str, q: MultiDict[str], error: str, fragment: str, state: str | None
) -> None:
    with pytest.raises(ClientRedirectError) as exc:
        await validate(clients, q)
    assert exc.value.oauth.error == error
    assert fragment in exc.value.oauth.description
    assert (exc.value.redirect_uri, exc.value.state) == (REDIRECT, state)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"prompt": ""}, ()),
        ({"prompt": "login consent login"}, ("login", "consent")),
        ({"prompt": "none"}, ("none",)),
        ({"max_age": "0"}, 0),
        ({"scope": "  "}, ("profile",)),
        ({"nonce": ""}, None),
    ],
)
async def test_accepted_edge_values(raw: dict[str, str], expected: object) -> None:
    req = await validate(clients, query(extra=list(raw.items())))
    name = next(iter(raw))
    value = {"prompt": req.prompt, "max_age": req.max_age, "scope": req.scopes, "nonce": req.nonce}[name]
    assert value == expected


def test_the_order_is_declared_in_one_place() -> None:
    names = [c.__name__ for c in CHECKS]
    assert names[:2] == [check_client.__name__, check_redirect_uri.__name__]
    assert names[-1] == check_max_age.__name__
    assert len(set(names)) == len(names)
