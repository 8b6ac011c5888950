"""POST /api/oauth2/token with grant_type=client_credentials (RFC 6749 4.4) through the gateway:
machine tokens for apps an operator flagged as internal (oauth_apps.internal), RFC 9068 claims
with sub = client_id, no refresh token; unauthorized_client, invalid_scope, invalid_client."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from urllib.parse import quote_plus

import asyncpg
import pytest

from libs.oauth.access_tokens import AccessTokenVerifier
from libs.oauth.errors import OAuthError
from libs.platform.config import Settings
from oauthctl.__main__ import main as oauthctl_main
from services.account import store as account_store
from tests.support.codes import ClientApp, make_client, make_verifier, post_token
from tests.support.stack import Stack


@pytest.fixture
async def internal_app(db: asyncpg.Pool, settings: Settings) -> ClientApp:
    app = await make_client(db, settings)
    await account_store.set_app_internal(db, app.client_id, True)
    return app


@pytest.fixture
async def verifier(db: asyncpg.Pool, settings: Settings) -> AsyncIterator[AccessTokenVerifier]:
    v, redis = make_verifier(db, settings)
    yield v
    await redis.aclose()


def cc_form(app: ClientApp, **extra: str) -> dict[str, str]:
    assert app.client_secret
    return {"grant_type": "client_credentials", "client_id": app.client_id, "client_secret": app.client_secret} | extra


def assert_error(status: int, headers: dict[str, str], body: dict, want_status: int, error: str) -> None:
    assert (status, body.get("error")) == (want_status, error), body
    assert body.get("error_description")
    assert "access_token" not in body
    assert headers.get("Cache-Control") == "no-store"


async def test_internal_app_gets_a_machine_token(stack: Stack, http, settings, internal_app, verifier) -> None:
    status, headers, body = await post_token(http, stack.base, cc_form(internal_app, scope="quota:write quota:read"))
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    assert body["scope"] == "quota:read quota:write"
    assert "refresh_token" not in body and "id_token" not in body
    token = await verifier.verify(body["access_token"])
    assert token.sub == internal_app.client_id  # RFC 9068 2.2: no resource owner, sub is the client
    assert token.client_id == internal_app.client_id
    assert token.user_id is None
    assert token.family is None
    assert token.scopes == {"quota:read", "quota:write"}
    assert token.claims["iss"] == settings.issuer and token.claims["aud"] == settings.resource_audience


async def test_default_scope_and_basic_auth(stack: Stack, http, internal_app, verifier) -> None:
    raw = f"{quote_plus(internal_app.client_id)}:{quote_plus(internal_app.client_secret or '')}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    status, _, body = await post_token(http, stack.base, {"grant_type": "client_credentials"}, headers=headers)
    assert status == 200, body
    assert body["scope"] == "quota:read"
    assert (await verifier.verify(body["access_token"])).scopes == {"quota:read"}


async def test_non_internal_app_is_unauthorized_client(stack: Stack, http, db, settings) -> None:
    app = await make_client(db, settings)
    status, headers, body = await post_token(http, stack.base, cc_form(app, scope="quota:read"))
    assert_error(status, headers, body, 400, "unauthorized_client")


async def test_public_client_is_refused(stack: Stack, http, db, settings) -> None:
    app = await make_client(db, settings, method="none", redirect_uri="http://127.0.0.1:3000/callback")
    await account_store.set_app_internal(db, app.client_id, True)
    form = {"grant_type": "client_credentials", "client_id": app.client_id, "scope": "quota:read"}
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 400, "unauthorized_client")


@pytest.mark.parametrize("scope", ["quota:admin", "profile", "quota:read balance", "QUOTA:READ", "quota:read\u00e9"])
async def test_unknown_scope_is_invalid_scope(stack: Stack, http, internal_app, scope) -> None:
    status, headers, body = await post_token(http, stack.base, cc_form(internal_app, scope=scope))
    assert_error(status, headers, body, 400, "invalid_scope")


async def test_wrong_secret_is_invalid_client(stack: Stack, http, internal_app) -> None:
    form = cc_form(internal_app) | {"client_secret": "secret_" + "A" * 43}
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 401, "invalid_client")


async def test_unknown_client_is_invalid_client(stack: Stack, http) -> None:
    form = {"grant_type": "client_credentials", "client_id": "client_" + "0" * 32, "client_secret": "x" * 20}
    status, headers, body = await post_token(http, stack.base, form)
    assert_error(status, headers, body, 401, "invalid_client")


async def test_a_revoked_machine_token_is_rejected(stack: Stack, http, settings, internal_app, verifier) -> None:
    from libs.oauth.access_tokens import mark_revoked

    _, _, body = await post_token(http, stack.base, cc_form(internal_app))
    token = await verifier.verify(body["access_token"])
    await mark_revoked(verifier.redis, settings, jtis=[token.jti])
    with pytest.raises(OAuthError) as exc:
        await verifier.verify(body["access_token"])
    assert exc.value.error == "invalid_token"


async def test_oauthctl_set_internal_switches_the_grant(stack: Stack, http, db, settings, monkeypatch, capsys) -> None:
    app = await make_client(db, settings)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TOKEN_PEPPER", settings.token_pepper)

    assert await _run_cli(["app", "set-internal", "--client-id", app.client_id]) == 0
    assert "is now internal" in capsys.readouterr().out
    status, _, body = await post_token(http, stack.base, cc_form(app))
    assert status == 200, body

    assert await _run_cli(["app", "set-internal", "--client-id", app.client_id, "--off"]) == 0
    status, headers, body = await post_token(http, stack.base, cc_form(app))
    assert_error(status, headers, body, 400, "unauthorized_client")

    assert await _run_cli(["app", "set-internal", "--client-id", "client_nope"]) == 1
    assert "no app with client_id" in capsys.readouterr().err


async def _run_cli(argv: list[str]) -> int:
    """oauthctl's main() runs its own event loop: run it in a thread beside the test's loop."""
    import asyncio

    return await asyncio.to_thread(oauthctl_main, argv)
