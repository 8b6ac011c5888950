"""PKCE (RFC 7636, RFC 9700 2.1.1) end to end: the real authorize endpoint stores the challenge and
the real token endpoint checks it. Single-endpoint cases (every malformed challenge, every bad
verifier shape) live in test_authorize.py and test_token_endpoint.py; this file checks that the two
ends agree, for public and confidential clients, with no way to downgrade."""

from __future__ import annotations

import base64
import hashlib

import aiohttp
import asyncpg
import pytest

from libs.platform.config import Settings
from libs.platform.security import token_hash
from tests.support.codes import post_token
from tests.support.factories import make_developer, make_user
from tests.support.oauth import authorize, login, make_app, pkce_pair
from tests.support.stack import Stack

PASSWORD = "correct horse battery"
CB = "https://pkce.example/cb"


@pytest.fixture(scope="module")
async def owner(db: asyncpg.Pool, settings: Settings):
    user, _ = await make_developer(db, settings)
    return user


@pytest.fixture(scope="module")
async def public(db, settings, owner) -> str:
    cid, secret = await make_app(db, settings, owner.id, [CB], token_endpoint_auth_method="none")
    assert secret is None
    return cid


@pytest.fixture(scope="module")
async def confidential(db, settings, owner) -> tuple[str, str]:
    cid, secret = await make_app(db, settings, owner.id, [CB])
    assert secret is not None
    return cid, secret


@pytest.fixture
async def browser(http: aiohttp.ClientSession, stack: Stack, db) -> aiohttp.ClientSession:
    user = await make_user(db, PASSWORD)
    await login(http, stack.base, user.username, PASSWORD)
    return http


async def exchange(http, stack: Stack, client_id: str, code: str, secret: str | None = None, **extra: str):
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CB, "client_id": client_id, **extra}
    if secret:
        form["client_secret"] = secret
    return await post_token(http, stack.base, form)


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


async def test_public_client_full_flow(stack, browser, db, settings, public) -> None:
    verifier, challenge = pkce_pair()
    q = await authorize(browser, stack.base, public, CB, code_challenge=challenge, code_challenge_method="S256")
    row = await db.fetchrow(
        "SELECT code_challenge, code_challenge_method FROM authorization_codes WHERE code_hash = $1",
        token_hash(settings.pepper_bytes, q["code"]),
    )
    assert row["code_challenge"] == challenge == s256(verifier) and row["code_challenge_method"] == "S256"
    status, _, body = await exchange(browser, stack, public, q["code"], code_verifier=verifier)
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["refresh_token"].startswith("refresh_")
    # The public client refreshes without a secret too.
    form = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": public}
    status, _, refreshed = await post_token(browser, stack.base, form)
    assert status == 200, refreshed


async def test_public_client_without_pkce_gets_no_code(stack, browser, settings, public) -> None:
    q = await authorize(browser, stack.base, public, CB)
    assert q["error"] == "invalid_request" and "code" not in q and q["iss"] == settings.issuer


@pytest.mark.parametrize("method", ["plain", None])
async def test_plain_is_refused(stack, browser, public, confidential, method) -> None:
    verifier, _ = pkce_pair()
    for cid in (public, confidential[0]):
        q = await authorize(browser, stack.base, cid, CB, code_challenge=verifier, code_challenge_method=method)
        assert q["error"] == "invalid_request" and "code" not in q


async def test_missing_verifier(stack, browser, public, confidential) -> None:
    for cid, secret in ((public, None), confidential):
        _, challenge = pkce_pair()
        q = await authorize(browser, stack.base, cid, CB, code_challenge=challenge, code_challenge_method="S256")
        status, _, body = await exchange(browser, stack, cid, q["code"], secret)
        # No downgrade (RFC 9700 2.1.1): a challenge was sent, so a verifier is required, even
        # from a confidential client that authenticated with its secret.
        assert status == 400 and body["error"] == "invalid_grant", body


async def test_wrong_verifier_then_the_right_one(stack, browser, public) -> None:
    verifier, challenge = pkce_pair()
    q = await authorize(browser, stack.base, public, CB, code_challenge=challenge, code_challenge_method="S256")
    for wrong in (pkce_pair()[0], challenge, verifier[:-1] + ("A" if verifier[-1] != "A" else "B")):
        status, _, body = await exchange(browser, stack, public, q["code"], code_verifier=wrong)
        assert status == 400 and body["error"] == "invalid_grant", body
    status, _, body = await exchange(browser, stack, public, q["code"], code_verifier=verifier)
    assert status == 200, body


async def test_verifier_without_challenge_is_refused(stack, browser, confidential) -> None:
    cid, secret = confidential
    q = await authorize(browser, stack.base, cid, CB)
    status, _, body = await exchange(browser, stack, cid, q["code"], secret, code_verifier=pkce_pair()[0])
    assert status == 400 and body["error"] == "invalid_grant"


async def test_confidential_client_with_pkce(stack, browser, confidential) -> None:
    cid, secret = confidential
    verifier, challenge = pkce_pair()
    q = await authorize(browser, stack.base, cid, CB, code_challenge=challenge, code_challenge_method="S256")
    status, _, body = await exchange(browser, stack, cid, q["code"], secret, code_verifier=verifier)
    assert status == 200, body


async def test_a_stolen_code_is_useless_without_the_verifier(stack, browser, http, public) -> None:
    """The attacker has the code (e.g. from a log or a redirect), not the verifier."""
    verifier, challenge = pkce_pair()
    q = await authorize(browser, stack.base, public, CB, code_challenge=challenge, code_challenge_method="S256")
    async with aiohttp.ClientSession() as attacker:
        status, _, body = await exchange(attacker, stack, public, q["code"])
        assert status == 400 and body["error"] == "invalid_grant"
        status, _, body = await exchange(attacker, stack, public, q["code"], code_verifier=pkce_pair()[0])
        assert status == 400 and body["error"] == "invalid_grant"
    status, _, body = await exchange(browser, stack, public, q["code"], code_verifier=verifier)
    assert status == 200, body


async def test_public_client_sending_a_secret_is_refused(stack, browser, public) -> None:
    verifier, challenge = pkce_pair()
    q = await authorize(browser, stack.base, public, CB, code_challenge=challenge, code_challenge_method="S256")
    status, _, body = await exchange(browser, stack, public, q["code"], "secret_guess", code_verifier=verifier)
    assert status == 401 and body["error"] == "invalid_client"
