"""Helpers for tests that need a logged-in browser, an OAuth app and an authorization code.

    client_id, secret = await make_app(db, settings, owner.id, ["https://app.example/cb"])
    await login(http, stack.base, user.username, "correct horse battery")
    params = await authorize(http, stack.base, client_id, "https://app.example/cb")
    code = params["code"]

``http`` must be an aiohttp ClientSession with ``CookieJar(unsafe=True)`` (cookies for 127.0.0.1).
"""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import asyncpg

from libs.platform.config import Settings
from services.account import store as account_store
from services.account.apps import NewApp, create_app, set_verified
from tests.support.codes import pkce_pair  # noqa: F401 - re-exported for tests that import it from here

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
REQUEST_RE = re.compile(r'name="request" value="([^"]+)"')


def form_value(html: str, pattern: re.Pattern[str] = CSRF_RE) -> str:
    m = pattern.search(html)
    assert m, f"no {pattern.pattern!r} in the page"
    return unescape(m.group(1))


# The one script of the pages: /assets/site.js, which only adds comfort (local times, the
# show-password button); every page works without it.
SHARED_SCRIPT = '<script src="/assets/site.js" defer></script>'


async def csrf_from(http: aiohttp.ClientSession, url: str) -> str:
    """GET a page with a form and return its CSRF token (the csrf cookie lands in the jar)."""
    async with http.get(url, allow_redirects=False) as r:
        assert r.status == 200, (r.status, url)
        return form_value(await r.text())


async def login_response(
    http: aiohttp.ClientSession, base: str, username: str, password: str, next_url: str | None = None
) -> tuple[int, str, str]:
    """Submit the login form; return (status, Location, body)."""
    token = await csrf_from(http, f"{base}/login")
    data = {"csrf_token": token, "username": username, "password": password}
    if next_url is not None:
        data["next"] = next_url
    async with http.post(f"{base}/login", data=data, allow_redirects=False) as r:
        return r.status, r.headers.get("Location", ""), await r.text()


async def login(http: aiohttp.ClientSession, base: str, username: str, password: str) -> None:
    """Log in through the gateway (GET /login for the CSRF token, POST the form)."""
    status, location, body = await login_response(http, base, username, password)
    assert status == 302, (status, body[:500])
    assert location == "/user", location


def query_of(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))


async def authorize(
    http: aiohttp.ClientSession,
    base: str,
    client_id: str,
    redirect_uri: str,
    scope: str = "profile balance",
    state: str = "s",
    **extra: str | None,
) -> dict[str, str]:
    """Run GET /api/oauth2/authorize for a logged-in browser whose answer is a redirect back to the
    app (auto_authorize=true by default, or an existing grant; pass auto_authorize=None to leave it
    out). Returns the redirect's query parameters (``code``, ``state``, ``iss``, or ``error``...)."""
    params: dict[str, str | None] = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": scope,
        "state": state,
        "auto_authorize": "true",
        **extra,
    }
    sent = {k: v for k, v in params.items() if v is not None}
    async with http.get(f"{base}/api/oauth2/authorize", params=sent, allow_redirects=False) as r:
        body = await r.text()
        location = r.headers.get("Location", "")
    assert r.status == 302, (r.status, body[:500])
    assert location.startswith(redirect_uri), location
    return query_of(location)


async def make_app(
    db: asyncpg.Pool, settings: Settings, owner_id: int, redirect_uris: list[str], **kw: object
) -> tuple[str, str | None]:
    """Create an OAuth app through the account service's own code. ``kw``: name, description,
    token_endpoint_auth_method ("none" makes a public client: the secret is None), auto_authorize
    (the per-app operator switch, default true), verified (default true: an operator ran
    `oauthctl app verify`, so one-click login skips consent as the guide shows; pass False for a
    freshly self-registered app). Returns (client_id, client_secret)."""
    new = NewApp(
        name=str(kw.get("name", "Test App")),
        description=str(kw.get("description", "")),
        redirect_uris=list(redirect_uris),
        token_endpoint_auth_method=str(kw.get("token_endpoint_auth_method", "client_secret_post")),
    )
    data = await create_app(db, settings.pepper_bytes, owner_id, new, settings.max_apps_per_developer)
    if "auto_authorize" in kw:
        await account_store.set_app_auto_authorize(db, data["client_id"], bool(kw["auto_authorize"]))
    if kw.get("verified", True):
        async with db.acquire() as conn:
            await set_verified(conn, data["client_id"], True)
    return data["client_id"], data.get("client_secret")
