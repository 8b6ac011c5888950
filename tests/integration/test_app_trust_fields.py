"""The apps' optional trust fields (docs/api.md "OAuth apps: what users see") through the gateway:
the developer API stores and returns them, refuses anything but https URLs naming the field, and
the console says so in the page's language; the consent page shows them."""

from __future__ import annotations

import re
from html import unescape

import aiohttp
import asyncpg
import pytest

from libs.platform.config import Settings
from tests.support.e2e import new_browser
from tests.support.factories import make_developer, make_user
from tests.support.oauth import csrf_from, login
from tests.support.stack import Stack

TRUST = {
    "developer_name": "Example Ltd.",
    "logo_url": "https://yourapp.example/logo.png",
    "homepage_url": "https://yourapp.example/",
    "privacy_url": "https://yourapp.example/privacy",
    "terms_url": "https://yourapp.example/terms?v=2",
}
BODY = {"name": "Trusted app", "redirect_uri": "https://yourapp.example/oauth/callback"}
PASSWORD = "correct horse battery"


@pytest.fixture
async def dev(db: asyncpg.Pool, settings: Settings) -> dict[str, str]:
    _, token = await make_developer(db, settings)
    return {"Authorization": f"Bearer {token}"}


async def call(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], body: object):
    async with http.request(method, url, json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_create_get_update_and_clear(stack: Stack, http, dev, db) -> None:
    status, body = await call(http, "POST", f"{stack.base}/api/oauth_apps", dev, BODY | TRUST)
    assert status == 200, body
    data = body["data"]
    assert {k: data[k] for k in TRUST} == TRUST
    row = await db.fetchrow("SELECT * FROM oauth_apps WHERE id = $1", data["id"])
    assert {k: row[k] for k in TRUST} == TRUST

    url = f"{stack.base}/api/oauth_apps/{data['id']}"
    status, body = await call(http, "PUT", url, dev, {"developer_name": "Renamed Ltd.", "terms_url": None})
    assert status == 200, body
    assert body["data"]["developer_name"] == "Renamed Ltd."
    assert body["data"]["terms_url"] == ""  # null clears
    assert body["data"]["privacy_url"] == TRUST["privacy_url"]  # left out: kept
    status, body = await call(http, "PUT", url, dev, {"homepage_url": ""})
    assert status == 200 and body["data"]["homepage_url"] == ""

    async with http.get(url, headers=dev) as r:
        got = (await r.json())["data"]
    assert got["logo_url"] == TRUST["logo_url"] and got["homepage_url"] == "" and got["terms_url"] == ""


async def test_an_app_without_them_shows_empty_strings(stack: Stack, http, dev) -> None:
    status, body = await call(http, "POST", f"{stack.base}/api/oauth_apps", dev, BODY)
    assert status == 200
    assert all(body["data"][k] == "" for k in TRUST)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("privacy_url", "http://yourapp.example/privacy"),  # https only, even for a link
        ("logo_url", "javascript:alert(1)"),
        ("logo_url", "data:image/svg+xml;base64,PHN2Zz4="),
        ("homepage_url", "/relative/path"),
        ("homepage_url", "https://"),
        ("terms_url", "https://user:pw@yourapp.example/terms"),
        ("terms_url", "https://yourapp.example/a b"),
        ("terms_url", 'https://yourapp.example/"onmouseover'),
        ("privacy_url", "https://yourapp.example/" + "a" * 2000),
        ("privacy_url", 42),
        ("developer_name", "x" * 101),
        ("developer_name", "bad\x00name"),
    ],
)
async def test_refused_values_name_the_field(stack: Stack, http, dev, field: str, value: object) -> None:
    status, body = await call(http, "POST", f"{stack.base}/api/oauth_apps", dev, BODY | {field: value})
    assert status == 400, body
    assert body["success"] is False and field in body["message"]
    # and an update refuses them the same way
    _, made = await call(http, "POST", f"{stack.base}/api/oauth_apps", dev, BODY)
    status, body = await call(http, "PUT", f"{stack.base}/api/oauth_apps/{made['data']['id']}", dev, {field: value})
    assert status == 400 and field in body["message"]


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("zh", "隐私政策地址必须是以 https:// 开头的地址"),
        ("en", "privacy_url must be an https:// URL"),
    ],
)
async def test_the_console_says_it_in_the_pages_language(stack: Stack, db, lang: str, expected: str) -> None:
    user = await make_user(db, PASSWORD)
    async with new_browser() as browser:
        await login(browser, stack.base, user.username, PASSWORD)
        token = await csrf_from(browser, f"{stack.base}/developer?lang={lang}")
        form = {
            "csrf_token": token,
            "name": "Console app",
            "redirect_uris": "https://yourapp.example/cb",
            "privacy_url": "http://yourapp.example/privacy",
        }
        async with browser.post(f"{stack.base}/developer/apps", data=form) as r:
            assert r.status == 400
            page = unescape(await r.text())
    assert expected in page
    assert 'value="http://yourapp.example/privacy"' in page  # the form keeps what was typed


async def test_the_consent_page_shows_them(stack: Stack, http, dev, db) -> None:
    _, made = await call(http, "POST", f"{stack.base}/api/oauth_apps", dev, BODY | TRUST)
    user = await make_user(db, PASSWORD)
    query = {
        "response_type": "code",
        "client_id": made["data"]["client_id"],
        "redirect_uri": BODY["redirect_uri"],
        "scope": "openid profile email balance",
        "state": "s" * 16,
    }
    async with new_browser() as browser:
        await login(browser, stack.base, user.username, PASSWORD)
        async with browser.get(
            f"{stack.base}/api/oauth2/authorize", params=query, headers={"Accept-Language": "en"}
        ) as r:
            assert r.status == 200
            page = unescape(await r.text())
    assert "Example Ltd." in page
    for field in ("logo_url", "homepage_url", "privacy_url", "terms_url"):
        assert f'"{TRUST[field]}"' in page, field
    assert "yourapp.example" in page  # the redirect host
    assert page.count("your email address") == 1  # profile and email share it: listed once
    assert 'href="/developer"' not in page  # a minimal header, not the site navigation
    assert re.search(r'data-verified="false"', page)
