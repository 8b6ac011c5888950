"""``/register``: create an account, log in, go back to ``next`` (a local path only).

Sign-ups are limited per client IP (REGISTER_MAX_PER_IP per REGISTER_WINDOW_SECONDS, a Redis
counter ``signup:ip:<ip>`` shared by every instance): a slot is taken before the account is
created (so concurrent posts cannot pass the limit together) and given back if the form is refused.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from libs.oauth.pages import render, translator
from libs.oauth.sessions import start_session
from libs.platform.clientip import client_ip
from libs.platform.config import Settings
from libs.platform.lang import pick_lang
from libs.platform.redis import key
from libs.platform.web import PG, REDIS, SETTINGS

from .browser import field, posted_form, redirect, safe_next, session_user
from .emails import normalize_email
from .users import User, UserError, create_user, validate_new_user


class PasswordMismatch(UserError):
    def __init__(self) -> None:
        super().__init__("password_confirm", "the two passwords do not match")


async def register_user(pool: asyncpg.Pool, username: str, email: str, password: str, confirm: str) -> User:
    """The rule: valid fields (users.validate_new_user: the password policy too), the same password
    twice, a free name and an email that is neither taken nor a look-alike of a taken one."""
    email = normalize_email(email)
    validate_new_user(username, email, password)
    if password != confirm:
        raise PasswordMismatch()
    return await create_user(pool, username, email, password)


async def take_signup_slot(redis: aioredis.Redis, settings: Settings, ip: str) -> int:
    """Count a sign-up from ``ip``; 0 when it is within the limit, else the seconds to wait."""
    rkey = key(settings, "signup", "ip", ip)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(rkey)
        pipe.expire(rkey, settings.register_window_seconds, nx=True)
        pipe.ttl(rkey)
        count, _, ttl = await pipe.execute()
    if count <= settings.register_max_per_ip:
        return 0
    await redis.decr(rkey)  # a refused sign-up does not count
    return ttl if ttl > 0 else settings.register_window_seconds


async def give_back_signup_slot(redis: aioredis.Redis, settings: Settings, ip: str) -> None:
    await redis.decr(key(settings, "signup", "ip", ip))


def user_error_text(request: web.Request, exc: UserError) -> str:
    lang = pick_lang(request)
    t = translator(lang)
    if isinstance(exc, PasswordMismatch):
        return t("acct.register.mismatch")
    if lang == "en":
        return exc.message
    key = f"acct.user_error.{exc.field}.{exc.code}"
    text = t(key)
    return exc.message if text == key else text


async def show_form(
    request: web.Request,
    next_path: str,
    *,
    status: int = 200,
    username: str = "",
    email: str = "",
    error: str = "",
    error_field: str = "",
) -> web.Response:
    return await render(
        request,
        "register.html",
        status=status,
        next=next_path,
        username=username,
        email=email,
        error=error,
        error_field=error_field,
        login_href="/login?next=" + quote(next_path, safe="/"),
        # the header's language switch keeps where the user is going
        lang_url="?" + urlencode({"next": next_path, "lang": "en" if pick_lang(request) == "zh" else "zh"}),
    )


# --- handlers ------------------------------------------------------------------------------------
async def handle_get(request: web.Request) -> web.Response:
    next_path = safe_next(request.query.get("next"))
    if await session_user(request) is not None:
        return redirect(next_path, 302)
    return await show_form(request, next_path)


async def handle_post(request: web.Request) -> web.Response:
    form = await posted_form(request)
    next_path = safe_next(field(form, "next"))
    username = field(form, "username", 100).strip()
    email = field(form, "email", 300).strip()
    redis, settings, ip = request.app[REDIS], request.app[SETTINGS], client_ip(request)
    wait = await take_signup_slot(redis, settings, ip)
    if wait:
        text = translator(pick_lang(request))("acct.register.too_many", minutes=str(max(1, -(-wait // 60))))
        response = await show_form(request, next_path, status=429, username=username, email=email, error=text)
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        user = await register_user(
            request.app[PG], username, email, field(form, "password", 200), field(form, "password_confirm", 200)
        )
    except UserError as exc:
        await give_back_signup_slot(redis, settings, ip)
        return await show_form(
            request,
            next_path,
            status=400,
            username=username,
            email=email,
            error=user_error_text(request, exc),
            error_field=exc.field,
        )
    response = redirect(next_path, 302)
    await start_session(request, response, user.id)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/register", handle_get)
    app.router.add_post("/register", handle_post)
