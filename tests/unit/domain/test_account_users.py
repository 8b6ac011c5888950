"""Account rules: the password policy (NIST SP 800-63B 5.1.1.2), email normalisation and TR39
skeletons, new-user validation, and the one "is this user active" rule. No I/O."""

from __future__ import annotations

import pytest

from libs.oauth.vocabulary import UserStatus
from services.account.emails import normalize_email, skeleton
from services.account.passwords import MAX_LENGTH, MIN_LENGTH, password_problem
from services.account.users import UserError, is_active, unique_violation_error, validate_new_user


@pytest.mark.parametrize(
    ("password", "username", "email", "problem"),
    [
        ("correct horse battery", "alice", "alice@example.com", None),
        ("x" * (MIN_LENGTH - 1), "alice", "alice@example.com", "length"),
        ("Ab3$" * 2, "alice", "alice@example.com", None),  # exactly the minimum
        ("y" * MAX_LENGTH, "alice", "alice@example.com", None),
        ("y" * (MAX_LENGTH + 1), "alice", "alice@example.com", "length"),
        ("my-ALICE-pass-99", "alice", "bob@example.com", "personal"),  # case-insensitive
        ("bobby-tables-99x", "alice", "bobby@example.com", "personal"),  # the email's name part
        ("ab-is-fine-here!", "ab", "ab@example.com", None),  # names under 3 chars are not checked
        ("password", "alice", "alice@example.com", "common"),
        ("Password1", "alice", "alice@example.com", "common"),  # folded before the lookup
    ],
)
def test_password_policy(password: str, username: str, email: str, problem: str | None) -> None:
    assert password_problem(password, username, email) == problem


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("  Alice@Example.COM ", "Alice@example.com"),  # domain lower-cased, local part kept
        ("ａｌｉｃｅ@ｅｘａｍｐｌｅ.ｃｏｍ", "alice@example.com"),  # NFKC: full-width forms
        ("no-at-sign", "no-at-sign"),
        ('"a@b"@x.COM', '"a@b"@x.com'),  # the last @ splits
    ],
)
def test_normalize_email(raw: str, normal: str) -> None:
    assert normalize_email(raw) == normal


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("example@x.com", "exаmple@x.com", True),  # Cyrillic а
        ("Alice@x.com", "alice@x.com", True),
        ("rn@x.com", "m@x.com", True),  # TR39 ASCII prototypes
        ("l1@x.com", "ll@x.com", True),
        ("o0@x.com", "oo@x.com", True),
        ("alice@x.com", "alice@y.com", False),
        ("alice@x.com", "alicia@x.com", False),
    ],
)
def test_skeleton(a: str, b: str, same: bool) -> None:
    assert (skeleton(a) == skeleton(b)) is same


GOOD_PW = "correct horse battery"


@pytest.mark.parametrize(
    ("username", "email", "field", "code"),
    [
        ("alice", "alice@example.com", None, None),
        ("a.b-c_9", "x@example.com", None, None),
        ("al", "alice@example.com", "username", "invalid"),
        ("a" * 33, "alice@example.com", "username", "invalid"),
        ("al ice", "alice@example.com", "username", "invalid"),
        ("alice", "alice@example", "email", "invalid"),
        ("alice", "alice@@example.com", "email", "invalid"),
        ("alice", "a" * 65 + "@example.com", "email", "invalid"),
        ("alice", "ali\u200bce@example.com", "email", "invalid"),  # zero-width space
        ("alice", "a@" + "b" * 250 + ".com", "email", "invalid"),
    ],
)
def test_validate_new_user(username: str, email: str, field: str | None, code: str | None) -> None:
    if field is None:
        validate_new_user(username, email, GOOD_PW)
        return
    with pytest.raises(UserError) as info:
        validate_new_user(username, email, GOOD_PW)
    assert (info.value.field, info.value.code) == (field, code)


@pytest.mark.parametrize(
    ("password", "check", "code"), [("password", True, "common"), ("password", False, None), ("short", True, "length")]
)
def test_validate_new_user_password(password: str, check: bool, code: str | None) -> None:
    if code is None:
        validate_new_user("alice", "alice@example.com", password, check_password=check)
        return
    with pytest.raises(UserError) as info:
        validate_new_user("alice", "alice@example.com", password, check_password=check)
    assert (info.value.field, info.value.code) == ("password", code)


@pytest.mark.parametrize(
    ("constraint", "field", "code"),
    [
        ("users_username_key", "username", "taken"),
        ("users_email_key", "email", "taken"),
        ("users_email_skeleton_key", "email", "confusable"),
        (None, "email", "taken"),
    ],
)
def test_unique_violation_error(constraint: str | None, field: str, code: str) -> None:
    err = unique_violation_error(constraint)
    assert (err.field, err.code) == (field, code)


@pytest.mark.parametrize(
    ("status", "active"), [(UserStatus.ACTIVE, True), (UserStatus.DISABLED, False), (None, False), (99, False)]
)
def test_is_active(status: int | None, active: bool) -> None:
    assert is_active(status) is active
