"""Spending through the example app and the example resource server in a real browser (headless
Debian Chromium, Playwright; docs/spending.md): one-click login, the spend button asks for the
spend scope, the consent page's limit chooser (pre-filled with the app's suggestion), charges up to
the chosen limit, then the resource server's 402 shown by the app."""

from __future__ import annotations

import re
from pathlib import Path

import asyncpg

from libs.platform.config import Settings
from services.account import store as account_store
from tests.browser.test_one_click_browser import PASSWORD, TIMEOUT_MS, Chromium, Steps, chromium  # noqa: F401
from tests.support.e2e import developer_token_over_http, example_app
from tests.support.factories import make_user
from tests.support.spending import resource_server
from tests.support.stack import Stack


async def test_spend_through_the_example_app_and_resource_server(
    chromium: Chromium,  # noqa: F811
    stack: Stack,
    db: asyncpg.Pool,
    settings: Settings,
    tmp_path: Path,
) -> None:
    browser = chromium.get()
    from playwright.async_api import expect

    developer = await make_user(db, PASSWORD)
    token = await developer_token_over_http(stack.base, developer.username, PASSWORD)
    user = await make_user(db, PASSWORD)
    async with db.acquire() as conn:
        await account_store.set_balance(conn, user.id, 1000000, 0)  # 1000.00

    async with (
        resource_server(stack, settings, price=100) as rs,
        example_app(stack.base, token, verify_with=db, resource_server_url=rs) as example,
    ):
        context = await browser.new_context(locale="zh-CN")
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        page = await context.new_page()
        step = Steps(page, tmp_path)
        platform = re.escape(stack.base)
        notice = page.locator(".notice")
        try:
            await step("open the example app", lambda: page.goto(f"{example.base}/"))
            await step("click 一键登录", lambda: page.get_by_role("link", name=re.compile("一键登录")).click())
            await step("type the username", lambda: page.fill("#username", user.username))
            await step("type the password", lambda: page.fill("#password", PASSWORD))
            await step("submit the login form", lambda: page.click('form[action="/login"] button[type="submit"]'))
            await step(
                "come back logged in (one-click, no spend yet)",
                lambda: expect(page).to_have_url(f"{example.base}/?login=success", timeout=TIMEOUT_MS),
            )
            await step("click the spend button", lambda: page.click("#spend"))
            await step(
                "land on the consent page asking for spend",
                lambda: expect(page).to_have_url(
                    re.compile(f"^{platform}/api/oauth2/authorize\\?"), timeout=TIMEOUT_MS
                ),
            )
            await step(
                "see the app's suggested limit pre-filled",
                lambda: expect(page.locator("#spend_amount")).to_have_value("1.00"),
            )
            await step("see the suggested period", lambda: expect(page.locator("#spend_period")).to_have_value("daily"))
            await step("choose a limit of 0.20", lambda: page.fill("#spend_amount", "0.20"))
            await step("allow", lambda: page.click('button[value="allow"]'))
            await step(
                "come back to the example app",
                lambda: expect(page).to_have_url(f"{example.base}/?login=success", timeout=TIMEOUT_MS),
            )
            await step("spend once", lambda: page.click("#spend"))
            await step(
                "see the first charge", lambda: expect(notice).to_contain_text("已扣费 0.10,本周期剩余额度 0.10")
            )
            await step("spend again", lambda: page.click("#spend"))
            await step("see the second charge", lambda: expect(notice).to_contain_text("本周期剩余额度 0.00"))
            await step("spend past the limit", lambda: page.click("#spend"))
            await step(
                "see the resource server's 402 explained",
                lambda: expect(page.locator(".error")).to_contain_text("消费额度已用完"),
            )
            await step("see the balance", lambda: expect(page.locator("#balance")).to_have_text("999.80"))
            shot = tmp_path / "spend-final.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 1000
        finally:
            await context.close()
    rows = await db.fetch("SELECT amount, description FROM spend_charges WHERE user_id = $1", user.id)
    assert [r["amount"] for r in rows] == [100, 100]
    assert rows[0]["description"] == "example resource server: one answer"
