"""Helpers for the device authorization grant's tests (RFC 8628; docs/device.md): an app allowed
the grant, the device's request, and a signed-in browser answering on /device.

    app = await device_app(db, settings, method="none")
    status, body = await device_authorization(http, stack.base, {"client_id": app.client_id})
    await answer(browser, stack.base, body["user_code"])          # Allow on the consent page
"""

from __future__ import annotations

import re

import aiohttp
import asyncpg

from libs.oauth.vocabulary import BROWSER_GRANT_TYPES, DEVICE_CODE_GRANT
from libs.platform.config import Settings
from services.account import apps
from tests.support.codes import ClientApp
from tests.support.factories import make_user
from tests.support.oauth import REQUEST_RE, form_value

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DEVICE_GRANT_TYPES = [*BROWSER_GRANT_TYPES, DEVICE_CODE_GRANT]
CONSENT_ACTION_RE = re.compile(r'<form method="post" action="([^"]+)">(?=(?:(?!</form>).)*name="decision")', re.S)


async def device_app(
    db: asyncpg.Pool, settings: Settings, *, method: str = "none", device: bool = True, name: str = "Device CLI"
) -> ClientApp:
    """A fresh app (through the account service's code), allowed the device grant unless
    ``device=False``, and a fresh active user."""
    owner = await make_user(db)
    grant_types = DEVICE_GRANT_TYPES if device else list(BROWSER_GRANT_TYPES)
    new = apps.NewApp(name, "a command-line tool", ["http://127.0.0.1/cb"], method, grant_types=grant_types)
    created = await apps.create_app(db, settings.pepper_bytes, owner.id, new, max_apps=100)
    user = await make_user(db)
    return ClientApp(created["client_id"], created.get("client_secret"), "http://127.0.0.1/cb", user.id)


def client_form(app: ClientApp, **extra: str) -> dict[str, str]:
    form = {"client_id": app.client_id} | extra
    if app.client_secret:
        form["client_secret"] = app.client_secret
    return form


async def device_authorization(
    http: aiohttp.ClientSession, base: str, data: dict[str, str] | str, *, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict]:
    """POST /api/oauth2/device_authorization; (status, headers, JSON body)."""
    async with http.post(f"{base}/api/oauth2/device_authorization", data=data, headers=FORM | (headers or {})) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def poll(http: aiohttp.ClientSession, base: str, app: ClientApp, device_code: str) -> tuple[int, dict]:
    """One poll of the token endpoint with the device grant; (status, JSON body)."""
    data = client_form(app, grant_type=DEVICE_CODE_GRANT, device_code=device_code)
    async with http.post(f"{base}/api/oauth2/token", data=data, headers=FORM) as r:
        return r.status, await r.json(content_type=None)


async def enter_code(browser: aiohttp.ClientSession, base: str, typed: str) -> tuple[int, str]:
    """A signed-in browser: GET /device (the CSRF token), POST the code; (status, page)."""
    async with browser.get(f"{base}/device", allow_redirects=False) as r:
        assert r.status == 200, r.status
        token = form_value(await r.text())
    async with browser.post(f"{base}/device", data={"csrf_token": token, "user_code": typed}) as r:
        return r.status, await r.text()


async def answer(browser: aiohttp.ClientSession, base: str, typed: str, decision: str = "allow") -> str:
    """Enter the code, then Allow (or Deny) on the consent page; the final page."""
    status, page = await enter_code(browser, base, typed)
    assert status == 200, page[:500]
    action = CONSENT_ACTION_RE.search(page)
    assert action and action.group(1) == "/device/consent", page[:800]
    data = {"csrf_token": form_value(page), "request": form_value(page, REQUEST_RE), "decision": decision}
    async with browser.post(f"{base}/device/consent", data=data) as r:
        assert r.status == 200, (r.status, (await r.text())[:500])
        return await r.text()
