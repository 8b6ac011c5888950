"""Forgot password by email (docs/operations.md "Accounts"):

- ``GET/POST /password/forgot``: the user gives their email. Whatever it is, the answer is the
  same redirect to ``/password/forgot?sent=1`` (no account enumeration); the email goes out in the
  background so the answer takes as long either way. Limited per client IP (429) and per account
  (silently no more emails).
- The email (zh or en, the page's language) links to ``/password/reset?token=...``: 256 random
  bits, stored only as a keyed hash (``password_reset_tokens``), usable once, expiring after
  ``PASSWORD_RESET_TTL_SECONDS``. The query string never reaches our logs (libs/platform/web.py),
  and the page sends ``Referrer-Policy: no-referrer``.
- ``POST /password/reset``: a new password under the usual policy (``passwords``), twice. In one
  transaction: the password changes, every pending reset token of the user is used up and, when
  the box is ticked, every app authorization and token family is revoked. Then every login
  session of the user ends (``libs/oauth/sessions.end_user_sessions``).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from libs.contracts.authz import delete_user_consents
from libs.contracts.token import revoke_families
from libs.oauth.events import outbox
from libs.oauth.events.types import AuthorizationRevoked, UserUpdated
from libs.oauth.pages import render, translator
from libs.oauth.revocation import mark_revoked_safely
from libs.oauth.sessions import end_user_sessions
from libs.platform.clientip import client_ip
from libs.platform.config import Settings
from libs.platform.lang import pick_lang
from libs.platform.params import is_clean
from libs.platform.redis import key
from libs.platform.security import hash_password, new_token, token_hash
from libs.platform.web import PG, REDIS, SETTINGS

from . import mailer, store, strings_safety  # noqa: F401 - strings_safety registers the texts
from .browser import field, posted_form, redirect
from .emails import normalize_email
from .passwords import password_problem
from .users import is_active

RESET_TOKEN_PREFIX = "pwreset"
MAX_TOKEN_CHARS = 100
NO_REFERRER = {"Referrer-Policy": "no-referrer"}


# --- the rules -----------------------------------------------------------------------------------
async def count_attempt(redis: aioredis.Redis, settings: Settings, who: str, limit: int) -> int:
    """Count one request by ``who`` in the window; 0 while within ``limit``, else the seconds to wait."""
    rkey = key(settings, "pwreset", who)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(rkey)
        pipe.expire(rkey, settings.password_reset_window_seconds, nx=True)
        pipe.ttl(rkey)
        count, _, ttl = await pipe.execute()
    if count <= limit:
        return 0
    return ttl if ttl > 0 else settings.password_reset_window_seconds


def reset_email(settings: Settings, lang: str, username: str, link: str) -> tuple[str, str]:
    """(subject, text) of the reset email in ``lang``."""
    t = translator(lang)
    minutes = str(settings.password_reset_ttl_seconds // 60)
    return t("acct.reset.mail_subject"), t("acct.reset.mail_body", username=username, link=link, minutes=minutes)


async def request_reset(
    pool: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, email: str, lang: str
) -> str | None:
    """Mail a reset link to the active account with this email, if there is one and it is within
    its limit. Returns the token that was mailed (for the caller's tests), None when none was."""
    # Text that could be no stored address (control characters, lone surrogates, too long) is
    # answered like an unknown one, never looked up (docs/api.md "Input rules").
    known = 3 <= len(email) <= 254 and is_clean(email, 254)
    row = await store.user_by_email(pool, normalize_email(email)) if known else None
    if row is None or not is_active(row["status"]):
        return None
    if await count_attempt(redis, settings, f"user:{row['id']}", settings.password_reset_max_per_account):
        return None
    token = new_token(RESET_TOKEN_PREFIX)
    await store.insert_reset_token(
        pool, row["id"], token_hash(settings.pepper_bytes, token), settings.password_reset_ttl_seconds
    )
    link = f"{settings.public_base_url}/password/reset?token={token}&lang={lang}"
    subject, text = reset_email(settings, lang, row["username"], link)
    mailer.send_in_background(settings, mailer.build_message(settings, row["email"], subject, text))
    return token


@dataclass(frozen=True)
class ResetTarget:
    user_id: int
    username: str
    email: str


def _clean_token(token: str) -> str | None:
    return token if token.startswith(RESET_TOKEN_PREFIX + "_") and is_clean(token, MAX_TOKEN_CHARS) else None


async def reset_target(pool: asyncpg.Pool, pepper: bytes, token: str) -> ResetTarget | None:
    """The active user whose usable reset token this is, else None (unknown, used or expired)."""
    clean = _clean_token(token)
    row = await store.usable_reset_token(pool, token_hash(pepper, clean)) if clean else None
    if row is None or not is_active(row["status"]):
        return None
    return ResetTarget(row["user_id"], row["username"], row["email"])


async def reset_password(
    pool: asyncpg.Pool, settings: Settings, token: str, password_hash: str, *, revoke_apps: bool
) -> tuple[int, list[str]] | None:
    """Use the token once: new password, every pending link of the user used up, optionally every
    app authorization revoked, one transaction. (user id, revoked families), or None if the token
    is no longer usable (used by a concurrent request, or expired meanwhile)."""
    clean = _clean_token(token)
    if clean is None:
        return None
    async with pool.acquire() as conn, conn.transaction():
        row = await store.usable_reset_token(conn, token_hash(settings.pepper_bytes, clean), lock=True)
        if row is None or not is_active(row["status"]):
            return None
        user_id = row["user_id"]
        await store.set_password_hash(conn, user_id, password_hash)
        await store.use_reset_tokens(conn, user_id)
        families: list[str] = []
        if revoke_apps:
            families = await revoke_families(conn, user_id=user_id, reason="password_reset")
            await delete_user_consents(conn, user_id)
            await outbox.enqueue(
                conn,
                AuthorizationRevoked(
                    user_id=user_id, client_id=None, family_ids=tuple(families), reason="password_reset"
                ),
            )
        await outbox.enqueue(conn, UserUpdated(user_id=user_id, fields=("password",)))
    return user_id, families


# --- handlers ------------------------------------------------------------------------------------
async def handle_forgot_get(request: web.Request) -> web.Response:
    return await render(request, "password_forgot.html", sent=request.query.get("sent") == "1", error="")


async def handle_forgot_post(request: web.Request) -> web.Response:
    form = await posted_form(request)
    redis, settings, lang = request.app[REDIS], request.app[SETTINGS], pick_lang(request)
    wait = await count_attempt(redis, settings, f"ip:{client_ip(request)}", settings.password_reset_max_per_ip)
    if wait:
        error = translator(lang)("acct.reset.too_many", minutes=str(max(1, -(-wait // 60))))
        response = await render(request, "password_forgot.html", status=429, sent=False, error=error)
        response.headers["Retry-After"] = str(wait)
        return response
    await request_reset(request.app[PG], redis, settings, field(form, "email", 300).strip(), lang)
    return redirect("/password/forgot?sent=1")  # the same answer whether or not the account exists


async def _reset_form(request: web.Request, token: str, *, status: int = 200, error: str = "") -> web.Response:
    target = await reset_target(request.app[PG], request.app[SETTINGS].pepper_bytes, token)
    response = await render(
        request,
        "password_reset.html",
        status=status if target else 400,
        valid=target is not None,
        token=token if target else "",
        username=target.username if target else "",
        error=error,
        lang_url="?" + "lang=" + ("en" if pick_lang(request) == "zh" else "zh"),
    )
    response.headers.update(NO_REFERRER)
    return response


async def handle_reset_get(request: web.Request) -> web.Response:
    return await _reset_form(request, request.query.get("token", ""))


async def handle_reset_post(request: web.Request) -> web.Response:
    form = await posted_form(request)
    pool, settings = request.app[PG], request.app[SETTINGS]
    t = translator(pick_lang(request))
    token, password = field(form, "token", MAX_TOKEN_CHARS + 1), field(form, "password", 200)
    target = await reset_target(pool, settings.pepper_bytes, token)
    if target is None:
        return await _reset_form(request, token)
    problem = password_problem(password, target.username, target.email)
    if problem:
        return await _reset_form(request, token, status=400, error=t(f"acct.user_error.password.{problem}"))
    if password != field(form, "password_confirm", 200):
        return await _reset_form(request, token, status=400, error=t("acct.register.mismatch"))
    done = await reset_password(pool, settings, token, await hash_password(password), revoke_apps="revoke_apps" in form)
    if done is None:
        return await _reset_form(request, token)
    user_id, families = done
    await end_user_sessions(request.app[REDIS], settings, user_id)
    await mark_revoked_safely(request.app[REDIS], settings, families=families)
    response = redirect("/password/reset/done")
    response.del_cookie("sid", path="/")
    return response


async def handle_reset_done(request: web.Request) -> web.Response:
    return await render(request, "password_done.html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/password/forgot", handle_forgot_get)
    app.router.add_post("/password/forgot", handle_forgot_post)
    app.router.add_get("/password/reset", handle_reset_get)
    app.router.add_post("/password/reset", handle_reset_post)
    app.router.add_get("/password/reset/done", handle_reset_done)
