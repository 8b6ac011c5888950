"""``GET /api/oauth2/authorize`` (RFC 6749 4.1, RFC 7636 PKCE, RFC 9207 ``iss``, OIDC prompt/max_age).

Flow: validate (authrequest.CHECKS) -> who is logged in -> decide (decision.py) -> act. The usual
request (a session needing no fresh login, a consent record covering the scopes or a one-click
login) is answered by one statement that checks the user and the record and stores the code
(``_decide``):

- not logged in: ``prompt=none`` -> ``login_required``; else the login page, then back here;
- a fresh login is needed (``prompt=login``, or ``max_age`` exceeded): ``prompt=none`` ->
  ``login_required``; else the login page;
- no ``prompt=consent``, and either a consent record that covers the scopes, or
  ``auto_authorize=true`` (allowed globally and for the app) for a *verified* app: a code at once
  (the guide's one-click login). An unverified app's user sees the consent page once; their consent record
  then makes later one-click logins skip it (docs/operations.md "App verification");
- else ``prompt=none`` -> ``consent_required``; else the consent page (consent.py).

Forced login without a loop, decided on the server (loginrequest.py): every redirect to the login
page stores the request as a pending login request and sends ``next`` = this same request plus
``login_request=<id>``. The password login marks that pending request with its session and time;
only such a mark, for this session and these parameters, satisfies ``prompt=login``/``max_age``.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from aiohttp import web

from libs.contracts.account import get_client
from libs.oauth.errors import ConsentRequired, LoginRequired
from libs.oauth.sessions import Session, current_session
from libs.platform.web import PG, REDIS, SETTINGS

from . import consent, loginrequest
from .authrequest import AuthRequest, load_client, parse
from .codes import issue_code_at_once
from .decision import OneClickPolicy, Step, consent_step, decide, login_step, one_click_allowed
from .identity import SignedIn, drop_dead_session, signed_in
from .responses import ErrorPage, error_page, found, redirect_error, to_client
from .store import consent_records


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


async def fresh_login(request: web.Request, session: Session | None) -> bool:
    if session is None:
        return False
    pairs = list(request.rel_url.query.items())
    return await loginrequest.take_fresh_login(request.app[REDIS], request.app[SETTINGS], pairs, session) is not None


async def handle_authorize(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    db = request.app[PG]
    try:
        req = await parse(db, request.rel_url.query)  # or ClientRedirectError (responses.py), rendered as raised
    except ErrorPage as exc:  # with a way back to the app when the client_id names one
        back = await load_client(lambda cid: get_client(db, cid), request.rel_url.query)
        return await error_page(request, exc.status, exc.key, back_app=back, **exc.message_args)
    now = int(time.time())
    session = await current_session(request)
    decided = await _decide(request, req, session, await fresh_login(request, session), now)
    if isinstance(decided, str):  # the usual answer: a code at once
        return to_client(req.redirect_uri, settings.issuer, req.state, code=decided)
    who, step = decided
    if who is not None and step in ("issue", "consent"):  # "issue": the code could not be stored: ask
        return await _act_signed_in(request, req, who, now)
    if step == "consent_required":
        return redirect_error(request, req.redirect_uri, req.state, ConsentRequired())
    return await _to_login(request, req, who, step, now)


async def _decide(
    request: web.Request, req: AuthRequest, session: Session | None, fresh: bool, now: int
) -> str | tuple[SignedIn | None, Step]:
    """The code, when it can be issued at once; else who is signed in (an active user) and the
    step (decision.py).

    When the session needs no fresh login and there is no ``prompt=consent``, ONE statement checks
    that the user is still active and that their consent record covers the scopes (or, for a
    one-click login, records the consent), and stores the code (docs/performance.md "authorize in
    one statement"): no separate user and record reads, no rewrite of an unchanged record."""
    if session is not None and login_step(req, session.auth_time, fresh, now) is None and "consent" not in req.prompt:
        return await _at_once(request, req, session, fresh, now)
    who = await signed_in(request)
    auth = (who.user_id, who.session.auth_time) if who else None
    policy = OneClickPolicy.from_settings(request.app[SETTINGS])
    step = await decide(consent_records.Store(request.app[PG]), policy, req, auth, fresh, now)
    if who is not None and step == "issue":  # the same conditions as above, so not reached: kept to its rules
        return await _at_once(request, req, who.session, fresh, now)
    return who, step


async def _at_once(
    request: web.Request, req: AuthRequest, session: Session, fresh: bool, now: int
) -> str | tuple[SignedIn | None, Step]:
    """``_decide``'s one statement (``codes.issue_code_at_once``), which locks the user's row, then
    the consent record: a disable or a revocation committing meanwhile wins (docs/architecture.md
    "Consent records and locks"). The code; else the next step, as ``_decide``."""
    settings = request.app[SETTINGS]
    policy = OneClickPolicy.from_settings(settings)
    one_click = one_click_allowed(policy, req)
    at_once = await issue_code_at_once(
        request.app[PG], settings, req, session.user_id, session.auth_time, one_click=one_click
    )
    if at_once.code is not None:
        return at_once.code
    if at_once.username is None:  # the user is gone or disabled: the session no longer counts
        return None, login_step(req, None, fresh, now) or "login"
    return SignedIn(session, session.user_id, at_once.username), consent_step(policy, req, covered=False)


async def _act_signed_in(request: web.Request, req: AuthRequest, who: SignedIn, now: int) -> web.Response:
    """The consent page (consent.py)."""
    request_id = await consent.store(request.app[REDIS], request.app[SETTINGS], req, who.user_id)
    switch_url = await login_redirect_url(request, now, reauth=False)
    return await consent.render_page(request, req, who, request_id, switch_url)


async def _to_login(request: web.Request, req: AuthRequest, who: SignedIn | None, step: Step, now: int) -> web.Response:
    """``login``: the login page; ``login_required``: the error, to the client."""
    if step == "login":
        resp = found(await login_redirect_url(request, now, reauth=who is not None))
    else:
        error = LoginRequired() if who is None else LoginRequired("the user must log in again")
        resp = redirect_error(request, req.redirect_uri, req.state, error)
    if who is None:  # a session whose user was disabled no longer counts: end it
        await drop_dead_session(request, resp)
    return resp


def add_routes(app: web.Application) -> None:
    # No HEAD: a HEAD request must never issue a code.
    app.router.add_get("/api/oauth2/authorize", handle_authorize, allow_head=False)
