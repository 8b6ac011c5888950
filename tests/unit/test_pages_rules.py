"""The pure rules behind the pages: what the consent page lists, the console's Chinese errors, the
branding settings, the app a login is for, the <time> tag, the apps' https URLs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from libs.oauth.pages import host_of, time_tag
from libs.platform.config import Settings
from libs.platform.errors import ApiError
from services.account.app_rules import validate_https_url
from services.account.console_errors import console_error
from services.authz.consent import shared_items
from services.authz.login import flow_client_id

BASE = {"token_pepper": "x" * 40}


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        (["profile", "email"], ["username", "email"]),  # the email once
        (["email", "profile"], ["email", "username"]),
        (["openid", "profile", "email", "balance"], ["identity", "username", "email", "balance"]),
        (["balance"], ["balance"]),
        (["profile", "profile"], ["username", "email"]),
        ([], []),
        (["custom"], ["custom"]),
    ],
)
def test_shared_items(scopes: list[str], expected: list[str]) -> None:
    assert shared_items(scopes) == expected


@pytest.mark.parametrize(
    ("message", "lang", "expected"),
    [
        ("name is required", "zh", "请填写名称"),
        ("name must not be empty", "zh", "名称不能为空"),
        ("description must be at most 1000 characters", "zh", "描述最多 1000 个字符"),
        (
            "redirect_uri is required, e.g. https://yourapp.com/oauth/callback",
            "zh",
            "请填写回调地址,例如 https://yourapp.com/oauth/callback",
        ),
        (
            "redirect_uri must use https; http is allowed only for localhost and 127.0.0.1",
            "zh",
            "回调地址必须使用 https;只有 localhost 和 127.0.0.1 可以使用 http",
        ),
        ("redirect_uri must not contain a fragment (#...)", "zh", "回调地址不能包含片段(#...)"),
        ("at most 10 redirect URIs per app", "zh", "每个应用最多登记 10 个回调地址"),
        (
            "terms_url must be an https:// URL, e.g. https://yourapp.com/privacy",
            "zh",
            "服务条款地址必须是以 https:// 开头的地址,例如 https://yourapp.com/privacy",
        ),
        ("logo_url must not contain user information (user@host)", "zh", "Logo 地址不能包含用户信息(user@host)"),
        (
            "you already have 100 apps, the limit; delete one you no longer use",
            "zh",
            "你已有 100 个应用,达到上限;请先删除不再使用的应用",
        ),
        ("app not found", "zh", "未找到该应用"),
        ("something new", "zh", "提交的内容无效:something new"),
        ("name is required", "en", "name is required"),
    ],
)
def test_console_error(message: str, lang: str, expected: str) -> None:
    assert console_error(message, lang) == expected


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("https://yourapp.com/privacy", True),
        ("https://yourapp.com:8443/a?b=c", True),
        ("", True),
        (None, True),
        ("http://yourapp.com/", False),
        ("javascript:alert(1)", False),
        ("//yourapp.com/", False),
        ("https://u@yourapp.com/", False),
        ("https://yourapp.com:99999/", False),
        ("https://yourapp.com/<x>", False),
        (["https://yourapp.com/"], False),
    ],
)
def test_validate_https_url(value: object, ok: bool) -> None:
    if ok:
        assert validate_https_url("logo_url", value) == (value or "")
    else:
        with pytest.raises(ApiError) as caught:
            validate_https_url("logo_url", value)
        assert "logo_url" in caught.value.message


@pytest.mark.parametrize(
    ("overrides", "ok"),
    [
        ({}, True),
        ({"brand_primary_color": "#AbCdEf"}, True),
        ({"brand_primary_color": "red"}, False),
        ({"brand_primary_color": "#12345"}, False),
        ({"brand_primary_color": "#123456;}body{display:none"}, False),
        ({"brand_logo_url": "https://cdn.example/logo.png"}, True),
        ({"brand_logo_url": "/assets/logo.svg"}, True),
        ({"brand_logo_url": "http://cdn.example/logo.png"}, False),
        ({"brand_logo_url": "//cdn.example/logo.png"}, False),
        ({"brand_logo_url": 'https://cdn.example/"><script>'}, False),
        ({"brand_support_url": ""}, True),
        ({"brand_support_url": "javascript:alert(1)"}, False),
        ({"currency_decimals": 7}, False),
        ({"currency_decimals": -1}, False),
    ],
)
def test_branding_settings(overrides: dict[str, object], ok: bool) -> None:
    if ok:
        Settings(**(BASE | overrides))  # type: ignore[arg-type]
    else:
        with pytest.raises(ValidationError):
            Settings(**(BASE | overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("next_url", "client_id"),
    [
        ("/api/oauth2/authorize?client_id=client_abc&response_type=code", "client_abc"),
        ("/api/oauth2/authorize?response_type=code", None),
        ("/api/oauth2/authorize?client_id=a&client_id=b", None),
        ("/user", None),
        ("/user?client_id=client_abc", None),
    ],
)
def test_flow_client_id(next_url: str, client_id: str | None) -> None:
    assert flow_client_id(next_url) == client_id


def test_time_tag() -> None:
    when = datetime(2026, 12, 1, 4, 5, 6, tzinfo=UTC)
    assert str(time_tag(when)) == '<time datetime="2026-12-01T04:05:06Z">2026-12-01 04:05 UTC</time>'
    assert (
        str(time_tag(when, date_only=True))
        == '<time datetime="2026-12-01T04:05:06Z" data-format="date">2026-12-01</time>'
    )
    assert (
        str(time_tag(when, time_only=True))
        == '<time datetime="2026-12-01T04:05:06Z" data-format="time">04:05:06 UTC</time>'
    )
    assert str(time_tag(int(when.timestamp()))) == str(time_tag(when))
    assert str(time_tag(None)) == ""


@pytest.mark.parametrize(
    ("url", "host"),
    [("https://a.example/x", "a.example"), ("https://a.example:8443/", "a.example:8443"), ("odd", "odd")],
)
def test_host_of(url: str, host: str) -> None:
    assert host_of(url) == host
