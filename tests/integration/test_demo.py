"""`oauthctl demo` / `make run`'s demo data (oauthctl/demo.py) against a real database: created
once, refreshed on every later run, and usable by the example app at the token endpoint."""

from __future__ import annotations

import aiohttp

from libs.contracts.account import get_client
from libs.platform.security import token_hash
from oauthctl.demo import ensure_demo
from tests.support.stack import Stack


async def test_demo_data_is_created_then_refreshed(stack: Stack, db, settings) -> None:
    first = await ensure_demo(settings)
    again = await ensure_demo(settings)
    assert (again.app_id, again.client_id) == (first.app_id, first.client_id)
    assert again.client_secret != first.client_secret  # a fresh secret each run, printed by `make run`
    row = await db.fetchrow(
        "SELECT verified, grant_types, client_secret_hash FROM oauth_apps WHERE client_id = $1", first.client_id
    )
    assert row["verified"] and list(row["grant_types"]) == ["authorization_code", "refresh_token"]
    assert bytes(row["client_secret_hash"]) == token_hash(settings.pepper_bytes, again.client_secret)
    client = await get_client(db, first.client_id)
    assert client is not None and client.verify_secret(settings.pepper_bytes, again.client_secret)
    # The example app's credentials authenticate at the token endpoint (an unknown code, not a bad client).
    form = {
        "grant_type": "authorization_code",
        "code": "code_unknown",
        "redirect_uri": again.redirect_uris[0],
        "client_id": again.client_id,
        "client_secret": again.client_secret,
    }
    async with aiohttp.ClientSession() as http, http.post(f"{stack.base}/api/oauth2/token", data=form) as r:
        assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
