"""Login and logout pages.

``GET /login?next=`` shows the form; ``POST /login`` checks the CSRF token and the throttling,
verifies the password with argon2 (an unknown account costs the same time), refuses disabled
accounts, starts a new session and redirects to ``next`` (a local path only, else ``/user``).
Wrong credentials re-render the form with one message that never says which field was wrong.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from aiohttp import web
from multidict import MultiMapping

from libs.contracts.account import get_client
from libs.oauth.clients import Client
from libs.oauth.pages import render, safe_next
from libs.oauth.sessions import CSRF_FIELD, check_csrf, current_session, end_session, start_session
from libs.platform.clientip import client_ip
from libs.platform.config import Settings
from libs.platform.params import post_form
from libs.platform.security import verify_password
from libs.platform.web import PG, REDIS, SETTINGS

from . import loginrequest, ratelimit
from .identity import MAX_IDENTIFIER, LoginUser, find_login_user, signed_in
from .responses import found, lang_url

DEFAULT_NEXT = "/user"
AUTHORIZE_PATH = "/api/oauth2/authorize"
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class LoginResult:
    outcome: Literal["ok", "missing", "failed", "disabled", "blocked"]
    user_id: int | None = None
    retry_after: int = 0


class LoginUsers(Protocol):
    """Finds the user by username or email (identity.find_login_user in production)."""

    async def __call__(self, identifier: str) -> LoginUser | None: ...


# (stored hash or None for an unknown account, password) -> match? argon2 in production, costing
# the same for an unknown account.
PasswordCheck = Callable[[str | None, str], Awaitable[bool]]


class Throttle(Protocol):
    """The login throttling of ratelimit.py (docs/operations.md "Logins")."""

    async def check(self, attempt: ratelimit.Attempt) -> ratelimit.Blocked | None: ...
    async def record_failure(self, attempt: ratelimit.Attempt) -> None: ...
    async def record_success(self, attempt: ratelimit.Attempt) -> None: ...


@dataclass(frozen=True)
class RedisThrottle:
    redis: aioredis.Redis
    settings: Settings

    async def check(self, attempt: ratelimit.Attempt) -> ratelimit.Blocked | None:
        return await ratelimit.check(self.redis, self.settings, attempt)

    async def record_failure(self, attempt: ratelimit.Attempt) -> None:
        await ratelimit.record_failure(self.redis, self.settings, attempt)

    async def record_success(self, attempt: ratelimit.Attempt) -> None:
        await ratelimit.record_success(self.redis, attempt)


@dataclass(frozen=True)
class LoginDeps:
    users: LoginUsers
    throttle: Throttle
    verify: PasswordCheck
    settings: Settings


async def authenticate(deps: LoginDeps, identifier: str, password: str, ip: str) -> LoginResult:
    """The login rule: throttling first (ratelimit.py: per account+IP backoff, per IP limit,
    per account slowdown), then the password (argon2, the same cost for unknown accounts), then
    the account status."""
    # As registration stores emails (NFKC, services/account/emails.py): full-width input matches.
    identifier = unicodedata.normalize("NFKC", identifier).strip()
    if not identifier or not password:
        return LoginResult("missing")
    user = await deps.users(identifier)
    attempt = ratelimit.attempt_keys(deps.settings, user.id if user else None, identifier[:MAX_IDENTIFIER], ip)
    blocked = await deps.throttle.check(attempt)
    if blocked is not None:
        return LoginResult("blocked", retry_after=blocked.retry_after)
    ok = await deps.verify(user.password_hash if user else None, password[:MAX_PASSWORD])
    if not ok or user is None or len(password) > MAX_PASSWORD:
        await deps.throttle.record_failure(attempt)
        return LoginResult("failed")
    if not user.active:
        return LoginResult("disabled")
    await deps.throttle.record_success(attempt)
    return LoginResult("ok", user_id=user.id)


def login_deps(request: web.Request) -> LoginDeps:
    settings = request.app[SETTINGS]
    db = request.app[PG]

    async def users(identifier: str) -> LoginUser | None:
        return await find_login_user(db, identifier)

    return LoginDeps(users, RedisThrottle(request.app[REDIS], settings), verify_password, settings)


def _field(form: MultiMapping[object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def flow_client_id(next_url: str) -> str | None:
    """The client_id of the authorization request ``next_url`` resumes, if it is one."""
    parts = urlsplit(next_url)
    if parts.path != AUTHORIZE_PATH:
        return None
    values = parse_qs(parts.query).get("client_id") or []
    return values[0] if len(values) == 1 else None


async def flow_app(request: web.Request, next_url: str) -> Client | None:
    """The app a login in an authorization flow is for (the page names it: "Sign in to continue to
    <App>"), or None for a plain login."""
    client_id = flow_client_id(next_url)
    return await get_client(request.app[PG], client_id) if client_id else None


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
        app=await flow_app(request, next_url),
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
    result = await authenticate(login_deps(request), identifier, _field(form, "password"), client_ip(request))
    shown_identifier = identifier[:MAX_IDENTIFIER]
    if result.outcome == "ok":
        assert result.user_id is not None
        resp = found(next_url)
        session = await start_session(request, resp, result.user_id)
        await loginrequest.mark_login(request.app[REDIS], settings, next_url, session)
        return resp
    if result.outcome == "blocked":
        at = datetime.fromtimestamp(time.time() + result.retry_after, UTC)
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
