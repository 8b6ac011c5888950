"""The consent step: the page (the authorize endpoint's own response) and ``POST /consent``.

A validated request waiting for the user's answer is kept in Redis under a random id (256 bits,
CONSENT_REQUEST_TTL_SECONDS, default 10 min), bound to the user it was shown to:
``consent:<sha256(id)>`` -> ``{"user_id", "request"}``. The page's form carries the id and the CSRF
token. ``POST /consent`` accepts an id only for the same (still active) user, and only once.

The device flow (device.py, docs/device.md) keeps its pending approvals the same way and shows the
same page (``render_consent``), posting to ``/device/consent``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from multidict import MultiMapping

from libs.oauth.clients import get_client
from libs.oauth.pages import render
from libs.oauth.sessions import CSRF_FIELD, check_csrf
from libs.platform.config import Settings
from libs.platform.params import post_form
from libs.platform.redis import key
from libs.platform.web import PG, REDIS, SETTINGS

from .authrequest import AuthRequest
from .codes import issue_code
from .identity import SignedIn, signed_in
from .responses import error_page, lang_url, to_client

MAX_REQUEST_ID = 100


class ConsentError(Exception):
    def __init__(self, status: int, message_key: str) -> None:
        super().__init__(message_key)
        self.status = status
        self.message_key = message_key


def _rkey(settings: Settings, request_id: str) -> str:
    return key(settings, "consent", hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest())


async def store_pending(redis: aioredis.Redis, settings: Settings, user_id: int, payload: dict[str, Any]) -> str:
    """Keep what a consent page asks about (``payload``) for ``user_id``; return its new id."""
    request_id = secrets.token_urlsafe(32)
    value = orjson.dumps({"user_id": user_id, **payload})
    await redis.set(_rkey(settings, request_id), value, ex=settings.consent_request_ttl_seconds)
    return request_id


async def take_pending(redis: aioredis.Redis, settings: Settings, request_id: str, user_id: int) -> dict[str, Any]:
    """The stored payload, consumed: it must exist, belong to ``user_id``, and not be taken yet."""
    if not request_id or len(request_id) > MAX_REQUEST_ID:
        raise ConsentError(400, "error.request_expired")
    rkey = _rkey(settings, request_id)
    raw = await redis.get(rkey)
    if raw is None:
        raise ConsentError(400, "error.request_expired")
    data: dict[str, Any] = orjson.loads(raw)
    if data["user_id"] != user_id:
        raise ConsentError(403, "error.request_not_yours")
    if await redis.delete(rkey) != 1:  # another submit won the race: single use
        raise ConsentError(400, "error.request_expired")
    return data


async def store(redis: aioredis.Redis, settings: Settings, req: AuthRequest, user_id: int) -> str:
    return await store_pending(redis, settings, user_id, {"request": req.to_json()})


@dataclass(frozen=True)
class ConsentView:
    """What the consent page shows, whichever flow asks: the browser flow (``redirect_host``, where
    the browser goes next) or the device flow (``device``: the user code, the device's
    User-Agent and IP, docs/device.md). ``form_action`` is where Allow / Deny is posted."""

    app_name: str
    app_description: str
    verified: bool
    scopes: tuple[str, ...]
    redirect_host: str | None = None
    device: dict[str, str] | None = None
    form_action: str = "/consent"


async def render_consent(
    request: web.Request, view: ConsentView, who: SignedIn, request_id: str, switch_url: str
) -> web.Response:
    """The one consent page (consent.html): the app (verified or not), the scopes in plain words,
    Allow / Deny, and ``switch_url`` (the login page that resumes this request as another user)."""
    return await render(
        request,
        "consent.html",
        app_name=view.app_name,
        app_description=view.app_description,
        verified=view.verified,
        scopes=view.scopes,
        redirect_host=view.redirect_host,
        device=view.device,
        form_action=view.form_action,
        username=who.username,
        request_id=request_id,
        switch_url=switch_url,
        lang_url=lang_url(request),
    )


async def render_page(
    request: web.Request, req: AuthRequest, who: SignedIn, request_id: str, switch_url: str
) -> web.Response:
    """The consent page of an authorization request (the authorize endpoint's own response)."""
    view = ConsentView(
        app_name=req.client_name,
        app_description=req.client_description,
        verified=req.client_verified,
        scopes=req.scopes,
        redirect_host=urlsplit(req.redirect_uri).netloc,
    )
    return await render_consent(request, view, who, request_id, switch_url)


def _field(form: MultiMapping[object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Answer:
    """A submitted Allow / Deny: the decision, who answered, and the pending request it answers."""

    allow: bool
    who: SignedIn
    payload: dict[str, Any]


async def read_answer(
    request: web.Request, expired_key: str = "error.request_expired", logged_out_key: str = "error.not_logged_in"
) -> Answer | web.Response:
    """The consent form's post (browser and device flows): the CSRF token, the decision, a signed-in
    user, and the pending request (consumed); or the error page to answer with."""
    form = await post_form(request)
    check_csrf(request, _field(form, CSRF_FIELD))
    decision = _field(form, "decision")
    if decision not in ("allow", "deny"):
        return await error_page(request, 400, "error.bad_form")
    who = await signed_in(request)
    if who is None:
        return await error_page(request, 401, logged_out_key)
    try:
        payload = await take_pending(request.app[REDIS], request.app[SETTINGS], _field(form, "request"), who.user_id)
    except ConsentError as exc:
        return await error_page(request, exc.status, expired_key if exc.status == 400 else exc.message_key)
    return Answer(decision == "allow", who, payload)


async def post_consent(request: web.Request) -> web.Response:
    answer = await read_answer(request)
    if isinstance(answer, web.Response):
        return answer
    if "request" not in answer.payload:  # a device flow's pending approval is not answered here
        return await error_page(request, 400, "error.request_expired")
    req = AuthRequest.from_json(answer.payload["request"])
    settings = request.app[SETTINGS]
    # The app may have been deleted or its redirect URIs changed while the page was open.
    client = await get_client(request.app[PG], req.client_id)
    if client is None or not client.has_redirect_uri(req.redirect_uri):
        return await error_page(request, 400, "error.unknown_client")
    if not answer.allow:
        return to_client(
            req.redirect_uri,
            settings.issuer,
            req.state,
            error="access_denied",
            error_description="the user denied the request",
        )
    code = await issue_code(request.app[PG], settings, req, answer.who.user_id, answer.who.session.auth_time)
    return to_client(req.redirect_uri, settings.issuer, req.state, code=code)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/consent", post_consent)
