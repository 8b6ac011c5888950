"""``GET /api/oauth2/authorize`` (RFC 6749 4.1, RFC 7636 PKCE, RFC 9207 ``iss``, OIDC prompt/max_age).

Flow: validate (authrequest.py) -> who is logged in -> decide -> act:

- not logged in: ``prompt=none`` -> ``login_required``; else the login page, then back here;
- a fresh login is needed (``prompt=login``, or ``max_age`` exceeded): ``prompt=none`` ->
  ``login_required``; else the login page;
- no ``prompt=consent``, and either an existing grant that covers the scopes, or
  ``auto_authorize=true`` (allowed globally and for the app) for a *verified* app: a code at once
  (the guide's one-click login). An unverified app's user sees the consent page once; their grant
  then makes later one-click logins skip it (docs/operations.md "App verification");
- else ``prompt=none`` -> ``consent_required``; else the consent page (consent.py).

Forced login without a loop, decided on the server (loginrequest.py): every redirect to the login
page stores the request as a pending login request and sends ``next`` = this same request plus
``login_request=<id>``. The password login marks that pending request with its session and time;
only such a mark, for this session and these parameters, satisfies ``prompt=login``/``max_age``.
"""

from __future__ import annotations

import time
from typing import Literal
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from libs.platform.config import Settings
from libs.platform.web import PG, REDIS, SETTINGS

from . import consent, grants, loginrequest
from .authrequest import AuthorizeError, AuthRequest, parse
from .codes import issue_code
from .identity import SignedIn, drop_dead_session, signed_in
from .responses import error_page, found, to_client

Step = Literal["login", "login_required", "issue", "consent", "consent_required"]


def one_click_allowed(settings: Settings, req: AuthRequest) -> bool:
    """``auto_authorize=true`` may skip the consent page: allowed globally and for the app, and the
    app verified by an operator, unless the operator keeps the guide's permissive behaviour."""
    return (
        req.auto_authorize
        and settings.auto_authorize_enabled
        and req.client_auto_authorize
        and (req.client_verified or settings.auto_authorize_unverified_apps)
    )


async def decide(
    db: asyncpg.Pool, settings: Settings, req: AuthRequest, who: SignedIn | None, fresh: bool, now: int
) -> Step:
    """``fresh``: this session's password login satisfied this very request (loginrequest.py)."""
    silent = "none" in req.prompt
    if who is None:
        return "login_required" if silent else "login"
    if not fresh:
        too_old = req.max_age is not None and now - who.session.auth_time > req.max_age
        if "login" in req.prompt or too_old:
            return "login_required" if silent else "login"
    if "consent" not in req.prompt:
        if one_click_allowed(settings, req):
            return "issue"
        if await grants.covers(db, who.user_id, req.client_id, req.scopes):
            return "issue"
    return "consent_required" if silent else "consent"


async def login_redirect_url(request: web.Request, now: int, reauth: bool) -> str:
    """The login page, with ``next`` = this authorize request pointing at its pending login request."""
    items = [(k, v) for k, v in request.rel_url.query.items() if k != loginrequest.PARAM]
    request_id = await loginrequest.create(request.app[REDIS], request.app[SETTINGS], items, now)
    items.append((loginrequest.PARAM, request_id))
    next_url = request.rel_url.path + "?" + urlencode(items)
    params = {"next": next_url}
    if reauth:
        params["reauth"] = "1"
    return "/login?" + urlencode(params)


async def fresh_login(request: web.Request, who: SignedIn | None) -> bool:
    if who is None:
        return False
    pairs = list(request.rel_url.query.items())
    return (
        await loginrequest.take_fresh_login(request.app[REDIS], request.app[SETTINGS], pairs, who.session) is not None
    )


async def handle_authorize(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    db = request.app[PG]
    try:
        req = await parse(db, request.rel_url.query)
    except AuthorizeError as exc:
        if exc.redirect_uri is None:
            key, kw = exc.page_message
            return await error_page(request, 400, key, **kw)
        return to_client(
            exc.redirect_uri, settings.issuer, exc.state, error=exc.error, error_description=exc.description
        )

    who = await signed_in(request)
    now = int(time.time())
    step = await decide(db, settings, req, who, await fresh_login(request, who), now)
    if step == "issue":
        assert who is not None
        code = await issue_code(db, settings, req, who.user_id, who.session.auth_time)
        return to_client(req.redirect_uri, settings.issuer, req.state, code=code)
    if step == "consent":
        assert who is not None
        request_id = await consent.store(request.app[REDIS], settings, req, who.user_id)
        switch_url = await login_redirect_url(request, now, reauth=False)
        return await consent.render_page(request, req, who, request_id, switch_url)
    if step == "consent_required":
        return to_client(
            req.redirect_uri,
            settings.issuer,
            req.state,
            error="consent_required",
            error_description="the user has not authorized this app for these scopes",
        )
    if step == "login":
        resp = found(await login_redirect_url(request, now, reauth=who is not None))
    else:  # login_required
        resp = to_client(
            req.redirect_uri,
            settings.issuer,
            req.state,
            error="login_required",
            error_description="the user must log in" if who is None else "the user must log in again",
        )
    if who is None:  # a session whose user was disabled no longer counts: end it
        await drop_dead_session(request, resp)
    return resp


def add_routes(app: web.Application) -> None:
    # No HEAD: a HEAD request must never issue a code.
    app.router.add_get("/api/oauth2/authorize", handle_authorize, allow_head=False)
