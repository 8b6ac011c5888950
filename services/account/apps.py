"""OAuth apps (clients) and the developer API that manages them (guide section "2. 创建 OAuth 应用").

A developer sees and changes only their own apps: another developer's app is a 404, never a 403,
so app ids of others cannot be probed. The client secret is shown once and stored as a keyed hash.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from libs.contracts.token import revoke_client
from libs.oauth.events import outbox
from libs.oauth.events.types import ClientDeleted, ClientSecretRotated, ClientUpdated
from libs.oauth.vocabulary import CLIENT_SECRET_PREFIX
from libs.platform.errors import ApiError
from libs.platform.params import object_id
from libs.platform.security import new_token, token_hash
from libs.platform.validation import json_object, text_field
from libs.platform.web import PG, SETTINGS, envelope

from . import cors_origins, store
from .app_rules import TRUST_FIELDS, NewApp, grant_types_from, parse_new_app, redirect_uris_from, trust_fields_from
from .developer_tokens import current_developer

CREATE_FIELDS = {
    "name",
    "description",
    "redirect_uri",
    "redirect_uris",
    "token_endpoint_auth_method",
    "grant_types",
    *TRUST_FIELDS,
}
UPDATE_FIELDS = {"name", "description", "redirect_uri", "redirect_uris", "grant_types", *TRUST_FIELDS}


def new_client_id() -> str:
    return "client_" + secrets.token_hex(16)  # 128 bits from the CSPRNG: public, but unguessable


def app_view(row: asyncpg.Record, client_secret: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "client_id": row["client_id"],
    }
    if client_secret is not None:
        view["client_secret"] = client_secret
    view.update(
        redirect_uri=row["redirect_uris"][0],
        redirect_uris=list(row["redirect_uris"]),
        token_endpoint_auth_method=row["token_endpoint_auth_method"],
        **{name: row[name] for name in TRUST_FIELDS},
        grant_types=list(row["grant_types"]),
        created_time=int(row["created_at"].timestamp()),
        updated_time=int(row["updated_at"].timestamp()),
        previous_secret_expires_time=_previous_secret_expiry(row),
    )
    return view


def _previous_secret_expiry(row: asyncpg.Record) -> int | None:
    """When the secret replaced by the last rotation stops working (unix seconds), None if it already has."""
    expires = row["previous_secret_expires_at"]
    if expires is None or expires <= datetime.now(UTC):
        return None
    return int(expires.timestamp())


def _client_updated(row: asyncpg.Record, change: str) -> ClientUpdated:
    return ClientUpdated(app_id=row["id"], client_id=row["client_id"], change=change)


async def create_app(pool: asyncpg.Pool, pepper: bytes, owner_id: int, new: NewApp, max_apps: int) -> dict[str, Any]:
    client_id = new_client_id()
    secret = new_token(CLIENT_SECRET_PREFIX) if new.token_endpoint_auth_method != "none" else None
    async with pool.acquire() as conn, conn.transaction():
        # Lock the owner so concurrent creates cannot pass the per-developer limit together.
        await store.lock_user(conn, owner_id)
        if await store.count_apps(conn, owner_id) >= max_apps:
            raise ApiError(400, f"you already have {max_apps} apps, the limit; delete one you no longer use")
        values = asdict(new) | {
            "client_id": client_id,
            "client_secret_hash": token_hash(pepper, secret) if secret else None,
        }
        row = await store.insert_app(conn, owner_id, values)
        await outbox.enqueue(conn, _client_updated(row, "created"))
    return app_view(row, client_secret=secret)


async def list_apps(pool: asyncpg.Pool, owner_id: int) -> list[dict[str, Any]]:
    return [app_view(r) for r in await store.apps_of(pool, owner_id)]


async def get_app(pool: asyncpg.Pool, owner_id: int, app_id: int) -> dict[str, Any]:
    row = await store.app_of(pool, owner_id, app_id)
    if row is None:
        raise ApiError(404, "app not found")
    return app_view(row)


async def update_app(pool: asyncpg.Pool, owner_id: int, app_id: int, body: dict[str, Any]) -> dict[str, Any]:
    if not body:
        raise ApiError(400, f"nothing to update; send one or more of: {', '.join(sorted(UPDATE_FIELDS))}")
    # JSON null means "not sent": it never clears the name (which must not be empty).
    name = text_field(body, "name", required=True, min_len=1, max_len=100) if body.get("name") is not None else None
    description = (
        text_field(body, "description", required=False, min_len=0, max_len=1000) if "description" in body else None
    )
    uris = redirect_uris_from(body, required=False)
    trust = trust_fields_from(body, only_sent=True)
    grant_types = grant_types_from(body, required=False)
    async with pool.acquire() as conn, conn.transaction():
        row = await store.update_app(conn, owner_id, app_id, name, description, uris, trust, grant_types)
        if row is None:
            raise ApiError(404, "app not found")
        await outbox.enqueue(conn, _client_updated(row, "updated"))
    return app_view(row)


async def delete_app(pool: asyncpg.Pool, owner_id: int, app_id: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        row = await store.delete_app(conn, owner_id, app_id)
        if row is None:
            raise ApiError(404, "app not found")
        # Its users' grants and tokens go with it (authorization.revoked; libs/contracts/token.py).
        families = await revoke_client(conn, row["client_id"])
        await outbox.enqueue(
            conn, ClientDeleted(app_id=row["id"], client_id=row["client_id"], family_ids=tuple(families))
        )


# How long the replaced secret keeps working after a rotation: none, 1 hour or 24 hours (the
# developer's choice, as GitHub offers), so deployed apps can switch without an outage.
SECRET_GRACE_SECONDS = (0, 3600, 86400)


def parse_grace_seconds(value: object) -> int:
    """The developer API's ``grace_seconds`` (absent: 0, the old secret stops at once)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value not in SECRET_GRACE_SECONDS:
        allowed = ", ".join(str(s) for s in SECRET_GRACE_SECONDS)
        raise ApiError(400, f"grace_seconds must be one of {allowed}")
    return value


