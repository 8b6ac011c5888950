"""The developer API's app rules (services/account/apps.py): redirect URIs (RFC 8252 7.3,
RFC 9700 2.1) and new-app parsing, with the messages the API answers. No I/O."""

from __future__ import annotations

from typing import Any

import pytest

from libs.platform.errors import ApiError
from services.account.app_rules import (
    MAX_REDIRECT_URIS,
    MAX_URI_LEN,
    grant_types_from,
    parse_new_app,
    redirect_uris_from,
    validate_redirect_uri,
)

OK = "https://app.example.com/cb"
BROWSER = ["authorization_code", "refresh_token"]


@pytest.mark.parametrize(
    "uri",
    [
        OK,
        "https://app.example.com:8443/oauth/callback?x=1",
        "http://localhost:3000/cb",
        "http://127.0.0.1/cb",
        "http://[::1]:8080/cb",
        "http://127.0.0.2/cb",  # all of 127/8 is loopback
        "HTTPS://APP.EXAMPLE.COM/cb",
        "https://x.io/" + "a" * (MAX_URI_LEN - 13),
    ],
)
def test_accepted_redirect_uris(uri: str) -> None:
    assert validate_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        (None, "must be a string"),
        (42, "must be a string"),
        ("", "1-2000 characters"),
        ("https://x.io/" + "a" * (MAX_URI_LEN - 12), "1-2000 characters"),
        ("https://x.io/a b", "spaces or control"),
        ("https://x.io/\x00", "spaces or control"),
        ("https://x.io/cb#frag", "fragment"),
        ("https://x.io:99999/cb", "not a valid URI"),
        ("/relative/cb", "absolute URI"),
        ("https:///cb", "absolute URI"),
        ("https://user:pw@x.io/cb", "user information"),
        ("https://*.example.com/cb", "wildcards"),
        ("http://app.example.com/cb", "http is allowed only for localhost"),
        ("http://10.0.0.1/cb", "http is allowed only for localhost"),
        ("ftp://x.io/cb", "must use https"),
        ("com.example.app:/cb", "absolute URI"),
    ],
)
def test_refused_redirect_uris(uri: Any, fragment: str) -> None:
    with pytest.raises(ApiError) as info:
        validate_redirect_uri(uri)
    assert info.value.status == 400
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("body", "required", "expected"),
    [
        ({"redirect_uri": OK}, True, [OK]),
        ({"redirect_uri": OK, "redirect_uris": [OK, "http://localhost/cb"]}, True, [OK, "http://localhost/cb"]),
        ({"redirect_uris": [f"https://a{i}.io/cb" for i in range(MAX_REDIRECT_URIS)]}, True, MAX_REDIRECT_URIS),
        ({}, False, None),
        ({"redirect_uri": None}, False, None),
        ({}, True, "redirect_uri is required"),
        ({"redirect_uris": OK}, True, "must be a list"),
        ({"redirect_uris": [OK] * (MAX_REDIRECT_URIS + 1)}, True, "at most 10"),
        (
            {"redirect_uri": "https://z.io/cb", "redirect_uris": [f"https://a{i}.io/cb" for i in range(10)]},
            True,
            "at most 10",
        ),
    ],
)
def test_redirect_uri_lists(body: dict[str, Any], required: bool, expected: Any) -> None:
    if isinstance(expected, str):
        with pytest.raises(ApiError, match=expected):
            redirect_uris_from(body, required=required)
        return
    got = redirect_uris_from(body, required=required)
    assert (len(got or []) if isinstance(expected, int) else got) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "A", "redirect_uri": OK}, ("A", "", [OK], "client_secret_post")),
        (
            {"name": "A", "description": "d", "redirect_uri": OK, "token_endpoint_auth_method": "none"},
            ("A", "d", [OK], "none"),
        ),
        ({"name": "A", "redirect_uri": OK, "token_endpoint_auth_method": "private_key_jwt"}, "must be one of"),
        ({"name": "", "redirect_uri": OK}, "name"),
        ({"name": "A"}, "redirect_uri is required"),
    ],
)
def test_parse_new_app(body: dict[str, Any], expected: Any) -> None:
    if isinstance(expected, str):
        with pytest.raises(ApiError, match=expected) as info:
            parse_new_app(body)
        assert info.value.status == 400
        return
    new = parse_new_app(body)
    assert (new.name, new.description, new.redirect_uris, new.token_endpoint_auth_method) == expected


DEVICE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_TYPES = [
    ("absent, on create: the browser flow", {}, True, ["authorization_code", "refresh_token"]),
    ("absent, on update: unchanged", {}, False, None),
    ("the device grant alone: browser grants kept", {"grant_types": [DEVICE]}, True, [*BROWSER, DEVICE]),
    ("all, any order", {"grant_types": [DEVICE, "refresh_token", "authorization_code"]}, False, [*BROWSER, DEVICE]),
    ("empty list: the browser flow only", {"grant_types": []}, False, BROWSER),
]


@pytest.mark.parametrize(
    ("body", "required", "expected"), [g[1:] for g in GRANT_TYPES], ids=[g[0] for g in GRANT_TYPES]
)
def test_grant_types(body: dict[str, object], required: bool, expected: list[str] | None) -> None:
    assert grant_types_from(body, required=required) == expected


@pytest.mark.parametrize("value", ["authorization_code", [1], ["client_credentials"], ["implicit"], {"a": 1}])
def test_bad_grant_types(value: object) -> None:
    with pytest.raises(ApiError) as caught:
        grant_types_from({"grant_types": value}, required=True)
    assert caught.value.status == 400
