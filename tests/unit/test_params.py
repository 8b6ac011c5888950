"""The shared input parsers (libs/platform/params.py): table-driven, no I/O."""

from __future__ import annotations

import re

import pytest

from libs.platform.params import InvalidInput, integer, is_clean, is_kid, object_id, text

BAD_TEXT = [
    ("a\x00b", "control"),
    ("\x01", "control"),
    ("a\x7f", "control"),
    ("a\x85", "control"),  # C1
    ("a\nb", "control"),
    ("a\udc80", "invalid Unicode"),  # what surrogateescape makes of the byte 0x80
    ("\ud800", "invalid Unicode"),
    ("x" * 11, "at most 10"),
    (1, "must be a string"),
    (1.5, "must be a string"),
    (True, "must be a string"),
    (["a"], "must be a string"),
    ({"a": 1}, "must be a string"),
    (None, "must be a string"),
]


@pytest.mark.parametrize(("value", "problem"), BAD_TEXT, ids=repr)
def test_text_refuses(value: object, problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        text(value, "name", max_len=10)
    assert problem in caught.value.problem
    assert caught.value.message.startswith("The parameter name ")
    assert not is_clean(value, 10)


@pytest.mark.parametrize("value", ["", "abc", "中文名字", "x" * 10, "a b", "ключ"])
def test_text_accepts(value: str) -> None:
    assert text(value, "name", max_len=10) == value
    assert is_clean(value, 10)


def test_multiline_allows_tabs_and_newlines_only() -> None:
    assert text("a\r\n\tb", "d", max_len=10, multiline=True) == "a\r\n\tb"
    with pytest.raises(InvalidInput):
        text("a\x00", "d", max_len=10, multiline=True)


def test_min_len_and_pattern() -> None:
    with pytest.raises(InvalidInput, match="must not be empty"):
        text("", "n", max_len=5, min_len=1)
    with pytest.raises(InvalidInput, match="invalid format"):
        text("ab!", "n", max_len=5, pattern=re.compile("[a-z]+"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", 1), ("000123", 123), ("9" * 18, int("9" * 18)), ("9" * 19, None), ("-1", None), ("１", None), ("", None)],
)
def test_object_id(raw: str, expected: int | None) -> None:
    assert object_id(raw) == expected


@pytest.mark.parametrize("kid", ["AbC-_09", "a.b~c", "k" * 64])
def test_kid_accepts(kid: str) -> None:
    assert is_kid(kid)


@pytest.mark.parametrize("kid", ["", "k\x00", "k" * 65, "k\u202e", "ключ", 1, None, ["k"], "a b"])
def test_kid_refuses(kid: object) -> None:
    assert not is_kid(kid)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("1", "must be an integer"),
        (1.5, "must be an integer"),
        (True, "must be an integer"),
        (None, "must be an integer"),
        (0, "must be between 1 and 10"),
        (11, "must be between 1 and 10"),
    ],
)
def test_integer_refuses(value: object, problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        integer(value, "amount", minimum=1, maximum=10)
    assert caught.value.problem == problem and "amount" in caught.value.message


@pytest.mark.parametrize("value", [1, 10])
def test_integer_accepts(value: int) -> None:
    assert integer(value, "amount", minimum=1, maximum=10) == value
