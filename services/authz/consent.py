"""The consent step: the page (the authorize endpoint's own response) and ``POST /consent``.

A validated request waiting for the user's answer is kept in Redis under a random id (256 bits,
CONSENT_REQUEST_TTL_SECONDS, default 10 min), bound to the user it was shown to:
``consent:<sha256(id)>`` -> ``{"user_id", "request"}``. The page's form carries the id and the CSRF
token. ``POST /consent`` accepts an id only for the same (still active) user, and only once.

That rule (``keep_payload``, ``take_payload``) works over the ``ConsentRequests`` protocol, tested
against an in-memory fake (tests/unit/domain/test_authz_consent_requests.py);
``RedisConsentRequests`` is the real store. The device flow (device.py, docs/device.md) keeps its
pending approvals the same way (``{"user_id", "device_id"}``) and shows the same page
(``render_consent``), posting to ``/device/consent``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from multidict import MultiMapping

from libs.contracts.account import get_client
from libs.oauth.clients import Client
from libs.oauth.errors import AccessDenied
from libs.oauth.pages import render
from libs.oauth.sessions import CSRF_FIELD, check_csrf
from libs.oauth.vocabulary import SPEND_SCOPE
from libs.platform.config import Settings
from libs.platform.params import post_form
from libs.platform.redis import key
from libs.platform.web import PG, REDIS, SETTINGS

from .authrequest import AuthRequest
from .codes import issue_code
from .identity import SignedIn, signed_in
from .responses import ErrorPage, error_page, lang_url, redirect_error, to_client
from .spend_limits import chosen_limit, consent_context, spend_form_problem

MAX_REQUEST_ID = 100


class ConsentRequests(Protocol):
    """Where pending consent pages wait for the user's answer (Redis: ``RedisConsentRequests``)."""

    async def put(self, request_id: str, user_id: int, payload: dict[str, Any]) -> None:
        """Store one (it expires after CONSENT_REQUEST_TTL_SECONDS)."""

    async def get(self, request_id: str) -> tuple[int, dict[str, Any]] | None:
        """The user it was shown to and what it asks about, if it is still there."""

    async def remove(self, request_id: str) -> bool:
        """Delete it; True only for the one call that did (single use under concurrent submits)."""


