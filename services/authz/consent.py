"""The consent step: the page (the authorize endpoint's own response) and ``POST /consent``.

A validated request waiting for the user's answer is kept in Redis under a random id (256 bits,
CONSENT_REQUEST_TTL_SECONDS, default 10 min), bound to the user it was shown to:
``consent:<sha256(id)>`` -> ``{"user_id", "request"}``. The page's form carries the id and the CSRF
token. ``POST /consent`` accepts an id only for the same (still active) user, and only once.

That rule (``keep``, ``take_from``) works over the ``ConsentRequests`` protocol, tested against an
in-memory fake (tests/unit/domain/test_authz_consent_requests.py); ``RedisConsentRequests`` is the
real store, and ``store`` / ``take`` are what the handlers call.
"""

from __future__ import annotations

import hashlib
import secrets
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
from .spend_limits import chosen_limit, consent_context

MAX_REQUEST_ID = 100


class ConsentRequests(Protocol):
    """Where validated requests wait for the user's answer (Redis: ``RedisConsentRequests``)."""

    async def put(self, request_id: str, user_id: int, request: dict[str, Any]) -> None:
        """Store one (it expires after CONSENT_REQUEST_TTL_SECONDS)."""

    async def get(self, request_id: str) -> tuple[int, dict[str, Any]] | None:
        """The user it was shown to and the request, if it is still there."""

    async def remove(self, request_id: str) -> bool:
        """Delete it; True only for the one call that did (single use under concurrent submits)."""


class RedisConsentRequests:
    """``consent:<sha256(id)>`` -> ``{"user_id", "request"}`` (the module docstring)."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def put(self, request_id: str, user_id: int, request: dict[str, Any]) -> None:
        value = orjson.dumps({"user_id": user_id, "request": request})
        await self.redis.set(_rkey(self.settings, request_id), value, ex=self.settings.consent_request_ttl_seconds)

    async def get(self, request_id: str) -> tuple[int, dict[str, Any]] | None:
        raw = await self.redis.get(_rkey(self.settings, request_id))
        if raw is None:
            return None
        data = orjson.loads(raw)
        return data["user_id"], data["request"]

    async def remove(self, request_id: str) -> bool:
        return bool(await self.redis.delete(_rkey(self.settings, request_id)) == 1)


def _rkey(settings: Settings, request_id: str) -> str:
    return key(settings, "consent", hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).hexdigest())


async def keep(requests: ConsentRequests, req: AuthRequest, user_id: int) -> str:
    """Keep ``req``, shown to ``user_id``, under a new random id; return the id."""
    request_id = secrets.token_urlsafe(32)
    await requests.put(request_id, user_id, req.to_json())
    return request_id


async def take_from(requests: ConsentRequests, request_id: str, user_id: int) -> AuthRequest:
    """The stored request, consumed: it must exist, belong to ``user_id``, and not be taken yet."""
    if not request_id or len(request_id) > MAX_REQUEST_ID:
        raise ErrorPage(400, "error.request_expired")
    data = await requests.get(request_id)
    if data is None:
        raise ErrorPage(400, "error.request_expired")
    owner, stored = data
    if owner != user_id:
        raise ErrorPage(403, "error.request_not_yours")
    if not await requests.remove(request_id):  # another submit won the race: single use
        raise ErrorPage(400, "error.request_expired")
    return AuthRequest.from_json(stored)


async def store(redis: aioredis.Redis, settings: Settings, req: AuthRequest, user_id: int) -> str:
    return await keep(RedisConsentRequests(redis, settings), req, user_id)


async def take(redis: aioredis.Redis, settings: Settings, request_id: str, user_id: int) -> AuthRequest:
    """The stored request, consumed: it must exist, belong to ``user_id``, and not be taken yet."""
    return await take_from(RedisConsentRequests(redis, settings), request_id, user_id)


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


def app_card(client: Client | None, req: AuthRequest) -> dict[str, str]:
    """What the page shows about the app: the stored trust fields, or what the request carries when
    the app has just gone (the answer will then be refused)."""
    fields = ("logo_url", "developer_name", "homepage_url", "privacy_url", "terms_url")
    card = {f: getattr(client, f) if client else "" for f in fields}
    return card | {"name": req.client_name, "description": req.client_description}


async def render_page(
    request: web.Request, req: AuthRequest, who: SignedIn, request_id: str, switch_url: str
) -> web.Response:
    """The consent page (docs/architecture.md "Pages"): the app with its trust signals (logo,
    developer, homepage, privacy and terms links, verified or not), what will be shared, the
    redirect host, Allow / Deny, and ``switch_url`` (the login page that resumes this request as
    another user)."""
    client = await get_client(request.app[PG], req.client_id)
    return await render(
        request,
        "consent.html",
        app=app_card(client, req),
        verified=req.client_verified,
        scopes=req.scopes,
        shares=shared_items(req.scopes),
        redirect_host=urlsplit(req.redirect_uri).netloc,
        username=who.username,
        request_id=request_id,
        switch_url=switch_url,
        lang_url=lang_url(request),
        **consent_context(req, request.app[SETTINGS].quota_per_unit),
    )


def _field(form: MultiMapping[object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


async def post_consent(request: web.Request) -> web.Response:
    form = await post_form(request)
    check_csrf(request, _field(form, CSRF_FIELD))
    decision = _field(form, "decision")
    if decision not in ("allow", "deny"):
        return await error_page(request, 400, "error.bad_form")
    who = await signed_in(request)
    if who is None:
        return await error_page(request, 401, "error.not_logged_in")
    settings = request.app[SETTINGS]
    # The limit the user chose (docs/spending.md), checked before the request is taken, so that the
    # browser's Back button and a corrected amount still find it.
    spend = chosen_limit(form, settings.quota_per_unit)
    if decision == "allow" and "spend_amount" in form and spend is None:
        return await error_page(request, 400, "spend.bad_amount")
    req = await take(request.app[REDIS], settings, _field(form, "request"), who.user_id)  # or ErrorPage
    # The app may have been deleted or its redirect URIs changed while the page was open.
    client = await get_client(request.app[PG], req.client_id)
    if client is None or not client.has_redirect_uri(req.redirect_uri):
        return await error_page(request, 400, "error.unknown_client", back_app=client)
    if decision == "deny":
        return redirect_error(request, req.redirect_uri, req.state, AccessDenied("the user denied the request"))
    if SPEND_SCOPE not in req.scopes:
        spend = None
    elif spend is None:  # a form without the page's limit block
        return await error_page(request, 400, "spend.bad_amount")
    code = await issue_code(request.app[PG], settings, req, who.user_id, who.session.auth_time, spend=spend)
    return to_client(req.redirect_uri, settings.issuer, req.state, code=code)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/consent", post_consent)
