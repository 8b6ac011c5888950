"""services/token/form.parse_pairs reads a form body exactly as urllib's parse_qsl (with the
token service's arguments) would, including its errors; parse_form's RFC 6749 rules on top."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from libs.oauth.errors import OAuthError
from services.token.form import MAX_FIELDS, parse_form, parse_pairs


def reference(text: str) -> list[tuple[str, str]] | type[Exception]:
    try:
        return parse_qsl(
            text, keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS, separator="&"
        )
    except UnicodeDecodeError:
        return UnicodeDecodeError
    except ValueError:
        return ValueError


def ours(text: str) -> list[tuple[str, str]] | type[Exception]:
    try:
        return parse_pairs(text)
    except UnicodeDecodeError:
        return UnicodeDecodeError
    except ValueError:
        return ValueError


PIECES = st.sampled_from(
    ["&", "=", "+", "%", "%2", "%20", "%3D", "%26", "%C3%A9", "%C3", "%FF", "a", "client_id", "é", " "]
)


@given(st.lists(PIECES, max_size=40).map("".join))
def test_parse_pairs_agrees_with_parse_qsl(text: str) -> None:
    assert ours(text) == reference(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "&&",
        "a",
        "a=",
        "=b",
        "a=b=c",
        "a+b=c+d",
        "a%3Db=%26",
        "%FF=1",
        "a=%C3%A9",
        "&".join(["x=1"] * MAX_FIELDS),
        "&".join(["x=1"] * (MAX_FIELDS + 1)),
        "&" * MAX_FIELDS,
    ],
)
def test_parse_pairs_edge_cases(text: str) -> None:
    assert ours(text) == reference(text)


def test_parse_form_rules() -> None:
    known = {"grant_type", "scope", "client_id"}
    assert parse_form(b"grant_type=client_credentials&scope=&other=1&client%5Fid=a+b", known) == {
        "grant_type": "client_credentials",
        "client_id": "a b",
    }
    for body in (b"scope=a&scope=b", b"scope=&scope=b", b"scope=%00", b"scope=%FF", b"\xff=1"):
        with pytest.raises(OAuthError) as caught:
            parse_form(body, known)
        assert caught.value.error == "invalid_request"