async def rotate_secret(
    pool: asyncpg.Pool, pepper: bytes, owner_id: int, app_id: int, grace_seconds: int = 0
) -> dict[str, Any]:
    """A new secret, shown once; the old one keeps working for ``grace_seconds`` (one of
    ``SECRET_GRACE_SECONDS``). ``client.secret_rotated`` makes every instance drop its cached copy."""
    secret = new_token(CLIENT_SECRET_PREFIX)
    async with pool.acquire() as conn, conn.transaction():
        row = await store.set_app_secret(conn, owner_id, app_id, token_hash(pepper, secret), grace_seconds)
        if row is None:
            if await store.app_exists(conn, owner_id, app_id):
                raise ApiError(400, "this app is a public client (token_endpoint_auth_method none) and has no secret")
            raise ApiError(404, "app not found")
        await outbox.enqueue(conn, ClientSecretRotated(app_id=row["id"], client_id=row["client_id"]))
    return app_view(row, client_secret=secret)


async def verified_app_ids(pool: asyncpg.Pool, owner_id: int) -> set[int]:
    """The owner's apps an operator has verified (shown as a badge in the developer console)."""
    return await store.verified_app_ids(pool, owner_id)


async def set_verified(conn: asyncpg.Connection, client_id: str, verified: bool) -> asyncpg.Record | None:
    """The operator's verification of an app (docs/operations.md "App verification"): only verified
    apps may skip the consent page with auto_authorize=true. The client.updated event makes every
    instance drop its cached copy of the app. None when there is no such app."""
    async with conn.transaction():
        row = await store.set_app_verified(conn, client_id, verified)
        if row is not None:
            change = "verified" if verified else "unverified"
            await outbox.enqueue(conn, _client_updated(row, change))
    return row


async def set_internal(conn: asyncpg.Connection, app_id: int, client_id: str, internal: bool) -> None:
    """Flag an app internal (it may use grant_type=client_credentials) or clear the flag
    (``oauthctl app set-internal``), with the client.updated event that drops cached copies."""
    async with conn.transaction():
        await store.set_app_internal(conn, client_id, internal)
        await outbox.enqueue(conn, ClientUpdated(app_id=app_id, client_id=client_id, change="internal"))


# --- handlers ------------------------------------------------------------------------------------
def _app_id(request: web.Request) -> int:
    app_id = object_id(request.match_info["app_id"])
    if app_id is None:
        raise ApiError(404, "app not found")
    return app_id


async def handle_create(request: web.Request) -> web.Response:
    owner = await current_developer(request)
    settings = request.app[SETTINGS]
    new = parse_new_app(await json_object(request, CREATE_FIELDS))
    data = await create_app(request.app[PG], settings.pepper_bytes, owner, new, settings.max_apps_per_developer)
    await cors_origins.refresh(request.app)  # its redirect URIs' origins may now call us (CORS)
    return envelope(data, "应用创建成功")


async def handle_list(request: web.Request) -> web.Response:
    owner = await current_developer(request)
    return envelope(await list_apps(request.app[PG], owner), "获取成功")


async def handle_get(request: web.Request) -> web.Response:
    owner = await current_developer(request)
    return envelope(await get_app(request.app[PG], owner, _app_id(request)), "获取成功")


async def handle_update(request: web.Request) -> web.Response:
    owner = await current_developer(request)
    app_id = _app_id(request)
    body = await json_object(request, UPDATE_FIELDS | {"token_endpoint_auth_method"})
    if "token_endpoint_auth_method" in body:
        raise ApiError(400, "token_endpoint_auth_method cannot be changed; create a new app instead")
    data = await update_app(request.app[PG], owner, app_id, body)
    await cors_origins.refresh(request.app)
    return envelope(data, "应用更新成功")


async def handle_delete(request: web.Request) -> web.Response:
    owner = await current_developer(request)
    await delete_app(request.app[PG], owner, _app_id(request))
    await cors_origins.refresh(request.app)
    return envelope(None, "应用删除成功")


async def handle_rotate(request: web.Request) -> web.Response:
    owner = await current_developer(request)
    settings = request.app[SETTINGS]
    app_id = _app_id(request)
    await get_app(request.app[PG], owner, app_id)  # another developer's app is a 404 whatever the body
    body = await json_object(request, {"grace_seconds"}) if (await request.read()).strip() else {}
    grace = parse_grace_seconds(body.get("grace_seconds"))
    data = await rotate_secret(request.app[PG], settings.pepper_bytes, owner, app_id, grace)
    return envelope(data, "密钥已重置,请妥善保存新的 client_secret")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/oauth_apps", handle_create)
    app.router.add_get("/api/oauth_apps", handle_list)
    app.router.add_get("/api/oauth_apps/{app_id}", handle_get)
    app.router.add_put("/api/oauth_apps/{app_id}", handle_update)
    app.router.add_delete("/api/oauth_apps/{app_id}", handle_delete)
    app.router.add_post("/api/oauth_apps/{app_id}/secret", handle_rotate)
