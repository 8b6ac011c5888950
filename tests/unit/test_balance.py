"""balance_formatted: (quota - used_quota) / QUOTA_PER_UNIT, two decimals, integers only, truncated."""

from __future__ import annotations

import pytest

from services.account.balance import format_balance, format_money


@pytest.mark.parametrize(
    ("quota", "used", "unit", "expected"),
    [
        (1_000_000, 250_000, 1000, "750.00"),  # the guide's example
        (0, 0, 1000, "0.00"),
        (5000, 5000, 1000, "0.00"),
        (1000, 0, 1000, "1.00"),
        (1, 0, 1000, "0.00"),  # never shows more than the user has
        (9, 0, 1000, "0.00"),
        (10, 0, 1000, "0.01"),
        (19, 0, 1000, "0.01"),
        (999, 0, 1000, "0.99"),
        (1_234_567, 0, 1000, "1234.56"),
        (1_234_567, 1_234_566, 1000, "0.00"),
        (1_001_990, 1_000, 1000, "1000.99"),
        # large values stay exact (a float would lose the last digits here)
        (9_223_372_036_854_775_807, 0, 1000, "9223372036854775.80"),
        (10**30 + 999, 0, 1000, "1000000000000000000000000000.99"),
        (2**53 + 1, 0, 1, "9007199254740993.00"),
        # other units
        (12345, 0, 1, "12345.00"),
        (12345, 0, 100, "123.45"),
        (12345, 45, 100, "123.00"),
        (500_000, 0, 500_000, "1.00"),
        (499_999, 0, 500_000, "0.99"),
        (1, 0, 3, "0.33"),
        (2, 0, 3, "0.66"),
        (7, 0, 7, "1.00"),
    ],
)
def test_format_balance(quota: int, used: int, unit: int, expected: str) -> None:
    assert format_balance(quota, used, unit) == expected


def test_negative_is_truncated_toward_zero() -> None:
    # The database forbids used_quota > quota; if it ever happened the result still truncates toward zero.
    assert format_balance(0, 1, 1000) == "0.00"
    assert format_balance(0, 1_500, 1000) == "-1.50"
    assert format_balance(0, 1_509, 1000) == "-1.50"


@pytest.mark.parametrize("unit", [0, -1000])
def test_unit_must_be_positive(unit: int) -> None:
    with pytest.raises(ValueError):
        format_balance(1, 0, unit)


def test_result_is_a_string_with_two_decimals() -> None:
    for q in range(0, 3000, 7):
        out = format_balance(q, 0, 1000)
        whole, frac = out.split(".")
        assert len(frac) == 2 and whole.isdigit()
        assert int(whole) * 1000 + int(frac) * 10 <= q < int(whole) * 1000 + int(frac) * 10 + 10


@pytest.mark.parametrize(
    ("amount", "unit", "symbol", "decimals", "expected"),
    [
        (750_000, 1000, "$", 2, "$750.00"),  # the guide's balance with the default currency
        (0, 1000, "$", 2, "$0.00"),
        (1, 1000, "$", 2, "$0.00"),  # truncated: never more than the user has
        (1_000_000_000, 1000, "$", 2, "$1,000,000.00"),
        (1_234_567, 1000, "¥", 2, "¥1,234.56"),
        (1_234_567, 1000, "¥", 0, "¥1,234"),
        (1_234_567, 1000, "€", 3, "€1,234.567"),
        (-1_500, 1000, "$", 2, "-$1.50"),
        (-1, 1000, "$", 2, "$0.00"),  # no "-$0.00"
        (12345, 1, "", 2, "12,345.00"),
    ],
)
def test_format_money(amount: int, unit: int, symbol: str, decimals: int, expected: str) -> None:
    assert format_money(amount, unit, symbol, decimals) == expected
