"""Signing keys: rotation with ``oauthctl keys`` (publish first, sign after a delay, retire the old key
only after its tokens expire, prune), verification by ``kid``, and the algorithm by setting (RS256
default, ES256, legacy HS256 with RS256 id_tokens)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import jwt
import pytest

from libs.oauth.access_tokens import KEYS
from libs.platform.config import Settings
from oauthctl.__main__ import build_parser
from services.token.key_admin import verify_window
from tests.support.clock import retire_key_ago
from tests.support.codes import ClientApp, issue_code, make_client, post_token
from tests.support.stack import Stack, free_port

ROOT = Path(__file__).resolve().parents[2]
SCOPE = "openid profile email balance"


async def oauthctl(settings: Settings, *args: str) -> tuple[int, str, str]:
    """Run the real CLI in a subprocess against the test database."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": settings.database_url,
        "TOKEN_PEPPER": settings.token_pepper,
        "JWT_ALGORITHM": settings.jwt_algorithm,
        "ACCESS_TOKEN_TTL_SECONDS": str(settings.access_token_ttl_seconds),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "oauthctl",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
async def app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    return await make_client(db, settings)


async def tokens_from(http: aiohttp.ClientSession, base: str, db, settings: Settings, app: ClientApp) -> dict:
    """A code exchanged at ``base`` (the gateway, or one token service directly)."""
    code = await issue_code(
        db, settings, client_id=app.client_id, user_id=app.user_id, redirect_uri=app.redirect_uri, scope=SCOPE
    )
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": app.redirect_uri,
        "client_id": app.client_id,
        "client_secret": app.client_secret or "",
    }
    status, _, body = await post_token(http, base, form)
    assert status == 200, body
    return body


async def jwks(http: aiohttp.ClientSession, base: str) -> dict[str, jwt.PyJWK]:
    async with http.get(f"{base}/api/oauth2/jwks") as r:
        assert r.status == 200
        return {k.key_id: k for k in jwt.PyJWKSet.from_dict(await r.json()).keys}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def verify_with_jwks(token: str, keys: dict[str, jwt.PyJWK], audience: str, issuer: str) -> dict:
    header = jwt.get_unverified_header(token)
    key = keys[header["kid"]]
    return jwt.decode(token, key.key, algorithms=[header["alg"]], audience=audience, issuer=issuer)


async def userinfo_status(http: aiohttp.ClientSession, stack: Stack, access_token: str) -> int:
    async with http.get(f"{stack.base}/api/oauth2/userinfo", headers={"Authorization": f"Bearer {access_token}"}) as r:
        return r.status


async def introspect(http: aiohttp.ClientSession, stack: Stack, app: ClientApp, token: str) -> dict:
    form = {"token": token, "client_id": app.client_id, "client_secret": app.client_secret or ""}
    async with http.post(f"{stack.base}/api/oauth2/introspect", data=form) as r:
        assert r.status == 200
        return await r.json()


# --- the CLI -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["keys"], ["keys", "add"], ["keys", "list"], ["keys", "retire"], ["keys", "prune"]])
def test_every_keys_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: oauthctl keys" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["keys", "add", "--activate-in", "-1"], ["keys", "add", "--alg", "none"]])
def test_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


async def test_retire_unknown_kid(settings: Settings) -> None:
    rc, _, err = await oauthctl(settings, "keys", "retire", "--kid", "nope")
    assert rc == 1 and "no key" in err


# --- rotation end to end ---------------------------------------------------------------------------
async def test_rotation(stack: Stack, http: aiohttp.ClientSession, db, settings: Settings, app: ClientApp) -> None:
    issuer = settings.issuer
    token_keys = stack.runners["token"].app[KEYS]
    before = await tokens_from(http, stack.base, db, settings, app)
    old_kid = kid_of(before["access_token"])
    assert kid_of(before["id_token"]) == old_kid

    rc, out, err = await oauthctl(settings, "keys", "add", "--activate-in", "3")
    assert rc == 0, err
    new_kid = re.search(r"kid=(\S+):", out).group(1)  # type: ignore[union-attr]
    assert new_kid != old_kid and f"key {old_kid} stops signing" in out

    await token_keys.load()  # what every instance does within 30 s on its own
    published = await jwks(http, stack.base)
    assert {old_kid, new_kid} <= set(published)  # published before it signs
    during = await tokens_from(http, stack.base, db, settings, app)
    assert kid_of(during["access_token"]) == old_kid  # not signing yet

    await asyncio.sleep(3.2)
    after = await tokens_from(http, stack.base, db, settings, app)
    assert kid_of(after["access_token"]) == new_kid  # new tokens use the new kid
    assert kid_of(after["id_token"]) == new_kid

    # Tokens signed before the rotation still verify, everywhere, by kid.
    published = await jwks(http, stack.base)
    assert old_kid in published
    for token in (before["access_token"], during["access_token"], after["access_token"]):
        assert await userinfo_status(http, stack, token) == 200
        assert (await introspect(http, stack, app, token))["active"] is True
    for body in (before, after):
        claims = verify_with_jwks(body["id_token"], published, app.client_id, issuer)
        assert claims["sub"] == str(app.user_id)
    # A refresh token issued under the old key still works and gets new-key tokens.
    status, _, refreshed = await post_token(
        http,
        stack.base,
        {
            "grant_type": "refresh_token",
            "refresh_token": before["refresh_token"],
            "client_id": app.client_id,
            "client_secret": app.client_secret or "",
        },
    )
    assert status == 200 and kid_of(refreshed["access_token"]) == new_kid

    rc, out, _ = await oauthctl(settings, "keys", "list")
    assert rc == 0
    lines = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:]}
    assert lines[old_kid] == "retired" and lines[new_kid] == "signing"

    # The signing key cannot be retired while it is the only one; nothing is prunable yet.
    rc, _, err = await oauthctl(settings, "keys", "retire", "--kid", new_kid)
    assert rc == 1 and "only" in err
    rc, out, _ = await oauthctl(settings, "keys", "prune")
    assert rc == 0 and old_kid not in out

    # Once every token the old key signed has expired, prune deletes it and it stops verifying.
    window = verify_window(settings).total_seconds()
    await retire_key_ago(db, old_kid, window + 1)
    rc, out, _ = await oauthctl(settings, "keys", "prune")
    assert rc == 0 and f"deleted key {old_kid}" in out
    assert await db.fetchval("SELECT count(*) FROM signing_keys WHERE kid = $1", old_kid) == 0
    await token_keys.load()
    assert old_kid not in await jwks(http, stack.base)
    assert (await introspect(http, stack, app, before["access_token"])) == {"active": False}
    assert (await introspect(http, stack, app, after["access_token"]))["active"] is True


