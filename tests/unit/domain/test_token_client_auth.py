"""Client authentication decisions (RFC 6749 2.3.1, 3.2.1, 5.2) against an in-memory client lookup."""

from __future__ import annotations

import base64

import pytest

from libs.oauth.clients import Client
from libs.oauth.errors import BASIC_CHALLENGE, OAuthError
from libs.platform.security import token_hash
from services.token.client_auth import authenticate_client, presented_credentials

PEPPER = b"p" * 32


def client(client_id: str, secret: str | None, method: str, internal: bool = False) -> Client:
    return Client(
        id=1,
        client_id=client_id,
        name=client_id,
        description="",
        redirect_uris=("https://app.example/cb",),
        secret_hash=token_hash(PEPPER, secret) if secret is not None else None,
        auth_method=method,
        auto_authorize=False,
        internal=internal,
    )


CLIENTS = {
    "conf": client("conf", "s3cret", "client_secret_post"),
    "basic": client("basic", "b4sic", "client_secret_basic"),
    "pub": client("pub", None, "none"),
}


async def lookup(client_id: str) -> Client | None:
    return CLIENTS.get(client_id)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


OK = [
    ("post", None, {"client_id": "conf", "client_secret": "s3cret"}, True, "conf"),
    ("basic header", basic("conf", "s3cret"), {}, True, "conf"),
    ("basic header, registered basic", basic("basic", "b4sic"), {}, True, "basic"),
    ("post, registered basic", None, {"client_id": "basic", "client_secret": "b4sic"}, True, "basic"),
    ("basic header with matching body client_id", basic("conf", "s3cret"), {"client_id": "conf"}, True, "conf"),
    ("public client, id only", None, {"client_id": "pub"}, True, "pub"),
]

# (case, Authorization, form, public_allowed, status, error, WWW-Authenticate, description fragment)
FAIL = [
    ("nothing", None, {}, True, 401, "invalid_client", None, "missing"),
    ("unknown client", None, {"client_id": "nope", "client_secret": "x"}, True, 401, "invalid_client", None, "Unknown"),
    (
        "wrong secret post",
        None,
        {"client_id": "conf", "client_secret": "bad"},
        True,
        401,
        "invalid_client",
        None,
        "failed",
    ),
    ("wrong secret basic", basic("conf", "bad"), {}, True, 401, "invalid_client", BASIC_CHALLENGE, "failed"),
    ("no secret", None, {"client_id": "conf"}, True, 401, "invalid_client", None, "client_secret is missing"),
    (
        "public with a secret",
        None,
        {"client_id": "pub", "client_secret": "x"},
        True,
        401,
        "invalid_client",
        None,
        "public",
    ),
    ("public, introspection", None, {"client_id": "pub"}, False, 401, "invalid_client", None, "Introspection"),
    ("public via basic, introspection", basic("pub", ""), {}, False, 401, "invalid_client", BASIC_CHALLENGE, "Intro"),
    ("both methods", basic("conf", "s3cret"), {"client_secret": "s3cret"}, True, 400, "invalid_request", None, "one"),
    ("body id differs", basic("conf", "s3cret"), {"client_id": "basic"}, True, 400, "invalid_request", None, "match"),
    ("other scheme", "Bearer abc", {}, True, 401, "invalid_client", BASIC_CHALLENGE, "Basic"),
    ("malformed basic", "Basic !!!", {}, True, 401, "invalid_client", BASIC_CHALLENGE, "malformed"),
    (
        "no colon",
        "Basic " + base64.b64encode(b"conf").decode(),
        {},
        True,
        401,
        "invalid_client",
        BASIC_CHALLENGE,
        "mal",
    ),
    ("too long", "Basic " + "A" * 5000, {}, True, 401, "invalid_client", BASIC_CHALLENGE, "too long"),
    ("control char", basic("conf%00", "s3cret"), {}, True, 401, "invalid_client", BASIC_CHALLENGE, "malformed"),
]


@pytest.mark.parametrize(("case", "authorization", "form", "public_allowed", "expected"), OK, ids=[c[0] for c in OK])
async def test_accepted(case: str, authorization: str | None, form: dict, public_allowed: bool, expected: str) -> None:
    creds = presented_credentials(authorization, form)
    got = await authenticate_client(lookup, PEPPER, creds, public_allowed=public_allowed)
    assert got.client_id == expected


@pytest.mark.parametrize(
    ("case", "authorization", "form", "public_allowed", "status", "error", "challenge", "fragment"),
    FAIL,
    ids=[c[0] for c in FAIL],
)
async def test_refused(
    case: str,
    authorization: str | None,
    form: dict,
    public_allowed: bool,
    status: int,
    error: str,
    challenge: str | None,
    fragment: str,
) -> None:
    with pytest.raises(OAuthError) as caught:
        creds = presented_credentials(authorization, form)
        await authenticate_client(lookup, PEPPER, creds, public_allowed=public_allowed)
    assert (caught.value.error, caught.value.status, caught.value.www_authenticate) == (error, status, challenge)
    assert fragment.lower() in caught.value.description.lower()


def test_basic_parts_are_form_urlencoded() -> None:
    """RFC 6749 2.3.1: id and secret are application/x-www-form-urlencoded before Basic encoding."""
    creds = presented_credentials(basic("a%3Ab", "x+y%25"), {})
    assert (creds.client_id, creds.secret, creds.via_basic) == ("a:b", "x y%", True)
