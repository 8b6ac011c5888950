"""The spending-limit arithmetic (libs/oauth/spending.py), the authorize suggestion check and the
one-click rule for ``spend`` (services/authz): table-driven, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from multidict import MultiDict

from libs.oauth.spending import (
    Allowance,
    Refusal,
    describe,
    format_amount,
    parse_display_amount,
    parse_period,
    period_window,
    refusal,
)
from services.authz.authrequest import Draft, check_spend_suggestion
from services.authz.decision import OneClickPolicy, consent_step, one_click_allowed
from services.authz.responses import ClientRedirectError
from tests.unit.domain.test_authz_decision import REQ


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "per_unit", "minor"),
    [
        ("5", 1000, 5000),
        ("5.5", 1000, 5500),
        ("5.50", 1000, 5500),
        ("0.01", 1000, 10),
        (" 12.34 ", 1000, 12340),
        ("1", 1, 1),
        ("0.5", 2, 1),
        ("0.01", 1, None),  # not a whole number of minor units
        ("0", 1000, None),
        ("0.00", 1000, None),
        ("-1", 1000, None),
        ("1.234", 1000, None),
        ("1e3", 1000, None),
        ("", 1000, None),
        ("abc", 1000, None),
        ("1,5", 1000, None),
        ("١٢", 1000, None),  # Arabic-Indic digits are not accepted
        ("9" * 16, 1000, None),
        ("1000000000000", 1000, 10**15),  # MAX_AMOUNT exactly
        ("1000000000000.01", 1000, None),  # above MAX_AMOUNT in minor units
    ],
)
def test_parse_display_amount(text: str, per_unit: int, minor: int | None) -> None:
    assert parse_display_amount(text, per_unit) == minor


@pytest.mark.parametrize(
    ("minor", "per_unit", "shown"),
    [
        (5500, 1000, "5.50"),
        (1, 1000, "0.00"),
        (999, 1000, "0.99"),
        (0, 1000, "0.00"),
        (-1500, 1000, "-1.50"),
        (7, 1, "7.00"),
    ],
)
def test_format_amount(minor: int, per_unit: int, shown: str) -> None:
    assert format_amount(minor, per_unit) == shown


@pytest.mark.parametrize(
    ("text", "period"),
    [("once", "once"), ("daily", "daily"), ("monthly", "monthly"), ("hourly", None), (None, None), ("Daily", None)],
)
def test_parse_period(text: str | None, period: str | None) -> None:
    assert parse_period(text) == period


SINCE = at("2026-01-10T12:00:00")


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("once", "2026-03-01T00:00:00", SINCE, None),
        ("daily", "2026-01-10T15:00:00", SINCE, at("2026-01-11T00:00:00")),  # the first day starts at consent
        ("daily", "2026-01-11T00:00:00", at("2026-01-11T00:00:00"), at("2026-01-12T00:00:00")),
        ("daily", "2026-01-11T23:59:59", at("2026-01-11T00:00:00"), at("2026-01-12T00:00:00")),
        ("daily", "2026-12-31T08:00:00", at("2026-12-31T00:00:00"), at("2027-01-01T00:00:00")),
        ("monthly", "2026-01-20T00:00:00", SINCE, at("2026-02-01T00:00:00")),
        ("monthly", "2026-02-28T23:00:00", at("2026-02-01T00:00:00"), at("2026-03-01T00:00:00")),
        ("monthly", "2026-12-15T00:00:00", at("2026-12-01T00:00:00"), at("2027-01-01T00:00:00")),
        ("monthly", "2028-02-29T10:00:00", at("2028-02-01T00:00:00"), at("2028-03-01T00:00:00")),
    ],
)
def test_period_window(period: str, now: str, start: datetime, end: datetime | None) -> None:
    assert period_window(period, at(now), SINCE) == (start, end)


def test_period_window_is_utc_whatever_the_clock_zone() -> None:
    tokyo = at("2026-01-11T20:00:00").astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    assert tokyo.day == 12
    start, end = period_window("daily", tokyo, SINCE)
    assert (start, end) == (at("2026-01-11T00:00:00"), at("2026-01-12T00:00:00"))


def test_unknown_period_is_an_error() -> None:
    with pytest.raises(ValueError):
        period_window("hourly", SINCE, SINCE)


def allowance(limit: int, spent: int) -> Allowance:
    return Allowance(limit, "daily", spent, SINCE, SINCE + timedelta(days=1))


@pytest.mark.parametrize(
    ("limit", "spent", "balance", "amount", "expected"),
    [
        (1000, 0, 5000, 1000, None),  # exactly the limit
        (1000, 600, 5000, 400, None),
        (1000, 600, 5000, 401, Refusal("spend_limit", 400, 401)),
        (1000, 1000, 5000, 1, Refusal("spend_limit", 0, 1)),
        (1000, 1200, 5000, 1, Refusal("spend_limit", 0, 1)),  # limit lowered below what was spent
        (1000, 0, 300, 300, None),  # exactly the balance
        (1000, 0, 300, 301, Refusal("balance", 300, 301)),
        (1000, 0, -5, 1, Refusal("balance", 0, 1)),
        (1000, 900, 50, 200, Refusal("spend_limit", 100, 200)),  # the limit is named first
    ],
)
def test_refusal(limit: int, spent: int, balance: int, amount: int, expected: Refusal | None) -> None:
    assert refusal(allowance(limit, spent), balance, amount) == expected


def test_remaining_is_never_negative() -> None:
    assert allowance(1000, 1500).remaining == 0


def test_describe_names_what_was_exceeded_in_plain_ascii() -> None:
    a = allowance(1000, 800)
    limit = describe(Refusal("spend_limit", 200, 400), a, 1000)
    assert "spending limit" in limit and "1.00 daily" in limit and "0.20 left" in limit and "0.40" in limit
    balance = describe(Refusal("balance", 100, 400), a, 1000)
    assert "balance (0.10)" in balance
    for text in (limit, balance):
        assert text.isascii() and '"' not in text and "\\\\" not in text


# --- the authorize suggestion and one-click ------------------------------------------------------
def draft(scopes: tuple[str, ...], **query: str) -> Draft:
    d = Draft(MultiDict(query), client=None, redirect_uri="https://app.example/cb", state="s")
    d.scopes = scopes
    return d


@pytest.mark.parametrize(
    ("scopes", "query", "limit", "period"),
    [
        (("profile", "spend"), {}, None, None),
        (("profile", "spend"), {"spend_limit": "5000"}, 5000, None),
        (("profile", "spend"), {"spend_limit": "5000", "spend_period": "daily"}, 5000, "daily"),
        (("profile", "spend"), {"spend_period": "once"}, None, "once"),
        (("profile",), {}, None, None),
    ],
)
def test_spend_suggestion_accepted(scopes, query, limit, period) -> None:
    d = draft(scopes, **query)
    check_spend_suggestion(d)
    assert (d.spend_limit, d.spend_period) == (limit, period)


@pytest.mark.parametrize(
    ("scopes", "query"),
    [
        (("profile",), {"spend_limit": "5000"}),  # without the scope
        (("profile", "spend"), {"spend_limit": "0"}),
        (("profile", "spend"), {"spend_limit": "-1"}),
        (("profile", "spend"), {"spend_limit": "5.00"}),
        (("profile", "spend"), {"spend_limit": "1" * 17}),
        (("profile", "spend"), {"spend_limit": "²"}),
        (("profile", "spend"), {"spend_period": "weekly"}),
    ],
)
def test_spend_suggestion_refused(scopes, query) -> None:
    with pytest.raises(ClientRedirectError) as err:
        check_spend_suggestion(draft(scopes, **query))
    assert err.value.oauth.error == "invalid_request" and err.value.state == "s"


PERMISSIVE = OneClickPolicy(enabled=True, unverified_apps=True)


@pytest.mark.parametrize(
    ("scopes", "covered", "step"),
    [
        (("profile",), False, "issue"),  # one-click as the guide shows
        (("profile", "spend"), False, "consent"),  # never one-click for spend
        (("profile", "spend"), True, "issue"),  # the page was shown once: the record covers spend
    ],
)
def test_one_click_never_grants_spend(scopes, covered, step) -> None:
    req = replace(REQ, scopes=scopes, auto_authorize=True, client_verified=True)
    assert one_click_allowed(PERMISSIVE, req) is (step == "issue" and not covered)
    assert consent_step(PERMISSIVE, req, covered) == step
