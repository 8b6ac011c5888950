"""Hostile input at the edge of every handler (docs/api.md "Input rules"): values with NUL and
other control characters, lone surrogates, over-long values, wrong JSON types and repeated
parameters get the endpoint's own error form, never a 500 and never a lookup.

The first table is the finding "a NUL byte in a JWT ``kid`` gives an unauthenticated 500" on the
four endpoints that verify access tokens (userinfo, topup, introspect, revoke)."""

from __future__ import annotations

import base64
import json

import aiohttp
import asyncpg
import pytest

from libs.common.config import Settings
from tests.support.codes import ClientApp, make_client
from tests.support.stack import Stack

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, object]) -> str:
    claims = {"sub": "1", "jti": "j", "client_id": "c", "exp": 4102444800, "iat": 1, "scope": "profile"}
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(b"sig")])


# ``kid`` values that are no kid this platform could have minted (RFC 7515 4.1.4).
HOSTILE_KIDS = [
    "k\u0000",
    "\u0000",
    "k\u0001x",
    "k\u007f",
    "k\u0085",  # a C1 control
    "k\nk",
    "k" * 65,
    "k\u202e",  # bidi override: not a control character, but no kid of ours
    "ключ",
    1,
    None,
    ["k"],
]


@pytest.fixture(scope="module")
async def client(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)


@pytest.mark.parametrize("kid", HOSTILE_KIDS, ids=repr)
@pytest.mark.parametrize("path", ["/api/oauth2/userinfo", "/api/oauth2/topup"])
async def test_bearer_endpoints_answer_invalid_token_for_a_hostile_kid(
    stack: Stack, http: aiohttp.ClientSession, path: str, kid: object
) -> None:
    token = forged({"alg": "RS256", "typ": "at+jwt", "kid": kid})
    async with http.get(stack.base + path, headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 401, await r.text()
        assert r.content_type == "application/json"
        assert (await r.json())["error"] == "invalid_token"
        assert r.headers["WWW-Authenticate"].startswith('Bearer realm="oauth", error="invalid_token"')


@pytest.mark.parametrize("kid", HOSTILE_KIDS, ids=repr)
async def test_introspection_of_a_token_with_a_hostile_kid_is_inactive(
    stack: Stack, http: aiohttp.ClientSession, client: ClientApp, kid: object
) -> None:
    form = {"token": forged({"alg": "RS256", "typ": "at+jwt", "kid": kid})}
    form |= {"client_id": client.client_id, "client_secret": client.client_secret or ""}
    async with http.post(stack.base + "/api/oauth2/introspect", data=form, headers=FORM) as r:
        assert r.status == 200, await r.text()
        assert await r.json() == {"active": False}


@pytest.mark.parametrize("kid", HOSTILE_KIDS, ids=repr)
async def test_revocation_of_a_token_with_a_hostile_kid_is_a_no_op(
    stack: Stack, http: aiohttp.ClientSession, client: ClientApp, kid: object
) -> None:
    form = {"token": forged({"alg": "RS256", "typ": "at+jwt", "kid": kid})}
    form |= {"client_id": client.client_id, "client_secret": client.client_secret or ""}
    async with http.post(stack.base + "/api/oauth2/revoke", data=form, headers=FORM) as r:
        assert r.status == 200, await r.text()
