"""The example resource server (examples/resource_server, docs/spending.md "A resource server")
against the real stack: tokens verified offline with the platform's JWKS, a fixed price charged per
call through /internal/quota/spend with the token's grant, 402 once the allowance is spent; and how
`make run` starts it (oauthctl/run.py)."""

from __future__ import annotations

import aiohttp
import pytest

from libs.platform.config import Settings
from oauthctl.demo import DemoInfo
from oauthctl.run import _example_command, _resource_server_env
from tests.support.codes import ClientApp, obtain_tokens
from tests.support.factories import make_user
from tests.support.oauth import make_app
from tests.support.spending import CB, make_spend_grant, resource_server


async def call(http: aiohttp.ClientSession, base: str, token: str | None, key: str | None = None) -> tuple[int, dict]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if key:
        headers["Idempotency-Key"] = key
    async with http.post(f"{base}/api/answer", headers=headers) as r:
        return r.status, await r.json()


async def test_charges_per_call_until_the_allowance_is_spent(stack, http, db, settings) -> None:
    g = await make_spend_grant(http, stack, db, settings, amount="1.00", period="daily")
    async with resource_server(stack, settings) as rs:
        for left in (700, 400, 100):
            status, body = await call(http, rs, g.access_token)
            assert status == 200 and body["charged"] == "0.30" and body["allowance"]["remaining"] == left
        status, body = await call(http, rs, g.access_token)
        assert status == 402 and body["error"] == "spend_limit_exceeded" and "0.10 left" in body["error_description"]
        # A retried call (same Idempotency-Key) is charged once.
        async with resource_server(stack, settings, price=50) as cheap:
            assert (await call(http, cheap, g.access_token, "retry-1"))[0] == 200
            assert (await call(http, cheap, g.access_token, "retry-1"))[0] == 200
    assert await db.fetchval("SELECT sum(amount) FROM spend_charges WHERE user_id = $1", g.user_id) == 950


async def test_refuses_bad_tokens_and_tokens_without_spend(stack, http, db, settings) -> None:
    owner = await make_user(db)
    client_id, secret = await make_app(db, settings, owner.id, [CB])
    user = await make_user(db)
    tokens = await obtain_tokens(http, stack.base, db, settings, ClientApp(client_id, secret, CB, user.id))
    async with resource_server(stack, settings) as rs:
        assert (await call(http, rs, None))[0] == 401
        assert (await call(http, rs, "x.y.z"))[1]["error"] == "invalid_token"
        forged = tokens["access_token"][:-4] + ("AAAA" if not tokens["access_token"].endswith("AAAA") else "BBBB")
        assert (await call(http, rs, forged))[0] == 401
        status, body = await call(http, rs, tokens["access_token"])
        assert status == 403 and body["error"] == "insufficient_scope"


@pytest.mark.parametrize("token", ["", "set"])
async def test_make_run_wires_the_resource_server_to_the_example_app(settings: Settings, token: str) -> None:
    s = settings.model_copy(update={"internal_service_token": token and settings.internal_service_token})
    info = DemoInfo(
        username="demo",
        password="pw",
        developer_token="dev",
        app_id=1,
        client_id="client_x",
        client_secret="secret_x",
        redirect_uris=["http://localhost:3000/oauth/callback"],
    )
    command = _example_command(s, info)
    assert command is not None
    env = command[1]
    if token:
        assert env["RESOURCE_SERVER_URL"] == f"http://127.0.0.1:{s.example_resource_server_port}"
        rs = _resource_server_env(s)
        assert rs["ACCOUNT_INTERNAL_URL"] == s.upstream_url("account")
        assert rs["INTERNAL_SERVICE_TOKEN"] == s.internal_service_token
        assert rs["OAUTH_SERVER"] == s.public_base_url
    else:
        assert "RESOURCE_SERVER_URL" not in env
