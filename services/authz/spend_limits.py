"""Spending limits on consent records (docs/spending.md): chosen on the consent page when an app asks
for the ``spend`` scope, shown and changed in the user center (``/user/authorizations``).

- The consent page's block (``templates/consent_spend.html``): an amount in display units and a
  period, pre-filled from the app's ``spend_limit``/``spend_period`` authorize parameters.
- ``POST /user/authorizations/{client_id}/spend``: change the limit (CSRF form), back with 303.
- ``POST /user/authorizations/{client_id}/spend/stop``: the app may no longer spend; the login and
  the other scopes stay. Tokens that carry ``spend`` are refused at their next charge (the account
  service reads the limit in each charge's transaction).

Every limit change writes ``quota.changed`` (``reason: spend_limit``, the app and grant named) in
the transaction that changes the record, so resource servers' cached allowances follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from multidict import MultiMapping

from libs.contracts import account
from libs.contracts.account import get_client
from libs.oauth.events import outbox
from libs.oauth.events.types import QuotaChanged
from libs.oauth.pages import add_strings
from libs.oauth.sessions import CSRF_FIELD, check_csrf
from libs.oauth.spending import format_amount, parse_display_amount, parse_period, period_window
from libs.oauth.vocabulary import NO_STORE, SPEND_PERIODS, SPEND_SCOPE
from libs.platform.params import is_clean, post_form
from libs.platform.validation import has_control_chars
from libs.platform.web import PG, SETTINGS

from .authrequest import AuthRequest
from .identity import SignedIn, signed_in
from .responses import found
from .store import consent_records

PAGE = "/user/authorizations"
DEFAULT_PERIOD = "monthly"

add_strings(
    {
        "zh": {
            "scope.spend": "在你设定的额度内使用你的余额",
            "spend.heading": "消费额度",
            "spend.intro": "该应用想用你的余额付费。请设定它最多可以花多少,超出后它的扣费会被拒绝。",
            "spend.amount": "金额",
            "spend.period": "周期",
            "spend.period.once": "总计(一次性)",
            "spend.period.daily": "每天",
            "spend.period.monthly": "每月",
            "spend.balance": "当前余额:{balance}",
            "spend.limit": "额度:{limit}({period})",
            "spend.spent_period": "本周期已花费:{spent},剩余 {left}",
            "spend.spent_total": "累计花费:{total}",
            "spend.recent": "最近的扣费",
            "spend.none": "还没有扣费。",
            "spend.change": "修改额度",
            "spend.stop": "停止消费(保留登录)",
            "spend.changed": "已更新“{app}”的消费额度。",
            "spend.stopped": "“{app}”已不能再使用你的余额,登录仍然有效。",
            "spend.bad_amount": "金额无效:请输入大于 0、最多两位小数的数字。",
        },
        "en": {
            "scope.spend": "spend from your balance, up to the limit you choose",
            "spend.heading": "Spending limit",
            "spend.intro": "The app wants to pay with your balance. Choose the most it may spend; charges beyond it are refused.",
            "spend.amount": "Amount",
            "spend.period": "Period",
            "spend.period.once": "in total (once)",
            "spend.period.daily": "per day",
            "spend.period.monthly": "per month",
            "spend.balance": "Your balance: {balance}",
            "spend.limit": "Limit: {limit} ({period})",
            "spend.spent_period": "Spent this period: {spent}, {left} left",
            "spend.spent_total": "Spent in total: {total}",
            "spend.recent": "Recent charges",
            "spend.none": "No charges yet.",
            "spend.change": "Change limit",
            "spend.stop": "Stop spending (keep login)",
            "spend.changed": "The spending limit of “{app}” was updated.",
            "spend.stopped": "“{app}” can no longer spend your balance; its login still works.",
            "spend.bad_amount": "Invalid amount: enter a number above 0 with at most two decimals.",
        },
    }
)


# --- the consent page ----------------------------------------------------------------------------
def consent_context(req: AuthRequest, per_unit: int) -> dict[str, Any]:
    """What ``consent_spend.html`` shows: the app's suggestion, or nothing pre-filled."""
    return spend_chooser(req.scopes, req.spend_limit, req.spend_period, per_unit)


def spend_chooser(scopes: Sequence[str], limit: int | None, period: str | None, per_unit: int) -> dict[str, Any]:
    """``consent_spend.html``'s context for any flow (browser or device): shown when ``spend`` is
    asked, pre-filled with a suggestion when there is one."""
    return {
        "spend_requested": SPEND_SCOPE in scopes,
        "spend_amount": "" if limit is None else format_amount(limit, per_unit),
        "spend_period": period or DEFAULT_PERIOD,
        "spend_periods": SPEND_PERIODS,
    }


def spend_form_problem(form: MultiMapping[object], allow: bool, per_unit: int) -> str | None:
    """A consent form's spending block, checked before the pending request is used up (so the
    browser's Back button and a corrected amount still find it): the error key, or None."""
    bad = allow and "spend_amount" in form and chosen_limit(form, per_unit) is None
    return "spend.bad_amount" if bad else None


def chosen_limit(form: MultiMapping[object], per_unit: int) -> tuple[int, str] | None:
    """(limit in minor units, period) from the form's ``spend_amount`` and ``spend_period``; None
    when either is not valid."""
    amount, period = form.get("spend_amount"), form.get("spend_period")
    if not isinstance(amount, str) or not isinstance(period, str):
        return None
    limit = parse_display_amount(amount, per_unit)
    chosen = parse_period(period)
    return None if limit is None or chosen is None else (limit, chosen)


