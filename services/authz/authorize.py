"""``GET /api/oauth2/authorize`` (RFC 6749 4.1, RFC 7636 PKCE, RFC 9207 ``iss``, OIDC prompt/max_age).

Flow: validate (authrequest.py) -> who is logged in -> decide -> act:

- not logged in: ``prompt=none`` -> ``login_required``; else the login page, then back here;
- a fresh login is needed (``prompt=login``, or ``max_age`` exceeded): ``prompt=none`` ->
  ``login_required``; else the login page;
- ``auto_authorize=true`` (and allowed globally and for the app), or an existing grant that covers
  the scopes, and no ``prompt=consent``: a code at once (the guide's one-click login);
- else ``prompt=none`` -> ``consent_required``; else the consent page (consent.py).

Forced login without a loop: every redirect to the login page sends ``next`` = this same request
plus ``login_after=<now>`` (unix seconds; any old value replaced). When the browser comes back,
a login counts as fresh, satisfying ``prompt=login`` and ``max_age``, if the session's
``auth_time >= login_after`` and the marker is at most LOGIN_MARKER_WINDOW old. The marker needs no
signature: it can only relax a requirement (prompt=login/max_age) that the same URL's author set,
and an old or future marker is ignored, so a replayed URL asks for the password again.
"""

from __future__ import annotations

import time
from typing import Literal
from urllib.parse import urlencode

import asyncpg
from aiohttp import web

from libs.common.config import Settings
from libs.common.web import PG, REDIS, SETTINGS

from . import consent, grants
from .authrequest import LOGIN_MARKER, AuthorizeError, AuthRequest, parse
from .codes import issue_code
from .identity import SignedIn, drop_dead_session, signed_in
from .responses import error_page, found, to_client

LOGIN_MARKER_WINDOW = 600  # seconds a login_after marker is honoured

Step = Literal["login", "login_required", "issue", "consent", "consent_required"]


def fresh_login(req: AuthRequest, who: SignedIn, now: int) -> bool:
    """Did the user log in after this request sent them to the login page?"""
    marker = req.login_after
    return marker is not None and 0 <= now - marker <= LOGIN_MARKER_WINDOW and who.session.auth_time >= marker


async def decide(db: asyncpg.Pool, settings: Settings, req: AuthRequest, who: SignedIn | None, now: int) -> Step:
    silent = "none" in req.prompt
    if who is None:
        return "login_required" if silent else "login"
    if not fresh_login(req, who, now):
        too_old = req.max_age is not None and now - who.session.auth_time > req.max_age
        if "login" in req.prompt or too_old:
            return "login_required" if silent else "login"
    if "consent" not in req.prompt:
        if req.auto_authorize and settings.auto_authorize_enabled and req.client_auto_authorize:
            return "issue"
        if await grants.covers(db, who.user_id, req.client_id, req.scopes):
            return "issue"
    return "consent_required" if silent else "consent"


def login_redirect_url(request: web.Request, now: int, reauth: bool) -> str:
    """The login page, with ``next`` = this authorize request marked with ``login_after=now``."""
    items = [(k, v) for k, v in request.rel_url.query.items() if k != LOGIN_MARKER]
    items.append((LOGIN_MARKER, str(now)))
    next_url = request.rel_url.path + "?" + urlencode(items)
    params = {"next": next_url}
    if reauth:
        params["reauth"] = "1"
    return "/login?" + urlencode(params)


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
    step = await decide(db, settings, req, who, now)
    if step == "issue":
        assert who is not None
        code = await issue_code(db, settings, req, who.user_id, who.session.auth_time)
        return to_client(req.redirect_uri, settings.issuer, req.state, code=code)
    if step == "consent":
        assert who is not None
        request_id = await consent.store(request.app[REDIS], settings, req, who.user_id)
        return await consent.render_page(request, req, who, request_id)
    if step == "consent_required":
        return to_client(
            req.redirect_uri,
            settings.issuer,
            req.state,
            error="consent_required",
            error_description="the user has not authorized this app for these scopes",
        )
    if step == "login":
        resp = found(login_redirect_url(request, now, reauth=who is not None))
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
