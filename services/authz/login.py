"""Login and logout pages.

``GET /login?next=`` shows the form; ``POST /login`` checks the CSRF token and the throttling,
verifies the password with argon2 (an unknown account costs the same time), refuses disabled
accounts, starts a new session and redirects to ``next`` (a local path only, else ``/user``).
Wrong credentials re-render the form with one message that never says which field was wrong.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from multidict import MultiMapping

from libs.oauth.pages import render, safe_next
from libs.oauth.sessions import CSRF_FIELD, check_csrf, current_session, end_session, start_session
from libs.platform.clientip import client_ip
from libs.platform.config import Settings
from libs.platform.params import post_form
from libs.platform.security import verify_password
from libs.platform.web import PG, REDIS, SETTINGS

from . import loginrequest, ratelimit
from .identity import MAX_IDENTIFIER, find_login_user, signed_in
from .responses import found, lang_url

DEFAULT_NEXT = "/user"
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class LoginResult:
    outcome: Literal["ok", "missing", "failed", "disabled", "blocked"]
    user_id: int | None = None
    retry_after: int = 0


async def authenticate(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, identifier: str, password: str, ip: str
) -> LoginResult:
    """The login rule: throttling first (ratelimit.py: per account+IP backoff, per IP limit,
    per account slowdown), then the password (argon2, the same cost for unknown accounts), then
    the account status."""
    # As registration stores emails (NFKC, services/account/emails.py): full-width input matches.
    identifier = unicodedata.normalize("NFKC", identifier).strip()
    if not identifier or not password:
        return LoginResult("missing")
    user = await find_login_user(db, identifier)
    attempt = ratelimit.attempt_keys(settings, user.id if user else None, identifier[:MAX_IDENTIFIER], ip)
    blocked = await ratelimit.check(redis, settings, attempt)
    if blocked is not None:
        return LoginResult("blocked", retry_after=blocked.retry_after)
    ok = await verify_password(user.password_hash if user else None, password[:MAX_PASSWORD])
    if not ok or user is None or len(password) > MAX_PASSWORD:
        await ratelimit.record_failure(redis, settings, attempt)
        return LoginResult("failed")
    if not user.active:
        return LoginResult("disabled")
    await ratelimit.record_success(redis, attempt)
    return LoginResult("ok", user_id=user.id)


def _field(form: MultiMapping[object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


# --- handlers ------------------------------------------------------------------------------------
async def _login_page(request: web.Request, next_url: str, *, status: int = 200, **ctx: object) -> web.Response:
    who = await signed_in(request)
    ctx.setdefault("error", None)
    ctx.setdefault("identifier", "")
    reauth = request.query.get("reauth") == "1"
    keep = {"next": next_url} if next_url != DEFAULT_NEXT else {}
    if reauth:
        keep["reauth"] = "1"
    return await render(
        request,
        "login.html",
        status=status,
        next=next_url,
        reauth=reauth,
        lang_url=lang_url(request, keep),
        signed_in_as=who.username if who else None,
        **ctx,
    )


async def get_login(request: web.Request) -> web.Response:
    return await _login_page(request, safe_next(request.query.get("next")))


async def post_login(request: web.Request) -> web.Response:
    form = await post_form(request)
    check_csrf(request, _field(form, CSRF_FIELD))
    next_url = safe_next(_field(form, "next"))
    identifier = _field(form, "username")
    settings = request.app[SETTINGS]
    result = await authenticate(
        request.app[PG],
        request.app[REDIS],
        settings,
        identifier,
        _field(form, "password"),
        client_ip(request),
    )
    shown_identifier = identifier[:MAX_IDENTIFIER]
    if result.outcome == "ok":
        assert result.user_id is not None
        resp = found(next_url)
        session = await start_session(request, resp, result.user_id)
        await loginrequest.mark_login(request.app[REDIS], settings, next_url, session)
        return resp
    if result.outcome == "blocked":
        at = datetime.fromtimestamp(time.time() + result.retry_after, UTC).strftime("%H:%M:%S")
        resp = await render(
            request, "rate_limited.html", status=429, seconds=str(result.retry_after), at=at, next=next_url
        )
        resp.headers["Retry-After"] = str(result.retry_after)
        return resp
    status, key = {
        "missing": (400, "login.missing"),
        "failed": (401, "login.failed"),
        "disabled": (403, "login.disabled"),
    }[result.outcome]
    return await _login_page(request, next_url, status=status, error=key, identifier=shown_identifier)


async def get_logout(request: web.Request) -> web.Response:
    return await render(request, "logout.html", session_active=await current_session(request) is not None)


async def post_logout(request: web.Request) -> web.Response:
    form = await post_form(request)
    check_csrf(request, _field(form, CSRF_FIELD))
    resp = found("/login")
    await end_session(request, resp)
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", get_login)
    app.router.add_post("/login", post_login)
    app.router.add_get("/logout", get_logout)
    app.router.add_post("/logout", post_logout)
