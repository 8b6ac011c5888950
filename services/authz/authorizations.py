"""Authorized apps in the user center: the page ``/user/authorizations`` (works without JavaScript)
and its JSON API.

- ``GET /user/authorizations``: the apps the logged-in user authorized (name, scopes in plain
  words, first and last authorization), each with a "revoke" form (POST, CSRF token).
- ``POST /user/authorizations/{client_id}/revoke``: first the confirm page (``libs/oauth/confirm.py``,
  also at GET), then, posted again with ``confirm=1``, revoke and back to the page (303).
- ``GET /api/user/authorizations``: the same list as JSON, in the guide's envelope
  ``{success, message, data}``; ``data`` is a list of ``{client_id, name, description, scopes,
  first_authorized_time, last_authorized_time}`` (unix seconds). The response's ``X-CSRF-Token``
  header is the token for the DELETE below.
- ``DELETE /api/user/authorizations/{client_id}``: revoke; needs the session cookie and the
  ``X-CSRF-Token`` header (the page's form token). 404 when there is nothing to revoke.

Revoking removes the consent record (the next authorization asks for consent again), expires unused codes,
revokes every token family of the pair (refresh tokens stop working; access tokens fail on every
instance) and writes ``authorization.revoked`` in the same transaction
(libs/oauth/revocation.py); the revocations go to Redis before the answer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from multidict import MultiMapping

from libs.contracts.account import get_client, list_consents_with_apps
from libs.contracts.token import revoke_families
from libs.oauth.clients import Client
from libs.oauth.confirm import Confirmation, confirm_page, confirmed
from libs.oauth.events import outbox
from libs.oauth.events.types import AuthorizationRevoked
from libs.oauth.pages import add_strings, render, translator
from libs.oauth.revocation import mark_revoked_safely
from libs.oauth.sessions import CSRF_FIELD, check_csrf, csrf_token
from libs.oauth.vocabulary import NO_STORE
from libs.platform.config import Settings
from libs.platform.errors import ApiError, PageError
from libs.platform.lang import pick_lang
from libs.platform.params import is_clean, post_form
from libs.platform.validation import has_control_chars
from libs.platform.web import PG, REDIS, SETTINGS, envelope

from .consent import shared_items
from .identity import signed_in
from .responses import found
from .spend_limits import spend_notices, spend_views, utc_now
from .store import consent_records

CSRF_HEADER = "X-CSRF-Token"
PAGE = "/user/authorizations"

add_strings(
    {
        "zh": {
            "authz.apps.title": "已授权的应用",
            "authz.apps.intro": "这些应用可以代表你访问平台账户。撤销后,它们的登录状态会立即失效,再次使用时需要重新授权。",
            "authz.apps.empty": "你还没有授权任何应用。",
            "authz.apps.app": "应用",
            "authz.apps.scopes": "权限",
            "authz.apps.first": "首次授权",
            "authz.apps.last": "最近授权",
            "authz.apps.revoke": "撤销授权",
            "authz.apps.revoke_confirm": "撤销后该应用将无法继续访问你的账户。",
            "authz.apps.revoked": "已撤销对“{app}”的授权。",
            "authz.apps.nothing": "没有可撤销的授权(可能已被撤销)。",
            "authz.apps.confirm_title": "撤销对“{app}”的授权?",
            "authz.apps.confirm": "“{app}”({client_id})将立即退出登录,无法再访问你的账户;下次使用时需要重新授权。",
            "authz.apps.client_id": "应用 ID",
            "authz.apps.host": "网站",
        },
        "en": {
            "authz.apps.title": "Authorized apps",
            "authz.apps.intro": "These apps can access your account on your behalf. Revoking one signs it out at once; it will have to ask for your permission again.",
            "authz.apps.empty": "You have not authorized any app yet.",
            "authz.apps.app": "App",
            "authz.apps.scopes": "Access",
            "authz.apps.first": "First authorized",
            "authz.apps.last": "Last authorized",
            "authz.apps.revoke": "Revoke",
            "authz.apps.revoke_confirm": "The app will no longer be able to access your account.",
            "authz.apps.revoked": "Access for “{app}” was revoked.",
            "authz.apps.nothing": "There was nothing to revoke (it may have been revoked already).",
            "authz.apps.confirm_title": "Revoke access for “{app}”?",
            "authz.apps.confirm": "“{app}” ({client_id}) will be signed out at once and can no longer access your account; it will have to ask for your permission again.",
            "authz.apps.client_id": "App ID",
            "authz.apps.host": "Site",
        },
    }
)


# --- the model -----------------------------------------------------------------------------------
async def list_authorizations(db: asyncpg.Pool, user_id: int) -> list[dict[str, Any]]:
    rows = await list_consents_with_apps(db, user_id)
    return [
        {
            "client_id": r["client_id"],
            "name": r["name"],
            "description": r["description"],
            "scopes": list(r["scopes"]),
            "first_authorized_time": int(r["first_authorized_at"].timestamp()),
            "last_authorized_time": int(r["last_authorized_at"].timestamp()),
        }
        for r in rows
    ]


async def revoke_authorization(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, user_id: int, client_id: str
) -> list[str] | None:
    """Revoke ``user_id``'s authorization of ``client_id``; the revoked family ids, or None if there
    was neither a consent record nor a live token to revoke."""
    async with pool.acquire() as conn, conn.transaction():
        consented = await consent_records.delete(conn, user_id, client_id)
        families = await revoke_families(conn, user_id=user_id, client_id=client_id, reason="authorization_revoked")
        if not consented and not families:
            return None
        await outbox.enqueue(
            conn,
            AuthorizationRevoked(
                user_id=user_id, client_id=client_id, family_ids=tuple(families), reason="user_revoked"
            ),
        )
    await mark_revoked_safely(redis, settings, families=families)
    return families


def _client_id(request: web.Request) -> str:
    client_id = request.match_info["client_id"]
    if not client_id or len(client_id) > 100 or has_control_chars(client_id):
        raise web.HTTPNotFound()
    return client_id


def _hosts(client: Client | None) -> str:
    """Where the app lives, as its redirect URIs name it (apps with one name told apart)."""
    if client is None:
        return ""
    return ", ".join(dict.fromkeys(urlsplit(uri).netloc for uri in client.redirect_uris))


# --- the page ------------------------------------------------------------------------------------
async def handle_page(request: web.Request) -> web.Response:
    who = await signed_in(request)
    if who is None:
        return found("/login?next=" + PAGE)
    apps = await list_authorizations(request.app[PG], who.user_id)
    for app in apps:
        client = await get_client(request.app[PG], app["client_id"])  # the process's cache
        app["host"] = _hosts(client)
        app["logo_url"] = client.logo_url if client else ""
        app["verified"] = client.verified if client else False
        app["shares"] = shared_items(app["scopes"])
    spend = await spend_views(request.app[PG], who.user_id, request.app[SETTINGS].quota_per_unit, utc_now())
    for app in apps:
        app["spend"] = spend.get(app["client_id"])
    notice = ""
    revoked = request.query.get("revoked")
    if revoked and is_clean(revoked, 100):  # only a notice: a value that could name no app is ignored
        client = await get_client(request.app[PG], revoked)
        notice = client.name if client is not None else revoked
    return await render(
        request,
        "authorizations.html",
        apps=apps,
        username=who.username,
        revoked_app=notice,
        nothing=request.query.get("nothing") == "1",
        **await spend_notices(request),
    )


def _field(form: MultiMapping[object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


async def _confirm_revoke(request: web.Request, client_id: str) -> web.Response:
    t = translator(pick_lang(request))
    client = await get_client(request.app[PG], client_id)
    name = client.name if client is not None else client_id
    return await confirm_page(
        request,
        Confirmation(
            title=t("authz.apps.confirm_title", app=name),
            message=t("authz.apps.confirm", app=name, client_id=client_id),
            action=f"{PAGE}/{quote(client_id, safe='')}/revoke",
            button=t("authz.apps.revoke"),
            back=PAGE,
        ),
    )


async def handle_revoke_confirm(request: web.Request) -> web.Response:
    if await signed_in(request) is None:
        return found("/login?next=" + PAGE)
    return await _confirm_revoke(request, _client_id(request))


async def handle_revoke_form(request: web.Request) -> web.Response:
    form = await post_form(request)
    check_csrf(request, _field(form, CSRF_FIELD))
    who = await signed_in(request)
    if who is None:
        return found("/login?next=" + PAGE)
    client_id = _client_id(request)
    if not confirmed(form):
        return await _confirm_revoke(request, client_id)
    families = await revoke_authorization(
        request.app[PG], request.app[REDIS], request.app[SETTINGS], who.user_id, client_id
    )
    query = "nothing=1" if families is None else "revoked=" + client_id
    return web.Response(status=303, headers={"Location": f"{PAGE}?{query}", **NO_STORE})


# --- the API -------------------------------------------------------------------------------------
async def _api_user(request: web.Request) -> int:
    who = await signed_in(request)
    if who is None:
        raise ApiError(401, "login required: this API uses the platform's login session (cookie)")
    return who.user_id


async def handle_api_list(request: web.Request) -> web.Response:
    user_id = await _api_user(request)
    resp = envelope(await list_authorizations(request.app[PG], user_id), "获取成功")
    resp.headers.update(NO_STORE)
    resp.headers[CSRF_HEADER] = csrf_token(request)
    return resp


async def handle_api_revoke(request: web.Request) -> web.Response:
    try:
        check_csrf(request, request.headers.get(CSRF_HEADER))
    except PageError:
        raise ApiError(403, f"missing or invalid {CSRF_HEADER} header (use the page's CSRF token)") from None
    user_id = await _api_user(request)
    client_id = _client_id(request)
    families = await revoke_authorization(
        request.app[PG], request.app[REDIS], request.app[SETTINGS], user_id, client_id
    )
    if families is None:
        raise ApiError(404, "no authorization of this app to revoke")
    resp = envelope({"client_id": client_id, "revoked_token_families": len(families)}, "授权已撤销")
    resp.headers.update(NO_STORE)
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_get(PAGE, handle_page)
    app.router.add_get(PAGE + "/{client_id}/revoke", handle_revoke_confirm)
    app.router.add_post(PAGE + "/{client_id}/revoke", handle_revoke_form)
    app.router.add_get("/api/user/authorizations", handle_api_list)
    app.router.add_delete("/api/user/authorizations/{client_id}", handle_api_revoke)
