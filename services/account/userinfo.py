"""``GET /api/oauth2/userinfo`` (guide section "3. 用户信息端点") and ``GET /api/oauth2/topup``.

Both take an access token (RFC 6750). Userinfo answers exactly the guide's fields, filtered by the
token's scopes: ``profile`` -> id, username, email, created_time, status; ``balance`` -> quota,
used_quota, balance_formatted; OIDC ``email`` -> email, email_verified; ``openid`` -> sub only.
``sub`` is always present. A user who is gone or disabled makes the token invalid (401).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from libs.oauth.access_tokens import AccessToken, authenticate
from libs.oauth.caches import LiveCache
from libs.oauth.errors import InvalidToken
from libs.oauth.vocabulary import NO_STORE, SCOPES
from libs.platform.web import PG, SETTINGS, json_response

from .balance import format_balance
from .user_cache import USER_CACHE, cached_user
from .users import User


def userinfo_claims(user: User, scopes: frozenset[str], quota_per_unit: int) -> dict[str, Any]:
    """The userinfo body for ``user`` as seen through ``scopes`` (guide field names and types)."""
    out: dict[str, Any] = {"sub": str(user.id)}
    if "profile" in scopes:
        out.update(id=user.id, username=user.username, email=user.email)
    elif "email" in scopes:
        out["email"] = user.email
    if "balance" in scopes:
        out.update(
            quota=user.quota,
            used_quota=user.used_quota,
            balance_formatted=format_balance(user.quota, user.used_quota, quota_per_unit),
        )
    if "profile" in scopes:
        out.update(created_time=user.created_time, status=user.status)
    if "email" in scopes:
        out["email_verified"] = False  # addresses are not verified (yet): say so, as OIDC asks
    return out


async def active_user_of(pool: asyncpg.Pool, token: AccessToken, cache: LiveCache[int, User] | None = None) -> User:
    """The token's user, who must exist and be active; otherwise the token is no longer valid.
    With ``cache`` (user_cache.py), read through this instance's event-invalidated cache."""
    user = await cached_user(pool, token.user_id, cache) if token.user_id is not None else None
    if user is None or not user.active:
        raise InvalidToken(
            "The access token does not belong to an active user",
            detail=f"user {token.user_id} is missing or not active",
        )
    return user


def topup_url(public_base_url: str, client_id: str) -> str:
    # Only the client id goes into the URL (never the token): the page asks the browser's own session.
    return f"{public_base_url}/user/topup?{urlencode({'from': client_id})}"


# --- handlers ------------------------------------------------------------------------------------
async def handle_userinfo(request: web.Request) -> web.Response:
    token = await authenticate(request, *SCOPES)
    user = await active_user_of(request.app[PG], token, request.app.get(USER_CACHE))
    return json_response(userinfo_claims(user, token.scopes, request.app[SETTINGS].quota_per_unit), headers=NO_STORE)


async def handle_topup(request: web.Request) -> web.Response:
    token = await authenticate(request)
    await active_user_of(request.app[PG], token, request.app.get(USER_CACHE))
    url = topup_url(request.app[SETTINGS].public_base_url, token.client_id)
    return json_response({"topup_url": url}, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    # OIDC Core 5.3.1: the UserInfo endpoint answers GET and POST (the token still only in the header).
    app.router.add_get("/api/oauth2/userinfo", handle_userinfo)
    app.router.add_post("/api/oauth2/userinfo", handle_userinfo)
    app.router.add_get("/api/oauth2/topup", handle_topup)
