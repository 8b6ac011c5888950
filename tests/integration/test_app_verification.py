"""App verification (issue 10, finding 1; docs/operations.md "App verification"): auto_authorize=true
skips the consent page only for an operator-verified app or when the user already granted the
scopes. Through the gateway, against real Postgres/Redis/RabbitMQ."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from oauthctl.__main__ import main as oauthctl_main
from tests.support.factories import make_developer, make_user
from tests.support.oauth import REQUEST_RE, authorize, form_value, login, make_app, query_of
from tests.support.stack import Stack, extra_instance

PASSWORD = "correct horse battery"
CB = "https://fresh.example/oauth/callback"


def one_click(client_id: str, **extra: str) -> dict[str, str]:
    return {
        "client_id": client_id,
        "redirect_uri": CB,
        "response_type": "code",
        "scope": "profile balance",
        "state": "st-9",
        "auto_authorize": "true",
        **extra,
    }


@pytest.fixture
async def owner(db, settings):
    user, _ = await make_developer(db, settings)
    return user


@pytest.fixture
async def browser(http: aiohttp.ClientSession, stack: Stack, db) -> aiohttp.ClientSession:
    user = await make_user(db)
    await login(http, stack.base, user.username, PASSWORD)
    return http


async def get(http: aiohttp.ClientSession, base: str, query: dict[str, str], **kw) -> tuple[int, str, str]:
    async with http.get(f"{base}/api/oauth2/authorize", params=query, allow_redirects=False, **kw) as r:
        return r.status, r.headers.get("Location", ""), await r.text()


async def test_a_self_registered_app_cannot_skip_consent(stack, http, browser, settings, db) -> None:
    """Regression: an app created a minute ago through the developer API got a code at once."""
    _, token = await make_developer(db, settings)
    body = {"name": "Brand new", "redirect_uri": CB}
    async with http.post(f"{stack.base}/api/oauth_apps", json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        client_id = (await r.json())["data"]["client_id"]
    status, location, page = await get(browser, stack.base, one_click(client_id))
    assert status == 200 and location == "", location
    assert 'action="/consent"' in page and "Brand new" in page
    assert "平台尚未核实该应用的开发者" in page and 'data-verified="false"' in page
    status, _, page = await get(browser, stack.base, one_click(client_id), headers={"Accept-Language": "en"})
    assert status == 200 and "The platform has not verified this app" in page


async def test_unverified_app_asks_once_then_one_click_skips(stack, browser, settings, db, owner) -> None:
    client_id, _ = await make_app(db, settings, owner.id, [CB], verified=False, name="Unverified")
    status, _, page = await get(browser, stack.base, one_click(client_id))
    assert status == 200
    form = {"csrf_token": form_value(page), "request": form_value(page, REQUEST_RE), "decision": "allow"}
    async with browser.post(f"{stack.base}/consent", data=form, allow_redirects=False) as r:
        assert r.status == 302 and "code" in query_of(r.headers["Location"])
    # the grant covers the scopes now: one click, no page (the guide's promise)
    for _ in range(2):
        assert (await authorize(browser, stack.base, client_id, CB, state="st-9"))["code"]
    # a scope not granted yet asks again
    status, _, page = await get(browser, stack.base, one_click(client_id, scope="profile email"))
    assert status == 200 and 'action="/consent"' in page


async def test_prompt_none_for_an_unverified_app_without_grant_is_consent_required(
    stack, browser, settings, db, owner
) -> None:
    client_id, _ = await make_app(db, settings, owner.id, [CB], verified=False)
    status, location, _ = await get(browser, stack.base, one_click(client_id, prompt="none"))
    assert status == 302 and location.startswith(CB + "?")
    q = query_of(location)
    assert q["error"] == "consent_required" and q["state"] == "st-9" and q["iss"] == settings.issuer
    assert "code" not in q


async def test_verified_app_skips_consent_and_shows_the_badge(stack, browser, settings, db, owner) -> None:
    client_id, _ = await make_app(db, settings, owner.id, [CB], name="Trusted")
    assert (await authorize(browser, stack.base, client_id, CB))["code"]
    assert (await authorize(browser, stack.base, client_id, CB, prompt="none", scope="email"))["code"]
    status, _, page = await get(browser, stack.base, one_click(client_id, prompt="consent"))
    assert status == 200 and "已认证的应用" in page and 'data-verified="true"' in page


async def test_operator_setting_keeps_the_permissive_behaviour(stack, browser, settings, db, owner) -> None:
    client_id, _ = await make_app(db, settings, owner.id, [CB], verified=False)
    status, _, _ = await get(browser, stack.base, one_click(client_id))  # the default instance: consent
    assert status == 200
    async with extra_instance(stack, "authz", settings, auto_authorize_unverified_apps=True) as (url, _):
        status, location, _ = await get(browser, url, one_click(client_id))
    assert status == 302 and "code" in query_of(location)


async def test_oauthctl_verify_and_unverify_take_effect_everywhere(
    stack, browser, settings, db, owner, monkeypatch, capsys
) -> None:
    client_id, _ = await make_app(db, settings, owner.id, [CB], verified=False)
    assert (await get(browser, stack.base, one_click(client_id)))[0] == 200  # cached as unverified now
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TOKEN_PEPPER", settings.token_pepper)
    monkeypatch.setenv("AMQP_URL", settings.amqp_url)
    monkeypatch.setenv("EVENTS_EXCHANGE", settings.events_exchange)

    assert await asyncio.to_thread(oauthctl_main, ["app", "verify", "--client-id", client_id]) == 0
    assert "is now verified" in capsys.readouterr().out
    await until_redirect_has(browser, stack.base, one_click(client_id, prompt="none"), "code=")
    assert await asyncio.to_thread(oauthctl_main, ["app", "unverify", "--client-id", client_id]) == 0
    # (a scope the code above did not grant)
    await until_redirect_has(
        browser, stack.base, one_click(client_id, prompt="none", scope="email"), "error=consent_required"
    )
    assert await asyncio.to_thread(oauthctl_main, ["app", "verify", "--client-id", "client_nope"]) == 1
    assert "no app with client_id" in capsys.readouterr().err


async def until_redirect_has(http: aiohttp.ClientSession, base: str, query: dict[str, str], part: str) -> None:
    """The services drop their cached client on the client.updated event (docs/events.md)."""
    location = ""
    for _ in range(100):
        _, location, _ = await get(http, base, query)
        if part in location:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {part!r} in {location!r}")


async def test_developer_console_shows_the_verification(stack, http, settings, db) -> None:
    dev, _ = await make_developer(db, settings)
    verified, _ = await make_app(db, settings, dev.id, [CB], name="Shown verified")
    await make_app(db, settings, dev.id, [CB], name="Shown unverified", verified=False)
    await login(http, stack.base, dev.username, PASSWORD)
    async with http.get(f"{stack.base}/developer") as r:
        page = await r.text()
    assert page.count('data-verified="true"') == 1 and page.count('data-verified="false"') == 1
    assert "✓ 已认证" in page and verified in page
