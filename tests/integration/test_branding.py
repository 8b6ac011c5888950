"""Branding settings (docs/operations.md "Branding") on a stack of their own: the name, logo,
colour and support link on every kind of page (a service's page, the consent flow's error page,
the gateway's 404), money in the configured currency, and the assets the pages link served."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import unescape

import asyncpg
import pytest

from libs.platform.config import Settings
from tests.support.e2e import new_browser
from tests.support.factories import make_user
from tests.support.oauth import login
from tests.support.stack import Stack, free_port

PASSWORD = "correct horse battery"
BRAND = {
    "brand_name": "Acme ID",
    "brand_logo_url": "https://cdn.acme.example/logo.svg",
    "brand_primary_color": "#AA3300",
    "brand_support_url": "https://help.acme.example/",
    "currency_symbol": "¥",
    "currency_decimals": 0,
}


@pytest.fixture(scope="module")
async def branded(settings: Settings) -> AsyncIterator[Stack]:
    gateway_port = free_port()
    ports = {
        "gateway_port": gateway_port,
        "public_base_url": f"http://127.0.0.1:{gateway_port}",
        "authz_port": free_port(),
        "token_port": free_port(),
        "account_port": free_port(),
        "gateway_admin_port": free_port(),
    }
    stack = Stack(Settings(**(settings.model_dump() | ports | BRAND)))
    await stack.start_all()
    yield stack
    await stack.stop_all()


def assert_branded(page: str) -> None:
    assert "Acme ID" in page
    assert 'src="https://cdn.acme.example/logo.svg"' in page
    assert "--brand: #aa3300" in page.replace("--brand:#aa3300", "--brand: #aa3300")
    assert 'href="https://help.acme.example/"' in page
    assert "开放平台" not in page and "Open Platform" not in page


async def test_pages_carry_the_brand_and_the_currency(branded: Stack, db: asyncpg.Pool) -> None:
    user = await make_user(db, PASSWORD)
    await db.execute("UPDATE users SET quota = 1234567890, used_quota = 250000 WHERE id = $1", user.id)
    async with new_browser() as browser:
        await login(browser, branded.base, user.username, PASSWORD)
        async with browser.get(f"{branded.base}/user") as r:
            page = unescape(await r.text())
        assert_branded(page)
        assert '<p class="amount" id="balance">¥1,234,317</p>' in page
        assert "¥1,234,567" in page and "¥250" in page  # credited and used: money, not quota units
        assert "1234567890" not in page
        async with browser.get(f"{branded.base}/user/topup") as r:
            topup = unescape(await r.text())
        assert '<strong id="balance">¥1,234,317</strong>' in topup


@pytest.mark.parametrize(
    ("path", "status", "lang", "words"),
    [
        ("/no-such-page", 404, "zh", "找不到这个页面"),
        ("/no-such-page", 404, "en", "Page not found"),
        ("/api/oauth2/authorize?client_id=client_nope", 400, "zh", "授权请求无效"),
        ("/api/oauth2/authorize?client_id=client_nope", 400, "en", "Invalid authorization request"),
    ],
)
async def test_error_pages_are_branded_with_a_way_back_and_the_request_id(
    branded: Stack, path: str, status: int, lang: str, words: str
) -> None:
    async with new_browser() as browser:
        headers = {"Accept-Language": lang, "X-Request-Id": "req-12345"}
        async with browser.get(f"{branded.base}{path}", headers=headers) as r:
            assert r.status == status
            assert r.content_type == "text/html"
            page = unescape(await r.text())
    assert_branded(page)
    assert words in page
    assert '<code id="request-id">req-12345</code>' in page
    assert 'id="back" href="/"' in page
    assert "Traceback" not in page


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/favicon.ico", "image/x-icon"),
        ("/assets/favicon.svg", "image/svg+xml"),
        ("/assets/logo.svg", "image/svg+xml"),
        ("/assets/site.css", "text/css"),
        ("/assets/site.js", "text/javascript"),
    ],
)
async def test_the_assets_are_served(branded: Stack, http, path: str, content_type: str) -> None:
    async with http.get(f"{branded.base}{path}") as r:
        assert r.status == 200
        assert r.content_type == content_type
        assert "max-age" in r.headers["Cache-Control"]
        assert len(await r.read()) > 100


async def test_an_unknown_asset_is_a_404_page(branded: Stack, http) -> None:
    async with http.get(f"{branded.base}/assets/../../config.py") as r:
        assert r.status in (400, 404)
    async with http.get(f"{branded.base}/assets/nope.css") as r:
        assert r.status == 404
