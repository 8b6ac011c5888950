"""The developer console (``/developer``) and ``POST /api/user/developer_token``.

Pages for what the developer API does (apps: create, edit, rotate secret, delete; developer tokens:
create, revoke), for the logged-in browser. The rules are those of ``apps`` and
``developer_tokens``: this module only parses forms and renders. Secrets and tokens are shown once
by post/redirect/get: the post stores them in a server-side one-time flash (``flash``) and
redirects to ``/developer``, which takes it; never in a URL, never on a re-submittable POST result.
Destructive actions (rotate, delete, revoke) first answer with a confirm page
(``libs/oauth/confirm.py``); rotating lets the developer keep the old secret valid for a grace period.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDictProxy

from libs.oauth.confirm import Choice, Confirmation, confirm_page, confirmed
from libs.oauth.pages import render, translator
from libs.oauth.sessions import CSRF_FIELD, check_csrf
from libs.oauth.vocabulary import BROWSER_GRANT_TYPES, DEVICE_CODE_GRANT
from libs.platform.errors import ApiError, PageError
from libs.platform.lang import pick_lang
from libs.platform.params import object_id, post_form
from libs.platform.web import PG, SETTINGS, envelope

from . import apps, cors_origins, store, strings_safety  # noqa: F401 - strings_safety registers texts
from .app_rules import TRUST_FIELDS
from .browser import field, posted_form, redirect, require_user, session_user
from .console_errors import console_error
from .developer_tokens import (
    issue_developer_token,
    list_developer_tokens,
    revoke_developer_token,
    validate_token_name,
)
from .flash import put_flash, take_flash
from .spending import spend_totals
from .users import User

NOTICES = ("app_deleted", "token_revoked")
EMPTY_FORM = {
    "name": "",
    "description": "",
    "redirect_uris": "",
    "token_endpoint_auth_method": "client_secret_post",
    **dict.fromkeys(TRUST_FIELDS, ""),
    "device_grant": "",
}


def _when_ts(ts: int | None) -> str:
    """A moment in a one-time message's text (UTC: the message is text, not a page's <time> tag)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else ""


def app_body(form: MultiDictProxy[Any], *, creating: bool) -> dict[str, Any]:
    """The developer API's JSON body for an app form (one redirect URI per line)."""
    body: dict[str, Any] = {
        "name": field(form, "name", 1000),
        "description": field(form, "description", 5000),
        "redirect_uris": [line.strip() for line in field(form, "redirect_uris", 30000).splitlines() if line.strip()],
    }
    for name in TRUST_FIELDS:  # optional: an empty field clears it
        body[name] = field(form, name, 3000).strip()
    if creating:
        body["token_endpoint_auth_method"] = field(form, "token_endpoint_auth_method", 50) or "client_secret_post"
    # The checkbox: the device grant on or off (the browser flow's grant types are always on).
    body["grant_types"] = [*BROWSER_GRANT_TYPES, *((DEVICE_CODE_GRANT,) if field(form, "device_grant", 10) else ())]
    return body


async def console(
    request: web.Request,
    user: User,
    *,
    status: int = 200,
    error: str = "",
    notice: str = "",
    shown_secret: dict[str, Any] | None = None,
    shown_token: str = "",
    form: dict[str, str] | None = None,
) -> web.Response:
    pool = request.app[PG]
    tokens = [
        {"id": r["id"], "name": r["name"], "created": r["created_at"], "last_used": r["last_used_at"]}
        for r in await list_developer_tokens(pool, user.id)
    ]
    app_list = await apps.list_apps(pool, user.id)
    for app in app_list:
        app["previous_secret_until"] = _when_ts(app["previous_secret_expires_time"])
    return await render(
        request,
        "developer.html",
        status=status,
        apps=app_list,
        verified_ids=await apps.verified_app_ids(pool, user.id),
        spend_totals=await spend_totals(pool, user.id, request.app[SETTINGS].quota_per_unit),
        tokens=tokens,
        error=error,
        notice=notice,
        shown_secret=shown_secret,
        shown_token=shown_token,
        form=form or EMPTY_FORM,
        device_grant=DEVICE_CODE_GRANT,
    )


def _t(request: web.Request):  # type: ignore[no-untyped-def]
    return translator(pick_lang(request))


# --- page handlers -------------------------------------------------------------------------------
async def handle_console(request: web.Request) -> web.Response:
    user = await require_user(request)
    key = request.query.get("notice", "")
    notice = _t(request)(f"acct.dev.notice.{key}") if key in NOTICES else ""
    flash = await take_flash(request) or {}
    return await console(
        request,
        user,
        notice=flash.get("notice") or notice,
        shown_secret=flash.get("secret"),
        shown_token=flash.get("token", ""),
    )


async def _show_once(request: web.Request, **message: Any) -> web.Response:
    """Post/redirect/get: what is shown once goes to the session's flash, the browser to the console."""
    await put_flash(request, message)
    return redirect("/developer")


