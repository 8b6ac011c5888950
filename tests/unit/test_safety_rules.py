"""Pure rules of issue 13 part B, table-driven, no I/O: the developer API's grace_seconds, the
token service's "tool exchange" test, the snippets and the reset email."""

from __future__ import annotations

import pytest

from libs.platform.config import Settings
from libs.platform.errors import ApiError
from services.account.apps import parse_grace_seconds
from services.account.password_reset import reset_email
from services.account.snippets import LANGUAGES, snippets
from services.token.client_auth import ClientCredentials, is_tool_exchange

BASE = "https://auth.example"
TOOL = BASE + "/developer/tool/callback"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, 0),
        (0, 0),
        (3600, 3600),
        (86400, 86400),
        (1, None),
        (-1, None),
        ("3600", None),
        (True, None),
        (3600.0, None),
    ],
)
def test_parse_grace_seconds(value: object, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(ApiError):
            parse_grace_seconds(value)
    else:
        assert parse_grace_seconds(value) == expected


NO_SECRET = ClientCredentials("client_x", None, via_basic=False)


@pytest.mark.parametrize(
    ("form", "creds", "expected"),
    [
        ({"grant_type": "authorization_code", "redirect_uri": TOOL}, NO_SECRET, True),
        ({"grant_type": "authorization_code", "redirect_uri": TOOL + "/"}, NO_SECRET, False),
        ({"grant_type": "authorization_code", "redirect_uri": "https://app.example/cb"}, NO_SECRET, False),
        ({"grant_type": "refresh_token", "redirect_uri": TOOL}, NO_SECRET, False),
        ({"grant_type": "authorization_code", "redirect_uri": TOOL}, ClientCredentials("c", "s", False), False),
        ({"grant_type": "authorization_code", "redirect_uri": TOOL}, ClientCredentials("c", None, True), False),
        ({"grant_type": "authorization_code"}, NO_SECRET, False),
    ],
)
def test_tool_exchange(form: dict[str, str], creds: ClientCredentials, expected: bool) -> None:
    assert is_tool_exchange(form, creds, BASE) is expected


def test_snippets_fill_every_language() -> None:
    out = snippets(BASE, "client_abc", "https://app.example/cb")
    assert [key for key, _, _ in out] == [key for key, _ in LANGUAGES]
    assert len(out) == 8
    for key, _, code in out:
        assert "__" not in code.replace("__name__", ""), key
        assert "client_abc" in code and BASE in code and "https://app.example/cb" in code, key
        assert "/api/oauth2/token" in code and "/api/oauth2/userinfo" in code, key
        assert "CLIENT_SECRET" in code and "secret_" not in code, key


@pytest.mark.parametrize(
    ("lang", "subject"), [("zh", "重置你的开放平台密码"), ("en", "Reset your Open Platform password")]
)
def test_reset_email(lang: str, subject: str) -> None:
    settings = Settings(token_pepper="x" * 40, password_reset_ttl_seconds=1800)
    got_subject, text = reset_email(settings, lang, "alice", "https://auth.example/password/reset?token=t")
    assert got_subject == subject
    assert "alice" in text and "https://auth.example/password/reset?token=t" in text and "30" in text
