"""The user center: ``/user`` (profile and balance) and ``/user/topup`` (redeem a top-up code).

Authorized apps (``/user/authorizations``) belong to the authz service; this page links to them.
"""

from __future__ import annotations

from aiohttp import web

from libs.oauth.pages import render, translator
from libs.platform.lang import pick_lang
from libs.platform.web import PG, SETTINGS

from .browser import account_view, field, money, posted_form, require_user
from .topup import TopupError, redeem
from .users import User, get_user


async def handle_user(request: web.Request) -> web.Response:
    user = await require_user(request)
    return await render(request, "user.html", account=account_view(request, user))


async def topup_page(
    request: web.Request, user: User, *, status: int = 200, error: str = "", success: str = ""
) -> web.Response:
    return await render(
        request, "topup.html", status=status, account=account_view(request, user), error=error, success=success
    )


async def handle_topup_get(request: web.Request) -> web.Response:
    return await topup_page(request, await require_user(request))


async def handle_topup_post(request: web.Request) -> web.Response:
    user = await require_user(request, back="/user/topup")
    form = await posted_form(request)
    t = translator(pick_lang(request))
    try:
        done = await redeem(request.app[PG], request.app[SETTINGS].pepper_bytes, user.id, field(form, "code", 1000))
    except TopupError as exc:
        return await topup_page(request, user, status=400, error=t(f"acct.topup.err.{exc.reason}"))
    fresh = await get_user(request.app[PG], user.id) or user
    success = t(
        "acct.topup.ok", amount=money(request, done.amount), balance=money(request, done.quota - done.used_quota)
    )
    return await topup_page(request, fresh, success=success)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/user", handle_user)
    app.router.add_get("/user/topup", handle_topup_get)
    app.router.add_post("/user/topup", handle_topup_post)
