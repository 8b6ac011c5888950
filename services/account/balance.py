"""Money formatting: integers only, never floats (docs/api.md; the guide's "3. 用户信息端点")."""

from __future__ import annotations


def format_balance(quota: int, used_quota: int, quota_per_unit: int) -> str:
    """``(quota - used_quota) / quota_per_unit`` with two decimals, by integer arithmetic.

    Truncates toward zero, so the shown balance is never more than the user has:
    ``format_balance(1000000, 250000, 1000) == "750.00"``, ``format_balance(1, 0, 1000) == "0.00"``,
    ``format_balance(1234567, 0, 1000) == "1234.56"``.
    """
    if quota_per_unit <= 0:
        raise ValueError("quota_per_unit must be a positive integer")
    remaining = int(quota) - int(used_quota)
    cents = abs(remaining) * 100 // quota_per_unit  # truncation of |x| == truncation toward zero
    whole, frac = divmod(cents, 100)
    sign = "-" if remaining < 0 and cents else ""
    return f"{sign}{whole}.{frac:02d}"


def format_money(amount: int, quota_per_unit: int, symbol: str, decimals: int) -> str:
    """``amount`` quota units as money for people: the currency symbol (CURRENCY_SYMBOL), thousands
    grouped, CURRENCY_DECIMALS decimals, truncated toward zero like ``format_balance``
    (docs/operations.md "Branding"): ``format_money(750000, 1000, "$", 2) == "$750.00"``,
    ``format_money(-1500, 1000, "¥", 2) == "-¥1.50"``, ``format_money(1234567000, 1000, "$", 0) == "$1,234,567"``.
    """
    if quota_per_unit <= 0:
        raise ValueError("quota_per_unit must be a positive integer")
    scale = 10**decimals
    scaled = abs(int(amount)) * scale // quota_per_unit
    whole, frac = divmod(scaled, scale)
    sign = "-" if amount < 0 and scaled else ""
    text = f"{whole:,}" + (f".{frac:0{decimals}d}" if decimals else "")
    return f"{sign}{symbol}{text}"