async def handle_create_app(request: web.Request) -> web.Response:
    user = await require_user(request, back="/developer")
    form = await posted_form(request)
    settings = request.app[SETTINGS]
    try:
        new = apps.parse_new_app(app_body(form, creating=True))
        data = await apps.create_app(
            request.app[PG], settings.pepper_bytes, user.id, new, settings.max_apps_per_developer
        )
    except ApiError as exc:
        kept = {k: field(form, k, 30000) for k in EMPTY_FORM}
        return await console(
            request, user, status=exc.status, error=console_error(exc.message, pick_lang(request)), form=kept
        )
    await cors_origins.refresh(request.app)  # the new redirect URIs' origins may call us (CORS)
    created = _t(request)("acct.dev.app_created", name=data["name"])
    if not data.get("client_secret"):  # a public client (PKCE) has no secret to show
        return await _show_once(request, notice=created)
    shown = {"client_id": data["client_id"], "client_secret": data["client_secret"], "message": created}
    return await _show_once(request, secret=shown)


async def handle_update_app(request: web.Request) -> web.Response:
    user = await require_user(request, back="/developer")
    form = await posted_form(request)
    try:
        await apps.update_app(request.app[PG], user.id, apps._app_id(request), app_body(form, creating=False))
    except ApiError as exc:
        return await console(request, user, status=exc.status, error=console_error(exc.message, pick_lang(request)))
    await cors_origins.refresh(request.app)
    return await console(request, user, notice=_t(request)("acct.dev.app_updated"))


async def own_app(request: web.Request, user: User) -> dict[str, Any]:
    """The developer's app named in the path (404 page when it is not theirs)."""
    row = await store.app_of(request.app[PG], user.id, apps._app_id(request))
    if row is None:
        t = _t(request)
        raise PageError(404, t("acct.dev.app_missing"), t("acct.dev.app_missing_hint"))
    return apps.app_view(row)


async def _confirm_app_action(request: web.Request, user: User, action: str, **extra: Any) -> web.Response:
    """The confirm page of ``action`` (``delete`` or ``secret``) on the developer's app in the path."""
    app, t = await own_app(request, user), _t(request)
    words = {
        "delete": ("acct.dev.confirm_delete", "acct.dev.delete"),
        "secret": ("acct.dev.confirm_rotate", "acct.dev.rotate"),
    }
    text, button = words[action]
    return await confirm_page(
        request,
        Confirmation(
            title=t(f"{text}_title", name=app["name"]),
            message=t(text, name=app["name"], client_id=app["client_id"]),
            action=f"/developer/apps/{app['id']}/{action}",
            button=t(button),
            back="/developer",
            **extra,
        ),
    )


async def _confirm_delete(request: web.Request, user: User) -> web.Response:
    return await _confirm_app_action(request, user, "delete")


async def _confirm_rotate(request: web.Request, user: User) -> web.Response:
    """Rotating asks how long the old secret keeps working (default: 1 hour)."""
    t = _t(request)
    choices = tuple(
        Choice(str(seconds), t(f"acct.dev.grace.{seconds}"), checked=seconds == 3600)
        for seconds in apps.SECRET_GRACE_SECONDS
    )
    return await _confirm_app_action(
        request,
        user,
        "secret",
        choice_name="grace_seconds",
        choice_legend=t("acct.dev.grace_legend"),
        choices=choices,
    )


async def _confirm_revoke_token(request: web.Request, user: User) -> web.Response:
    t = _t(request)
    token_id = object_id(request.match_info["token_id"])
    token = next((r for r in await list_developer_tokens(request.app[PG], user.id) if r["id"] == token_id), None)
    if token is None:
        raise PageError(404, t("acct.dev.token_missing"), t("acct.dev.app_missing_hint"))
    return await confirm_page(
        request,
        Confirmation(
            title=t("acct.dev.confirm_revoke_token_title"),
            message=t("acct.dev.confirm_revoke_token", name=token["name"], id=token["id"]),
            action=f"/developer/tokens/{token['id']}/revoke",
            button=t("acct.dev.revoke"),
            back="/developer",
        ),
    )


async def handle_confirm_delete(request: web.Request) -> web.Response:
    return await _confirm_delete(request, await require_user(request))


async def handle_confirm_rotate(request: web.Request) -> web.Response:
    return await _confirm_rotate(request, await require_user(request))


async def handle_confirm_revoke_token(request: web.Request) -> web.Response:
    return await _confirm_revoke_token(request, await require_user(request))


async def handle_delete_app(request: web.Request) -> web.Response:
    user = await require_user(request, back="/developer")
    if not confirmed(await posted_form(request)):
        return await _confirm_delete(request, user)
    try:
        await apps.delete_app(request.app[PG], user.id, apps._app_id(request))
    except ApiError as exc:
        return await console(request, user, status=exc.status, error=console_error(exc.message, pick_lang(request)))
    await cors_origins.refresh(request.app)
    return redirect("/developer?notice=app_deleted")