async def _limit_event(
    conn: asyncpg.Connection, user_id: int, client_id: str, limit: int | None, period: str | None
) -> None:
    balance = await account.balance_of(conn, user_id)
    if balance is None:  # the user is gone: nothing to tell
        return
    await outbox.enqueue(
        conn,
        QuotaChanged(
            user_id=user_id,
            delta=0,
            quota=int(balance["quota"]),
            used_quota=int(balance["used_quota"]),
            reason="spend_limit",
            client_id=client_id,
            grant={"user_id": user_id, "client_id": client_id},
            spend_limit=limit,
            spend_period=period,
        ),
    )


async def record_limit(conn: asyncpg.Connection, user_id: int, client_id: str, limit: int, period: str) -> bool:
    """In the caller's transaction (after the consent is recorded): the limit and its event."""
    if not await consent_records.set_spend_limit(conn, user_id, client_id, limit, period):
        return False
    await _limit_event(conn, user_id, client_id, limit, period)
    return True


async def stop(pool: asyncpg.Pool, user_id: int, client_id: str) -> bool:
    async with pool.acquire() as conn, conn.transaction():
        if not await consent_records.stop_spending(conn, user_id, client_id):
            return False
        await _limit_event(conn, user_id, client_id, None, None)
    return True


# --- the user center -----------------------------------------------------------------------------
def utc_now() -> datetime:
    return datetime.now(UTC)


async def spend_notices(request: web.Request) -> dict[str, Any]:
    """The page's notice after a change (``?spend_changed=<client_id>`` ...), by the app's name."""
    out: dict[str, Any] = {
        "spend_error": request.query.get("spend_error") == "1",
        "spend_changed": "",
        "spend_stopped": "",
    }
    for name in ("spend_changed", "spend_stopped"):
        client_id = request.query.get(name)
        if client_id and is_clean(client_id, 100):
            client = await get_client(request.app[PG], client_id)
            out[name] = client.name if client is not None else client_id
    return out


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def spend_views(db: asyncpg.Pool, user_id: int, per_unit: int, now: datetime) -> dict[str, dict[str, Any]]:
    """Per app (client_id) with a limit or charges: the limit, what was spent this period and in
    total, and the recent charges, formatted for the page."""
    totals = await account.spend_totals(db, user_id)
    views: dict[str, dict[str, Any]] = {
        cid: {"limit": None, "total": format_amount(total, per_unit)} for cid, total in totals.items()
    }
    for row in await consent_records.spend_limits_of(db, user_id):
        start, _ = period_window(row["spend_period"], now, row["spend_since"])
        spent = await account.spent_since(db, user_id, row["client_id"], start)
        view = views.setdefault(row["client_id"], {"total": format_amount(0, per_unit)})
        view |= {
            "limit": format_amount(row["spend_limit"], per_unit),
            "limit_value": format_amount(row["spend_limit"], per_unit),
            "period": row["spend_period"],
            "spent": format_amount(spent, per_unit),
            "left": format_amount(max(row["spend_limit"] - spent, 0), per_unit),
        }
    for cid, view in views.items():
        view["charges"] = [
            {
                "amount": format_amount(r["amount"], per_unit),
                "description": r["description"],
                "at": _when(r["created_at"]),
            }
            for r in await account.recent_charges(db, user_id, cid)
        ]
    return views


def _client_id(request: web.Request) -> str:
    client_id = request.match_info["client_id"]
    if not client_id or len(client_id) > 100 or has_control_chars(client_id):
        raise web.HTTPNotFound()
    return client_id


def _back(query: str) -> web.Response:
    return web.Response(status=303, headers={"Location": f"{PAGE}?{query}", **NO_STORE})


async def _signed_in_post(request: web.Request) -> tuple[MultiMapping[object], SignedIn] | web.Response:
    """The user center's form post: CSRF checked, and who is signed in (else the login page)."""
    form = await post_form(request)
    token = form.get(CSRF_FIELD)
    check_csrf(request, token if isinstance(token, str) else "")
    who = await signed_in(request)
    if who is None:
        return found("/login?next=" + PAGE)
    return form, who


async def handle_change(request: web.Request) -> web.Response:
    posted = await _signed_in_post(request)
    if isinstance(posted, web.Response):
        return posted
    form, who = posted
    client_id = _client_id(request)
    chosen = chosen_limit(form, request.app[SETTINGS].quota_per_unit)
    if chosen is None:
        return _back("spend_error=1")
    async with request.app[PG].acquire() as conn, conn.transaction():
        changed = await record_limit(conn, who.user_id, client_id, *chosen)
    return _back(("spend_changed=" + client_id) if changed else "nothing=1")


async def handle_stop(request: web.Request) -> web.Response:
    posted = await _signed_in_post(request)
    if isinstance(posted, web.Response):
        return posted
    _, who = posted
    client_id = _client_id(request)
    stopped = await stop(request.app[PG], who.user_id, client_id)
    return _back(("spend_stopped=" + client_id) if stopped else "nothing=1")


def add_routes(app: web.Application) -> None:
    app.router.add_post(PAGE + "/{client_id}/spend", handle_change)
    app.router.add_post(PAGE + "/{client_id}/spend/stop", handle_stop)
