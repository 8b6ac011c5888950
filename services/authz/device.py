"""``/device``: where a user approves a device authorization request (RFC 8628 3.3; docs/device.md).

- ``GET /device[?user_code=XXXX-XXXX]``: signed in, the form to type (or, coming from
  ``verification_uri_complete``, confirm) the user code; not signed in, the login page, which
  comes back here (``next``).
- ``POST /device`` (CSRF): the code is looked up in its normal form (case-, dash- and
  space-insensitive, libs/oauth/user_codes.py). A live, unanswered request shows the SAME consent
  page as the browser flow (consent.render_consent), with the app, the scopes, and the device: the
  user code to compare with the one on the device's screen (RFC 8628 5.4), its User-Agent and IP.
- ``POST /device/consent`` (CSRF): Allow approves the request and records the consent (table
  ``grants``, so the app shows in the user's authorizations and can be revoked there) in one
  transaction, the user's row locked first (a user disabled meanwhile: nothing is recorded, the
  expired-login page); Deny denies it. The device's next poll gets its tokens or
  ``access_denied``.

Guessing user codes (RFC 8628 5.1) is limited in Redis, shared by every instance: a wrong or
expired code counts against the login session (DEVICE_MAX_FAILURES_PER_SESSION) and the client IP
(DEVICE_MAX_FAILURES_PER_IP) for DEVICE_FAILURE_WINDOW_SECONDS; past either, 429 until the window
ends. Keys: ``devicefail:sess:<sha256(session key)>`` and ``devicefail:ip:<ip>``.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from multidict import MultiMapping

from libs.contracts.account import get_client
from libs.contracts.authz import answer_device_code
from libs.oauth.pages import render
from libs.oauth.sessions import CSRF_FIELD, check_csrf
from libs.oauth.user_codes import MAX_INPUT, normalize, shown
from libs.oauth.vocabulary import DEVICE_CODE_GRANT, SPEND_SCOPE
from libs.platform.clientip import client_ip
from libs.platform.config import Settings
from libs.platform.params import post_form
from libs.platform.redis import key
from libs.platform.security import token_hash
from libs.platform.web import PG, REDIS, SETTINGS

from . import consent
from .identity import SignedIn, drop_dead_session, signed_in
from .responses import ErrorPage, error_page, found, lang_url
from .spend_limits import chosen_limit, record_limit, spend_chooser, spend_form_problem
from .store import consent_records, device_codes

PATH = "/device"
CONSENT_PATH = "/device/consent"


def _field(form: MultiMapping[object], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def device_url(typed: str = "") -> str:
    """/device, with the user code (in its display form when it is one) to come back to."""
    code = normalize(typed)
    return PATH + ("?" + urlencode({"user_code": shown(code)}) if code else "")


async def _to_login(request: web.Request, typed: str = "") -> web.Response:
    resp = found("/login?" + urlencode({"next": device_url(typed)}))
    await drop_dead_session(request, resp)
    return resp


# --- guess limits ----------------------------------------------------------------------------------
def _fail_keys(settings: Settings, who: SignedIn, ip: str) -> tuple[str, str]:
    session = hashlib.sha256(who.session.key.encode()).hexdigest()
    return key(settings, "devicefail", "sess", session), key(settings, "devicefail", "ip", ip)


async def blocked_for(redis: aioredis.Redis, settings: Settings, keys: tuple[str, str]) -> int:
    """Seconds until this session and IP may try a code again (0: now)."""
    async with redis.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.get(k)
            pipe.ttl(k)
        sess_n, sess_ttl, ip_n, ip_ttl = await pipe.execute()
    waits = [
        ttl if ttl > 0 else settings.device_failure_window_seconds
        for n, ttl, limit in (
            (sess_n, sess_ttl, settings.device_max_failures_per_session),
            (ip_n, ip_ttl, settings.device_max_failures_per_ip),
        )
        if n is not None and int(n) >= limit
    ]
    return max(waits, default=0)


async def record_failure(redis: aioredis.Redis, settings: Settings, keys: tuple[str, str]) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        for k in keys:
            pipe.incr(k)
            pipe.expire(k, settings.device_failure_window_seconds, nx=True)
        await pipe.execute()


# --- pages -----------------------------------------------------------------------------------------
async def _entry_page(
    request: web.Request, who: SignedIn, typed: str, *, status: int = 200, error: str | None = None
) -> web.Response:
    return await render(
        request,
        "device.html",
        status=status,
        step="enter",
        user_code=typed[:MAX_INPUT],
        error=error,
        username=who.username,
        switch_url="/login?" + urlencode({"next": device_url(typed)}),
        lang_url=lang_url(request),
    )


async def get_device(request: web.Request) -> web.Response:
    typed = request.query.get("user_code", "")
    who = await signed_in(request)
    if who is None:
        return await _to_login(request, typed)
    code = normalize(typed)
    return await _entry_page(request, who, shown(code) if code else typed)


async def post_device(request: web.Request) -> web.Response:
    form = await post_form(request)
    check_csrf(request, _field(form, CSRF_FIELD))
    typed = _field(form, "user_code")
    who = await signed_in(request)
    if who is None:
        return await _to_login(request, typed)
    settings, redis = request.app[SETTINGS], request.app[REDIS]
    keys = _fail_keys(settings, who, client_ip(request))
    wait = await blocked_for(redis, settings, keys)
    if wait:
        resp = await _entry_page(request, who, typed, status=429, error="device.too_many")
        resp.headers["Retry-After"] = str(wait)
        return resp
    code = normalize(typed)
    row = await device_codes.find_pending(request.app[PG], token_hash(settings.pepper_bytes, code)) if code else None
    client = await get_client(request.app[PG], row["client_id"]) if row is not None else None
    if row is None or client is None or code is None or not client.allows(DEVICE_CODE_GRANT):
        await record_failure(redis, settings, keys)
        return await _entry_page(request, who, typed, status=400, error="device.bad_code")
    request_id = await consent.store_pending(redis, settings, who.user_id, {"device_id": row["id"]})
    view = consent.ConsentView(
        app=consent.app_card(client, client.name, client.description),
        verified=client.verified,
        scopes=tuple(row["scope"].split()),
        device={
            "user_code": shown(code),
            "agent": row["device_agent"],
            "ip": row["device_ip"],
            "at": row["created_at"].strftime("%H:%M UTC"),
        },
        form_action=CONSENT_PATH,
        # The same spending-limit block as the browser flow (docs/spending.md), nothing suggested.
        extra=spend_chooser(tuple(row["scope"].split()), None, None, settings.quota_per_unit),
    )
    switch_url = "/login?" + urlencode({"next": device_url(code)})
    return await consent.render_consent(request, view, who, request_id, switch_url)


async def post_device_consent(request: web.Request) -> web.Response:
    per_unit = request.app[SETTINGS].quota_per_unit
    answer = await consent.read_answer(
        request,
        expired_key="device.expired",
        logged_out_key="device.not_logged_in",
        check_form=lambda form, allow: spend_form_problem(form, allow, per_unit),
    )
    if isinstance(answer, web.Response):
        return answer
    device_id = answer.payload.get("device_id")
    if not isinstance(device_id, int):  # a browser flow's pending request is not answered here
        return await error_page(request, 400, "device.expired")
    async with request.app[PG].acquire() as conn, conn.transaction():
        row = await _record_answer(conn, device_id, answer, chosen_limit(answer.form, per_unit))
    if row is None or not row["active"]:  # the user was disabled meanwhile (the answer waited for it)
        return await error_page(request, 401, "device.not_logged_in")
    if row["client_id"] is None:
        return await error_page(request, 400, "device.expired")
    step = "approved" if answer.allow else "denied"
    return await render(request, "device.html", step=step, lang_url=lang_url(request))


async def _record_answer(
    conn: asyncpg.Connection, device_id: int, answer: consent.Answer, spend: tuple[int, str] | None
) -> asyncpg.Record | None:
    """In one transaction: the answer on the device code (the user's row locked first: a disable
    waits for it or comes first, and then nothing is recorded), then for Allow the consent record
    and the spending limit (docs/architecture.md "Consent records and locks"). The answer's row
    (``libs/contracts/authz.answer_device_code``)."""
    who = answer.who
    row = await answer_device_code(
        conn, device_id, approved=answer.allow, user_id=who.user_id, auth_time=who.session.auth_time
    )
    if row is None or row["client_id"] is None or not answer.allow:
        return row
    scopes = row["scope"].split()
    if SPEND_SCOPE in scopes and spend is None:  # a form without the page's limit block
        raise ErrorPage(400, "spend.bad_amount")  # rolls the answer back
    await consent_records.upsert(conn, who.user_id, row["client_id"], scopes)
    if SPEND_SCOPE in scopes and spend is not None:
        await record_limit(conn, who.user_id, row["client_id"], *spend)
    return row


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, get_device)
    app.router.add_post(PATH, post_device)
    app.router.add_post(CONSENT_PATH, post_device_consent)