class RedisConsentRequests:
    """``consent:<sha256(id)>`` -> ``{"user_id", **payload}`` (the module docstring)."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def put(self, request_id: str, user_id: int, payload: dict[str, Any]) -> None:
        value = orjson.dumps({"user_id": user_id, **payload})
        await self.redis.set(_rkey(self.settings, request_id), value, ex=self.settings.consent_request_ttl_seconds)

    async def get(self, request_id: str) -> tuple[int, dict[str, Any]] | None:
        raw = await self.redis.get(_rkey(self.settings, request_id))
        if raw is None:
            return None
        data: dict[str, Any] = orjson.loads(raw)
        return data.pop("user_id"), data

    async def remove(self, request_id: str) -> bool:
        return bool(await self.redis.delete(_rkey(self.settings, request_id)) == 1)


def _rkey(settings: Settings, request_id: str) -> str:
    return key(settings, "consent", hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest())


async def keep_payload(requests: ConsentRequests, user_id: int, payload: dict[str, Any]) -> str:
    """Keep what a consent page shown to ``user_id`` asks about under a new random id; return the id."""
    request_id = secrets.token_urlsafe(32)
    await requests.put(request_id, user_id, payload)
    return request_id


async def take_payload(requests: ConsentRequests, request_id: str, user_id: int) -> dict[str, Any]:
    """The stored payload, consumed: it must exist, belong to ``user_id``, and not be taken yet."""
    if not request_id or len(request_id) > MAX_REQUEST_ID:
        raise ErrorPage(400, "error.request_expired")
    data = await requests.get(request_id)
    if data is None:
        raise ErrorPage(400, "error.request_expired")
    owner, payload = data
    if owner != user_id:
        raise ErrorPage(403, "error.request_not_yours")
    if not await requests.remove(request_id):  # another submit won the race: single use
        raise ErrorPage(400, "error.request_expired")
    return payload


async def keep(requests: ConsentRequests, req: AuthRequest, user_id: int) -> str:
    """Keep ``req``, shown to ``user_id``, under a new random id; return the id."""
    return await keep_payload(requests, user_id, {"request": req.to_json()})


async def take_from(requests: ConsentRequests, request_id: str, user_id: int) -> AuthRequest:
    """The stored authorization request, consumed (``take_payload``); a device flow's pending
    approval is not one."""
    payload = await take_payload(requests, request_id, user_id)
    if "request" not in payload:
        raise ErrorPage(400, "error.request_expired")
    return AuthRequest.from_json(payload["request"])


async def store(redis: aioredis.Redis, settings: Settings, req: AuthRequest, user_id: int) -> str:
    return await keep(RedisConsentRequests(redis, settings), req, user_id)


async def store_pending(redis: aioredis.Redis, settings: Settings, user_id: int, payload: dict[str, Any]) -> str:
    """Keep what a consent page asks about (``payload``) for ``user_id``; return its new id."""
    return await keep_payload(RedisConsentRequests(redis, settings), user_id, payload)


# What each scope shares, in the order the page lists it; a thing two scopes share is listed once
# ("profile" and "email" both share the email address).
SCOPE_SHARES: dict[str, tuple[str, ...]] = {
    "openid": ("identity",),
    "profile": ("username", "email"),
    "email": ("email",),
    "balance": ("balance",),
}


def shared_items(scopes: tuple[str, ...] | list[str]) -> list[str]:
    """The things the app will read, each once, in scope order (unknown scopes: themselves)."""
    items: list[str] = []
    for scope in scopes:
        for item in SCOPE_SHARES.get(scope, (scope,)):
            if item not in items:
                items.append(item)
    return items


def app_card(client: Client | None, name: str, description: str) -> dict[str, str]:
    """What the page shows about the app: the stored trust fields (empty when the app has just
    gone: the answer will then be refused), with its name and description."""
    fields = ("logo_url", "developer_name", "homepage_url", "privacy_url", "terms_url")
    card = {f: getattr(client, f) if client else "" for f in fields}
    return card | {"name": name, "description": description}


@dataclass(frozen=True)
class ConsentView:
    """What the consent page shows, whichever flow asks: the app with its trust fields (``app``,
    ``app_card``), the browser flow's ``redirect_host`` (where the browser goes next) or the device
    flow's ``device`` (the user code, the device's User-Agent and IP, docs/device.md), and
    ``extra`` sections' context (the spending-limit chooser). ``form_action`` is where Allow / Deny
    is posted."""

    app: dict[str, str]
    verified: bool
    scopes: tuple[str, ...]
    redirect_host: str | None = None
    device: dict[str, str] | None = None
    form_action: str = "/consent"
    extra: dict[str, Any] = field(default_factory=dict)


async def render_consent(
    request: web.Request, view: ConsentView, who: SignedIn, request_id: str, switch_url: str
) -> web.Response:
    """The one consent page (consent.html, docs/architecture.md "Pages"): the app with its trust
    signals (logo, developer, homepage, privacy and terms links, verified or not), what will be
    shared, the redirect host or the device, Allow / Deny, and ``switch_url`` (the login page that
    resumes this request as another user)."""
    return await render(
        request,
        "consent.html",
        app=view.app,
        verified=view.verified,
        scopes=view.scopes,
        shares=shared_items(view.scopes),
        redirect_host=view.redirect_host,
        device=view.device,
        form_action=view.form_action,
        username=who.username,
        request_id=request_id,
        switch_url=switch_url,
        lang_url=lang_url(request),
        **view.extra,
    )


async def render_page(
    request: web.Request, req: AuthRequest, who: SignedIn, request_id: str, switch_url: str
) -> web.Response:
    """The consent page of an authorization request (the authorize endpoint's own response)."""
    client = await get_client(request.app[PG], req.client_id)
    view = ConsentView(
        app=app_card(client, req.client_name, req.client_description),
        verified=req.client_verified,
        scopes=req.scopes,
        redirect_host=urlsplit(req.redirect_uri).netloc,
        extra=consent_context(req, request.app[SETTINGS].quota_per_unit),
    )
    return await render_consent(request, view, who, request_id, switch_url)


def _field(form: MultiMapping[object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Answer:
    """A submitted Allow / Deny: the decision, who answered, the pending request it answers, and
    the form (for the sections a flow adds, e.g. the spending limit)."""

    allow: bool
    who: SignedIn
    payload: dict[str, Any]
    form: MultiMapping[Any]


# Checks a flow runs on the form before the pending request is used up (so the browser's Back
# button and a corrected value still find it): the error key of the page to answer with, or None.
FormCheck = Callable[[MultiMapping[Any], bool], str | None]


async def read_answer(
    request: web.Request,
    expired_key: str = "error.request_expired",
    logged_out_key: str = "error.not_logged_in",
    check_form: FormCheck | None = None,
) -> Answer | web.Response:
    """The consent form's post (browser and device flows): the CSRF token, the decision, a signed-in
    user, ``check_form``, and the pending request (consumed); or the error page to answer with."""
    form = await post_form(request)
    check_csrf(request, _field(form, CSRF_FIELD))
    decision = _field(form, "decision")
    if decision not in ("allow", "deny"):
        return await error_page(request, 400, "error.bad_form")
    who = await signed_in(request)
    if who is None:
        return await error_page(request, 401, logged_out_key)
    problem = check_form(form, decision == "allow") if check_form is not None else None
    if problem is not None:
        return await error_page(request, 400, problem)
    requests = RedisConsentRequests(request.app[REDIS], request.app[SETTINGS])
    try:
        payload = await take_payload(requests, _field(form, "request"), who.user_id)
    except ErrorPage as exc:
        return await error_page(request, exc.status, expired_key if exc.status == 400 else exc.key)
    return Answer(decision == "allow", who, payload, form)


async def post_consent(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    per_unit = settings.quota_per_unit

    answer = await read_answer(request, check_form=lambda form, allow: spend_form_problem(form, allow, per_unit))
    if isinstance(answer, web.Response):
        return answer
    if "request" not in answer.payload:  # a device flow's pending approval is not answered here
        return await error_page(request, 400, "error.request_expired")
    req = AuthRequest.from_json(answer.payload["request"])
    # The app may have been deleted or its redirect URIs changed while the page was open.
    client = await get_client(request.app[PG], req.client_id)
    if client is None or not client.has_redirect_uri(req.redirect_uri):
        return await error_page(request, 400, "error.unknown_client", back_app=client)
    if not answer.allow:
        return redirect_error(request, req.redirect_uri, req.state, AccessDenied("the user denied the request"))
    spend = chosen_limit(answer.form, per_unit) if SPEND_SCOPE in req.scopes else None
    if SPEND_SCOPE in req.scopes and spend is None:  # a form without the page's limit block
        return await error_page(request, 400, "spend.bad_amount")
    who = answer.who
    code = await issue_code(request.app[PG], settings, req, who.user_id, who.session.auth_time, spend=spend)
    if code is None:  # the user was disabled meanwhile (the statement waited for it): logged out now
        return await error_page(request, 401, "error.not_logged_in")
    return to_client(req.redirect_uri, settings.issuer, req.state, code=code)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/consent", post_consent)
