"""Spending limits: the arithmetic the consent page (authz) and the charges (account) share, as
plain functions with no I/O (docs/spending.md; tests/unit/domain/test_spending.py).

- Amounts are integer **minor units** (the unit of ``users.quota``); ``QUOTA_PER_UNIT`` of them make
  one displayed unit, shown with two decimals and truncated toward zero like the balance
  (services/account/balance.py, the guide's "3. 用户信息端点").
- A limit has a period: ``once`` (one budget since the user chose it), ``daily`` or ``monthly``
  (calendar days and months in UTC). ``period_window`` says which charges count.
- ``refusal`` decides a charge: the grant's limit for the period first, then the balance; it names
  what would be exceeded, so the 402 can say it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .vocabulary import SPEND_PERIODS

# The most a limit (or one charge) may be, in minor units: far below bigint, so sums cannot overflow.
MAX_AMOUNT = 10**15
_DISPLAY_RE = re.compile(r"^([0-9]{1,15})(?:\.([0-9]{1,2}))?$")


def parse_display_amount(text: str, quota_per_unit: int) -> int | None:
    """``"5"``, ``"5.5"`` or ``"5.50"`` in display units -> minor units (``5.50`` at 1000 per unit is
    5500); None when it is not a positive amount with at most two decimals that is a whole number
    of minor units and at most ``MAX_AMOUNT``."""
    m = _DISPLAY_RE.match(text.strip())
    if m is None:
        return None
    cents = int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
    minor, rest = divmod(cents * quota_per_unit, 100)
    if rest or not 0 < minor <= MAX_AMOUNT:
        return None
    return minor


def format_amount(minor: int, quota_per_unit: int) -> str:
    """Minor units in display units with two decimals, truncated toward zero (``5500`` -> ``"5.50"``)."""
    cents = abs(minor) * 100 // quota_per_unit
    whole, frac = divmod(cents, 100)
    sign = "-" if minor < 0 and cents else ""
    return f"{sign}{whole}.{frac:02d}"


def parse_period(text: str | None) -> str | None:
    return text if text in SPEND_PERIODS else None


def period_window(period: str, now: datetime, since: datetime) -> tuple[datetime, datetime | None]:
    """[start, end) of the period containing ``now``: charges at or after ``start`` count against
    the limit; ``end`` is when the allowance is whole again (None for ``once``: never).

    ``since`` is when the user chose the limit (the start of a ``once`` period, and never later
    than the start of any period: a limit chosen at noon counts only charges from noon that day)."""
    now = now.astimezone(UTC)
    if period == "once":
        return since, None
    if period == "daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif period == "monthly":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown spending period {period!r}")
    return max(start, since.astimezone(UTC)), end


@dataclass(frozen=True)
class Allowance:
    """What a grant may still spend now."""

    limit: int
    period: str
    spent: int  # in the current period
    start: datetime
    end: datetime | None

    @property
    def remaining(self) -> int:
        return max(self.limit - self.spent, 0)


@dataclass(frozen=True)
class Refusal:
    """Why a charge is refused: ``what`` is ``spend_limit`` or ``balance``."""

    what: str
    available: int
    requested: int


def refusal(allowance: Allowance, balance: int, amount: int) -> Refusal | None:
    """None when ``amount`` fits both the grant's allowance for the period and the user's balance."""
    if amount > allowance.remaining:
        return Refusal("spend_limit", allowance.remaining, amount)
    if amount > balance:
        return Refusal("balance", max(balance, 0), amount)
    return None


def describe(refused: Refusal, allowance: Allowance, quota_per_unit: int) -> str:
    """The error description of a 402 (RFC 6749 5.2 characters only: printable ASCII)."""
    amount = format_amount(refused.requested, quota_per_unit)
    left = format_amount(refused.available, quota_per_unit)
    if refused.what == "spend_limit":
        limit = format_amount(allowance.limit, quota_per_unit)
        return (
            f"The charge of {amount} would exceed the spending limit the user chose for this app "
            f"({limit} {allowance.period}; {left} left in this period); nothing was charged"
        )
    return f"The charge of {amount} exceeds the user's balance ({left}); nothing was charged"