def _grace_choice(form: MultiDictProxy[Any]) -> int:
    """The posted grace period, one of ``apps.SECRET_GRACE_SECONDS`` (anything else: none)."""
    raw = field(form, "grace_seconds", 10)
    return next((seconds for seconds in apps.SECRET_GRACE_SECONDS if raw == str(seconds)), 0)


async def handle_rotate_secret(request: web.Request) -> web.Response:
    user = await require_user(request, back="/developer")
    form = await posted_form(request)
    if not confirmed(form):
        return await _confirm_rotate(request, user)
    settings, t = request.app[SETTINGS], _t(request)
    grace = _grace_choice(form)
    try:
        data = await apps.rotate_secret(request.app[PG], settings.pepper_bytes, user.id, apps._app_id(request), grace)
    except ApiError as exc:
        return await console(request, user, status=exc.status, error=console_error(exc.message, pick_lang(request)))
    until = _when_ts(data["previous_secret_expires_time"])
    message = (
        t("acct.dev.secret_rotated_grace", name=data["name"], until=until)
        if until
        else t("acct.dev.secret_rotated_now", name=data["name"])
    )
    shown = {"client_id": data["client_id"], "client_secret": data["client_secret"], "message": message}
    return await _show_once(request, secret=shown)


async def handle_create_token(request: web.Request) -> web.Response:
    user = await require_user(request, back="/developer")
    form = await posted_form(request)
    settings = request.app[SETTINGS]
    try:
        token, _ = await issue_developer_token(
            request.app[PG], settings.pepper_bytes, user.id, field(form, "name", 1000) or "console"
        )
    except ApiError as exc:
        return await console(request, user, status=exc.status, error=console_error(exc.message, pick_lang(request)))
    return await _show_once(request, token=token)


async def handle_revoke_token(request: web.Request) -> web.Response:
    user = await require_user(request, back="/developer")
    if not confirmed(await posted_form(request)):
        return await _confirm_revoke_token(request, user)
    token_id = object_id(request.match_info["token_id"])
    if token_id is None or not await revoke_developer_token(request.app[PG], token_id, user.id):
        return await console(
            request, user, status=404, error=console_error("developer token not found", pick_lang(request))
        )
    return redirect("/developer?notice=token_revoked")


# --- session API ---------------------------------------------------------------------------------
async def _token_name(request: web.Request) -> tuple[object, str | None]:
    """(name, form csrf token) from a JSON or form body (both optional)."""
    if request.content_type == "application/json":
        raw = await request.read()
        if not raw.strip():
            return "", None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict) or set(body) - {"name", CSRF_FIELD}:
            raise ApiError(400, "request body must be a JSON object with an optional name")
        return body.get("name"), body.get(CSRF_FIELD)
    form = await post_form(request)
    name, csrf = form.get("name"), form.get(CSRF_FIELD)
    return (name if isinstance(name, str) else ""), (csrf if isinstance(csrf, str) else None)


async def handle_api_developer_token(request: web.Request) -> web.Response:
    user = await session_user(request)
    if user is None:
        raise ApiError(401, "not logged in: log in at /login first (this endpoint uses the browser session)")
    name, form_csrf = await _token_name(request)
    try:
        check_csrf(request, request.headers.get("X-CSRF-Token") or form_csrf)
    except PageError:
        raise ApiError(
            403, "missing or wrong CSRF token: send the page's csrf_token in the X-CSRF-Token header"
        ) from None
    label = validate_token_name(name)  # type checked before the default applies: {} is no name
    token, record = await issue_developer_token(
        request.app[PG], request.app[SETTINGS].pepper_bytes, user.id, label or "api"
    )
    data = {"id": record.id, "name": record.name, "token": token, "created_time": int(record.created_at.timestamp())}
    response = envelope(data, "开发者令牌已创建,请妥善保存(只显示一次)")
    response.headers["Cache-Control"] = "no-store"
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/developer", handle_console)
    app.router.add_post("/developer/apps", handle_create_app)
    app.router.add_post("/developer/apps/{app_id}", handle_update_app)
    app.router.add_get("/developer/apps/{app_id}/delete", handle_confirm_delete)
    app.router.add_post("/developer/apps/{app_id}/delete", handle_delete_app)
    app.router.add_get("/developer/apps/{app_id}/secret", handle_confirm_rotate)
    app.router.add_post("/developer/apps/{app_id}/secret", handle_rotate_secret)
    app.router.add_post("/developer/tokens", handle_create_token)
    app.router.add_get("/developer/tokens/{token_id}/revoke", handle_confirm_revoke_token)
    app.router.add_post("/developer/tokens/{token_id}/revoke", handle_revoke_token)
    app.router.add_post("/api/user/developer_token", handle_api_developer_token)
