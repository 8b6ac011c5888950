"""What the account pages share: the logged-in user, login redirects, safe ``next`` targets, forms."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from libs.oauth.pages import safe_next
from libs.oauth.sessions import CSRF_FIELD, check_csrf, signed_in_user
from libs.platform.params import post_form
from libs.platform.web import PG, SETTINGS

from .balance import format_money
from .users import User, get_user


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(safe_next(next_path), safe="/")


async def session_user(request: web.Request) -> User | None:
    """The active user of this browser's login session, if any (``sessions.signed_in_user``: the
    session of a disabled or deleted account ends, so the login page does not treat the browser as
    logged in and send it straight back here)."""

    async def active_user(user_id: int) -> User | None:
        user = await get_user(request.app[PG], user_id)
        return user if user is not None and user.active else None

    found = await signed_in_user(request, active_user)
    return found[1] if found is not None else None


async def require_user(request: web.Request, back: str | None = None) -> User:
    """The logged-in user, else a redirect to the login page that comes back to ``back`` (default:
    this page; form posts name the page the form is on)."""
    user = await session_user(request)
    if user is None:
        raise web.HTTPFound(login_url(back or request.path_qs))
    return user


async def posted_form(request: web.Request) -> MultiDictProxy[str]:
    """The posted form, after the CSRF check (403 page on a missing or wrong token)."""
    form = await post_form(request)
    token = form.get(CSRF_FIELD)
    check_csrf(request, token if isinstance(token, str) else None)
    return form  # type: ignore[return-value]


def field(form: MultiDictProxy[Any], name: str, max_len: int = 5000) -> str:
    value = form.get(name, "")
    return value[:max_len] if isinstance(value, str) else ""


def redirect(location: str, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={"Location": location, "Cache-Control": "no-store"})


def money(request: web.Request, amount: int) -> str:
    """``amount`` quota units as the pages show money: "$750.00" (CURRENCY_SYMBOL, CURRENCY_DECIMALS)."""
    s = request.app[SETTINGS]
    return format_money(amount, s.quota_per_unit, s.currency_symbol, s.currency_decimals)


def account_view(request: web.Request, user: User) -> dict[str, Any]:
    """How the pages show a user: money with its currency (never raw quota units), the sign-up time
    (a <time> the browser shows in its own time zone)."""
    return {
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "balance": money(request, user.quota - user.used_quota),
        "quota": money(request, user.quota),
        "used_quota": money(request, user.used_quota),
        "created_at": user.created_at,
    }