async def test_retire_then_verify_until_expiry(stack, http, db, settings: Settings, app) -> None:
    """``keys retire``: the key stops signing at once but still verifies (nothing deleted)."""
    rc, out, err = await oauthctl(settings, "keys", "add", "--activate-in", "0", "--keep-old")
    assert rc == 0, err
    second = re.search(r"kid=(\S+):", out).group(1)  # type: ignore[union-attr]
    token_keys = stack.runners["token"].app[KEYS]
    await token_keys.load()
    body = await tokens_from(http, stack.base, db, settings, app)
    assert kid_of(body["access_token"]) == second  # the newest active key signs
    rc, out, err = await oauthctl(settings, "keys", "retire", "--kid", second)
    assert rc == 0, err
    assert "keeps verifying until" in out
    await token_keys.load()
    later = await tokens_from(http, stack.base, db, settings, app)
    assert kid_of(later["access_token"]) != second  # the remaining key signs again
    assert second in await jwks(http, stack.base)  # still published
    assert await userinfo_status(http, stack, body["access_token"]) == 200
    rc, _, err = await oauthctl(settings, "keys", "retire", "--kid", second)
    assert rc == 1 and "already retired" in err


# --- the algorithm, by setting --------------------------------------------------------------------------
@pytest.fixture
async def token_service(stack: Stack, settings: Settings, request) -> AsyncIterator[str]:
    """A second token service (same database) with JWT_ALGORITHM=<param>; yields its base URL."""
    alg_settings = settings.model_copy(update={"jwt_algorithm": request.param})
    port = free_port()
    runner = await stack.start("token", port=port, settings=alg_settings)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("token_service", ["ES256"], indirect=True)
async def test_es256_by_setting(stack, http, db, settings, app, token_service) -> None:
    body = await tokens_from(http, token_service, db, settings, app)
    published = await jwks(http, token_service)
    for token in (body["access_token"], body["id_token"]):
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "ES256" and published[header["kid"]].key_type == "EC"
    verify_with_jwks(body["id_token"], published, app.client_id, settings.issuer)
    verify_with_jwks(body["access_token"], published, settings.resource_audience, settings.issuer)
    # Every other service verifies it by kid (the account service never saw this key before).
    assert await userinfo_status(http, stack, body["access_token"]) == 200
    async with http.get(f"{token_service}/.well-known/openid-configuration") as r:
        assert (await r.json())["id_token_signing_alg_values_supported"] == ["ES256"]


@pytest.mark.parametrize("token_service", ["HS256"], indirect=True)
async def test_legacy_hs256_with_rs256_id_tokens(stack, http, db, settings, app, token_service) -> None:
    body = await tokens_from(http, token_service, db, settings, app)
    published = await jwks(http, token_service)
    access_header = jwt.get_unverified_header(body["access_token"])
    assert access_header["alg"] == "HS256"
    assert access_header["kid"] not in published  # a shared secret is never published
    id_header = jwt.get_unverified_header(body["id_token"])
    assert id_header["alg"] == "RS256" and id_header["kid"] in published  # clients can verify it
    claims = verify_with_jwks(body["id_token"], published, app.client_id, settings.issuer)
    assert claims["sub"] == str(app.user_id)
    assert await userinfo_status(http, stack, body["access_token"]) == 200  # verified by kid
    async with http.get(f"{token_service}/.well-known/openid-configuration") as r:
        assert (await r.json())["id_token_signing_alg_values_supported"] == ["RS256"]
