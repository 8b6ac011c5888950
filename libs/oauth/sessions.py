"""Login sessions in Redis behind an HttpOnly, SameSite=Lax cookie, and CSRF tokens for forms.

The cookie holds a 256-bit random session id; Redis holds only its SHA-256, so a Redis dump does
not give working cookies. A new id is issued at every login (no session fixation). Each user's
session keys are also listed in a Redis set (``user_sessions:<id>``), so a password reset can end
them all (``end_user_sessions``).

CSRF: a signed double-submit token. A random ``csrf`` cookie is set once per browser; forms carry
HMAC(pepper, cookie). An attacker who can plant a cookie still cannot compute its form token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import TypeVar

import orjson
import redis.asyncio as aioredis
from aiohttp import hdrs, web

from libs.platform.config import Settings
from libs.platform.errors import PageError
from libs.platform.params import is_clean
from libs.platform.redis import key
from libs.platform.web import REDIS, SETTINGS

SESSION_COOKIE = "sid"
CSRF_COOKIE = "csrf"
CSRF_FIELD = "csrf_token"
SESSION = web.RequestKey("session", object)
NEW_CSRF_COOKIE = web.RequestKey("new_csrf_cookie", str)


@dataclass(frozen=True)
class Session:
    key: str  # redis key
    user_id: int
    auth_time: int  # when the user last entered their password (OIDC auth_time)


def _skey(request_or_app: web.Request | web.Application, sid: str) -> str:
    app = request_or_app.app if isinstance(request_or_app, web.Request) else request_or_app
    return key(app[SETTINGS], "session", hashlib.sha256(sid.encode()).hexdigest())


async def start_session(request: web.Request, response: web.StreamResponse, user_id: int) -> Session:
    """Log ``user_id`` in: drop any old session, store a new one, set the cookie on ``response``."""
    await end_session(request, response)
    settings = request.app[SETTINGS]
    sid = secrets.token_urlsafe(32)
    skey = _skey(request, sid)
    now = int(time.time())
    redis, index = request.app[REDIS], _user_index(settings, user_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(skey, orjson.dumps({"user_id": user_id, "auth_time": now}), ex=settings.session_ttl_seconds)
        pipe.sadd(index, skey)
        pipe.expire(index, settings.session_ttl_seconds)  # the newest session's lifetime covers the rest
        await pipe.execute()
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        max_age=settings.session_ttl_seconds,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=settings.cookie_secure,
    )
    session = Session(skey, user_id, now)
    request[SESSION] = session
    return session


async def current_session(request: web.Request) -> Session | None:
    if SESSION in request:
        return request[SESSION]  # type: ignore[return-value]
    session = None
    sid = request.cookies.get(SESSION_COOKIE)
    if sid and 20 <= len(sid) <= 100 and sid.isascii():  # ours are ASCII; others never reach Redis
        skey = _skey(request, sid)
        raw = await request.app[REDIS].get(skey)
        if raw:
            data = orjson.loads(raw)
            session = Session(skey, int(data["user_id"]), int(data["auth_time"]))
    request[SESSION] = session
    return session


async def end_session(request: web.Request, response: web.StreamResponse) -> None:
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        await request.app[REDIS].delete(_skey(request, sid))
        response.del_cookie(SESSION_COOKIE, path="/")
    request[SESSION] = None


async def drop_user_sessions_key(request: web.Request, session: Session) -> None:
    await request.app[REDIS].delete(session.key)


U = TypeVar("U")


async def signed_in_user(
    request: web.Request, active_user: Callable[[int], Awaitable[U | None]]
) -> tuple[Session, U] | None:
    """Who is signed in: the one answer for every page and the authorize endpoint. This browser's
    session and its user as ``active_user(user_id)`` reads them from the service's own view of the
    account (None for a missing or no longer active user). A session whose user is gone or not
    active counts as signed out, and its key is dropped (``end_session`` clears the cookie)."""
    session = await current_session(request)
    if session is None:
        return None
    user = await active_user(session.user_id)
    if user is None:
        await drop_user_sessions_key(request, session)
        return None
    return session, user


def _user_index(settings: Settings, user_id: int) -> str:
    return key(settings, "user_sessions", str(user_id))


async def end_user_sessions(redis: aioredis.Redis, settings: Settings, user_id: int) -> int:
    """Log ``user_id`` out everywhere (every browser's session ends); the number of sessions ended."""
    index = _user_index(settings, user_id)
    members = await redis.smembers(index)
    ended = int(await redis.delete(*members)) if members else 0
    await redis.delete(index)
    return ended


# --- CSRF ----------------------------------------------------------------------------------------
def _csrf_for(request: web.Request, cookie: str) -> str:
    mac = hmac.new(request.app[SETTINGS].pepper_bytes, b"csrf:" + cookie.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def csrf_token(request: web.Request) -> str:
    """The form token for this browser; sets the csrf cookie on the response if it is new."""
    cookie = request.cookies.get(CSRF_COOKIE) or request.get(NEW_CSRF_COOKIE)
    if not cookie or len(cookie) > 100 or not cookie.isascii() or not is_clean(cookie, 100):
        cookie = secrets.token_urlsafe(32)
        request[NEW_CSRF_COOKIE] = cookie
    return _csrf_for(request, cookie)


async def set_csrf_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: send the csrf cookie created while rendering this response."""
    cookie = request.get(NEW_CSRF_COOKIE)
    if cookie:
        # Written as a header, not with response.set_cookie(): recent aiohttp (3.14) turns cookies
        # into headers *before* on_response_prepare runs, so a cookie set here would be dropped.
        morsel: SimpleCookie = SimpleCookie()
        morsel[CSRF_COOKIE] = cookie
        attrs = morsel[CSRF_COOKIE]
        attrs["path"] = "/"
        attrs["httponly"] = True
        attrs["samesite"] = "Lax"
        if request.app[SETTINGS].cookie_secure:
            attrs["secure"] = True
        response.headers.add(hdrs.SET_COOKIE, attrs.OutputString())


def check_csrf(request: web.Request, submitted: str | None) -> None:
    """Refuse a form post whose token does not match this browser's csrf cookie (403 page)."""
    cookie = request.cookies.get(CSRF_COOKIE)
    # compare_digest takes ASCII-only str: anything else is simply wrong (params.py), not a 500.
    valid = bool(cookie) and bool(submitted) and f"{cookie}{submitted}".isascii() and is_clean(cookie, 200)
    if not valid or not hmac.compare_digest(_csrf_for(request, str(cookie)), str(submitted)):
        raise PageError(
            403,
            {"zh": "表单已过期", "en": "This form has expired"},
            {
                "zh": "请返回上一页,刷新后重新提交(需要启用 Cookie)。",
                "en": "Go back, reload the page and submit again (cookies must be enabled).",
            },
        )


def enable_csrf(app: web.Application) -> None:
    app.on_response_prepare.append(set_csrf_cookie)
