"""No secret, token, code or password ever reaches the logs.

Runs the guide's whole flow (developer API, login, one-click authorize, code exchange, refresh,
userinfo, a top-up) with every log record of every service captured through the production JSON
formatter at DEBUG level, then searches the output for each secret that crossed the wire.
"""

from __future__ import annotations

import io
import logging

import aiohttp

from libs.platform.logs import JsonFormatter
from services.account.topup import create_codes
from tests.support.factories import make_developer, make_user
from tests.support.oauth import REQUEST_RE, csrf_from, form_value, login, query_of

PASSWORD = "pw-that-must-not-leak-42"
REDIRECT = "https://leakcheck.example/cb"


async def test_flow_leaves_no_secret_in_logs(stack, settings, db) -> None:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    secrets: dict[str, str] = {"password": PASSWORD}
    try:
        _, dev_token = await make_developer(db, settings)
        secrets["developer token"] = dev_token
        user = await make_user(db, password=PASSWORD)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.post(
                f"{stack.base}/api/oauth_apps",
                json={"name": "leak check", "redirect_uri": REDIRECT},
                headers={"Authorization": f"Bearer {dev_token}"},
            ) as r:
                app = (await r.json())["data"]
            secrets["client secret"] = app["client_secret"]
            await login(http, stack.base, user.username, PASSWORD)
            secrets["session cookie"] = next(c.value for c in http.cookie_jar if c.key == "sid")
            # a self-registered app is unverified: the consent page once (its form and answer logged too)
            params = await consent_then_code(http, stack.base, app["client_id"], "st-secret-state-123")
            secrets["code"] = params["code"]
            form = {
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": REDIRECT,
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
            }
            async with http.post(f"{stack.base}/api/oauth2/token", data=form) as r:
                tokens = await r.json()
                assert r.status == 200, tokens
            secrets["access token"] = tokens["access_token"]
            secrets["refresh token"] = tokens["refresh_token"]
            refresh = {
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
            }
            async with http.post(f"{stack.base}/api/oauth2/token", data=refresh) as r:
                new = await r.json()
                assert r.status == 200, new
            secrets["new refresh token"] = new["refresh_token"]
            async with http.get(
                f"{stack.base}/api/oauth2/userinfo", headers={"Authorization": f"Bearer {new['access_token']}"}
            ) as r:
                assert r.status == 200, await r.text()
            # failures log too: a wrong secret and a replayed code must not echo what was sent
            async with http.post(f"{stack.base}/api/oauth2/token", data=form | {"client_secret": "secret_wrong-x9"}):
                pass
            async with http.post(f"{stack.base}/api/oauth2/token", data=form):
                pass
            [code] = await create_codes(db, settings.pepper_bytes, amount=5000, count=1)
            secrets["top-up code"] = code
            csrf = await csrf_from(http, f"{stack.base}/user/topup")
            async with http.post(f"{stack.base}/user/topup", data={"csrf_token": csrf, "code": code}) as r:
                assert r.status == 200
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    output = buffer.getvalue()
    assert '"request_id"' in output and "/api/oauth2/token" in output, "the services' logs were not captured"
    leaked = [name for name, value in secrets.items() if value and value in output]
    assert leaked == [], f"found in logs: {leaked}"
    assert "st-secret-state-123" not in output  # query strings are not logged
    assert "secret_wrong-x9" not in output


async def consent_then_code(http: aiohttp.ClientSession, base: str, client_id: str, state: str) -> dict[str, str]:
    query = {"client_id": client_id, "redirect_uri": REDIRECT, "response_type": "code", "state": state}
    async with http.get(f"{base}/api/oauth2/authorize", params=query | {"auto_authorize": "true"}) as r:
        page = await r.text()
        assert r.status == 200 and 'action="/consent"' in page, page[:300]
    form = {"csrf_token": form_value(page), "request": form_value(page, REQUEST_RE), "decision": "allow"}
    async with http.post(f"{base}/consent", data=form, allow_redirects=False) as r:
        assert r.status == 302
        return query_of(r.headers["Location"])
