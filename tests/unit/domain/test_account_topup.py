"""Top-up code rules (services/account/topup.py) and the balance format: plain functions, no I/O."""

from __future__ import annotations

import pytest

from services.account.balance import format_balance
from services.account.topup import MAX_AMOUNT, MAX_CODE_LEN, TopupError, check_code_batch, normalize_code, why_not


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("topup_abc", "topup_abc"),
        ("  topup_a bc\n", "topup_abc"),  # pasted codes carry spaces and line breaks
        ("t" * MAX_CODE_LEN, "t" * MAX_CODE_LEN),
        (None, TopupError("empty")),
        ("", TopupError("empty")),
        (" \t\n", TopupError("empty")),
        ("t" * (MAX_CODE_LEN + 1), TopupError("invalid")),
    ],
)
def test_normalize_code(raw: str | None, expected: str | TopupError) -> None:
    if isinstance(expected, TopupError):
        with pytest.raises(TopupError) as info:
            normalize_code(raw)
        assert info.value.reason == expected.reason
    else:
        assert normalize_code(raw) == expected


@pytest.mark.parametrize(
    ("state", "reason"),
    [(None, "invalid"), ((True, False), "used"), ((True, True), "used"), ((False, True), "expired")],
)
def test_why_a_code_was_not_taken(state: tuple[bool, bool] | None, reason: str) -> None:
    assert why_not(state) == reason


@pytest.mark.parametrize(
    ("amount", "count", "days", "error"),
    [
        (1, 1, None, None),
        (MAX_AMOUNT, 1000, 3650, None),
        (0, 1, None, "amount"),
        (-5, 1, None, "amount"),
        (MAX_AMOUNT + 1, 1, None, "amount"),
        (1, 0, None, "count"),
        (1, 1001, None, "count"),
        (1, 1, 0, "expires-days"),
        (1, 1, 3651, "expires-days"),
    ],
)
def test_code_batch_limits(amount: int, count: int, days: int | None, error: str | None) -> None:
    if error is None:
        check_code_batch(amount, count, days)
    else:
        with pytest.raises(ValueError, match=error):
            check_code_batch(amount, count, days)


@pytest.mark.parametrize(
    ("quota", "used", "unit", "expected"),
    [
        (1_000_000, 250_000, 1000, "750.00"),  # the guide's userinfo example
        (1, 0, 1000, "0.00"),  # truncated: never more than the user has
        (1_234_567, 0, 1000, "1234.56"),
        (0, 1, 1000, "0.00"),  # -0.001 truncates toward zero, without a sign
        (0, 10, 1000, "-0.01"),
        (2**63 - 1, 0, 1000, "9223372036854775.80"),  # exact where a float is not
    ],
)
def test_balance_format(quota: int, used: int, unit: int, expected: str) -> None:
    assert format_balance(quota, used, unit) == expected


def test_balance_unit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        format_balance(1, 0, 0)
