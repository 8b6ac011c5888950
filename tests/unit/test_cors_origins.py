"""libs/oauth/cors.py: origins of redirect URIs and of Origin headers (RFC 6454 serialization)."""

from __future__ import annotations

import pytest

from libs.oauth.cors import origin_of, request_origin


@pytest.mark.parametrize(
    "uri, origin",
    [
        ("https://app.example/oauth/callback", "https://app.example"),
        ("https://App.EXAMPLE:443/cb?x=1", "https://app.example"),
        ("https://app.example:8443/cb", "https://app.example:8443"),
        ("http://localhost:3000/oauth/callback.html", "http://localhost:3000"),
        ("http://localhost:80/cb", "http://localhost"),
        ("http://127.0.0.1:5173/", "http://127.0.0.1:5173"),
        ("http://[::1]:8000/cb", "http://[::1]:8000"),
        ("HTTPS://app.example", "https://app.example"),
    ],
)
def test_origin_of_redirect_uris(uri: str, origin: str) -> None:
    assert origin_of(uri) == origin


@pytest.mark.parametrize(
    "uri", ["", "app.example/cb", "/cb", "ftp://app.example/", "com.example.app:/cb", "https://", "https://a:99999/"]
)
def test_no_origin(uri: str) -> None:
    assert origin_of(uri) is None


@pytest.mark.parametrize(
    "header, expected",
    [
        ("https://app.example", "https://app.example"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("https://app.example:8443", "https://app.example:8443"),
        (None, None),
        ("", None),
        ("null", None),
        ("https://app.example/", None),
        ("https://app.example:443", None),  # browsers never send the default port
        ("https://user@app.example", None),
        ("https://app.example?x", None),
        (" https://app.example", None),
        ("chrome-extension://abc", None),
        ("https://" + "a" * 400 + ".example", None),
    ],
)
def test_request_origin(header: str | None, expected: str | None) -> None:
    assert request_origin(header) == expected
