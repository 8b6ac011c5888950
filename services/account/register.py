"""``/register``: create an account, log in, go back to ``next`` (a local path only)."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import asyncpg
from aiohttp import web

from libs.common.pages import pick_lang, render, translator
from libs.common.sessions import start_session
from libs.common.web import PG

from .browser import field, posted_form, redirect, safe_next, session_user
from .users import User, UserError, create_user, validate_new_user


class PasswordMismatch(UserError):
    def __init__(self) -> None:
        super().__init__("password_confirm", "the two passwords do not match")


async def register_user(pool: asyncpg.Pool, username: str, email: str, password: str, confirm: str) -> User:
    """The rule: valid fields (users.validate_new_user), the same password twice, a free name and email."""
    validate_new_user(username, email, password)
    if password != confirm:
        raise PasswordMismatch()
    return await create_user(pool, username, email, password)


def user_error_text(request: web.Request, exc: UserError) -> str:
    lang = pick_lang(request)
    t = translator(lang)
    if isinstance(exc, PasswordMismatch):
        return t("acct.register.mismatch")
    if lang == "en":
        return exc.message
    key = f"acct.user_error.{exc.field}.{'taken' if exc.message.endswith('taken') else 'invalid'}"
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
    try:
        user = await register_user(
            request.app[PG], username, email, field(form, "password", 200), field(form, "password_confirm", 200)
        )
    except UserError as exc:
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
